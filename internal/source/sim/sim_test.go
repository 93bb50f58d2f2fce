package sim

import (
	"context"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/source"
)

// TestReplayRate checks a replay runs at about Rate even when Rate is
// above the timer resolution (a time.Ticker at 5 kHz delivers about 1 kHz
// on some systems), and never faster.
func TestReplayRate(t *testing.T) {
	const ticks, rate = 2500, 5000 // 0.5 s
	s, err := New(Config{Household: "h", Start: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), Ticks: ticks, Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	began := time.Now()
	var took time.Duration
	err = s.Run(ctx, nil, func(rs []source.Reading) error {
		if n++; n == ticks {
			took = time.Since(began)
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != ticks {
		t.Fatalf("emitted %d ticks, want %d", n, ticks)
	}
	if took < 450*time.Millisecond || took > 2*time.Second {
		t.Errorf("%d ticks at %d/s took %v, want about 500ms", ticks, rate, took)
	}
}
