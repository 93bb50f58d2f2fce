package plausibility

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func TestPolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
		see  func(t *testing.T, p Policy, r Rules)
	}{
		{"empty is the default", ``, true, func(t *testing.T, p Policy, r Rules) {
			if r.MaxAge != DefaultMaxAge || r.MaxPowerW != 43470 || r.Power.FrozenSamples != 3 {
				t.Errorf("rules: %+v", r)
			}
		}},
		{"connection and window", `{"max_power_w": 5000, "max_age": "24h", "skew": "5m"}`, true, func(t *testing.T, p Policy, r Rules) {
			if r.MaxPowerW != 5000 || r.MaxAge != 24*time.Hour || r.Skew != 5*time.Minute {
				t.Errorf("rules: %+v", r)
			}
		}},
		{"rules off", `{"off": ["frozen", "limit", "too_old", "baseline", "duplicate"]}`, true, func(t *testing.T, p Policy, r Rules) {
			if r.Power.FrozenSamples != 0 || !math.IsInf(r.Power.Max, 1) || r.Power.Baseline.Z != 0 || r.MaxAge < 100*365*24*time.Hour {
				t.Errorf("rules: %+v", r)
			}
			vs := p.Filter([]Verdict{{Index: 0, Reasons: []Reason{{RuleDuplicate, "d"}}}, {Index: 1, Reasons: []Reason{{RuleDuplicate, "d"}, {RuleNegative, "n"}}}})
			if len(vs) != 1 || vs[0].Index != 1 || len(vs[0].Reasons) != 1 || vs[0].Reasons[0].Rule != RuleNegative {
				t.Errorf("filtered: %+v", vs)
			}
		}},
		{"negative power limit", `{"max_power_w": -1}`, false, nil},
		{"not a duration", `{"max_age": "soon"}`, false, nil},
		{"unknown rule", `{"off": ["nonsense"]}`, false, nil},
		{"latitude out of range", `{"located": true, "lat": 91}`, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("ParsePolicy(%s): %v", tc.in, err)
			}
			if !tc.ok {
				return
			}
			r, err := p.Rules()
			if err != nil {
				t.Fatal(err)
			}
			tc.see(t, p, r)
			// The stored form parses back to the same policy.
			b, _ := json.Marshal(p)
			q, err := ParsePolicy(b)
			if err != nil {
				t.Fatal(err)
			}
			if b2, _ := json.Marshal(q); string(b2) != string(b) {
				t.Errorf("round trip: %s != %s", b2, b)
			}
		})
	}
}

// FuzzParsePolicy: a policy from storage or an operator never panics, and
// every accepted policy yields usable rules.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"max_power_w": 5000, "net_metered": true, "max_age": "2160h", "skew": "2m", "located": true, "lat": 52, "lon": 4, "off": ["frozen"]}`,
		`{"off": ["limit", "rate", "gap", "replay", "level_shift", "future", "clock_jump"]}`, `{"disabled": true}`, `{"max_age": "-1h"}`, `[1]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			return
		}
		if _, err := p.Rules(); err != nil {
			t.Fatalf("accepted policy %s has unusable rules: %v", b, err)
		}
		d, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		r, _ := p.Rules()
		if err := d.SetRules("ten_x", r); err != nil {
			t.Fatal(err)
		}
	})
}
