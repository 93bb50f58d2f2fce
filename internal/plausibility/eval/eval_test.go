package eval

import (
	"encoding/json"
	"flag"
	"testing"
)

var full = flag.Bool("full", false, "run the default-size eval and print it")

func TestEvalTargets(t *testing.T) {
	cfg := Config{Households: 16, Days: 42, WarmupDays: 28}
	if *full {
		cfg = Config{}
	}
	res := Run(cfg)
	b, _ := json.MarshalIndent(res, "", "  ")
	t.Logf("%s", b)
	if res.FalsePositiveRate > 0.01 {
		t.Errorf("false-positive rate %.4f > 1%%", res.FalsePositiveRate)
	}
	for name, a := range res.Attacks {
		if a.Injected == 0 {
			t.Errorf("%s: nothing injected", name)
		}
		if a.RuleDetectable && a.Recall < 0.99 {
			t.Errorf("%s: recall %.4f < 99%%", name, a.Recall)
		}
	}
}
