// Package eval measures how well the plausibility detector catches injected
// fake data. It generates a deterministic synthetic fleet of households
// (grid import and export, PV, heat pumps, EV chargers, an energy counter,
// outdoor temperature; seasons, weekdays and DST in the load profiles),
// delivers it to a plausibility.Detector in 15-minute batches with outages
// and backfills, injects one attack type at a time into a fraction of the
// households with every injected reading labelled, and reports precision
// and recall per attack type and the false-positive rate on clean data.
//
// It owns no production state and must never be wired into ingest: it is
// the harness behind `custos plausibility eval`.
package eval

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/wire"
)

// Config sizes a run. Zero fields take the documented defaults.
type Config struct {
	Seed       uint64    // default 1
	Households int       // default 60
	Days       int       // default 56, warm-up included
	WarmupDays int       // default 28: attacks and scoring start after it
	Start      time.Time // default 2024-02-19 UTC: spans the leap day and the EU DST change
	// AttackedFraction is the share of households that receive the attack
	// in each attack run. Default 0.25.
	AttackedFraction float64
	// Rules default to plausibility.DefaultRules().
	Rules *plausibility.Rules
}

func (c *Config) defaults() {
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Households <= 0 {
		c.Households = 60
	}
	if c.Days <= 0 {
		c.Days = 56
	}
	if c.WarmupDays <= 0 {
		c.WarmupDays = min(28, c.Days/2)
	}
	if c.Start.IsZero() {
		c.Start = time.Date(2024, 2, 19, 0, 0, 0, 0, time.UTC)
	}
	if c.AttackedFraction <= 0 {
		c.AttackedFraction = 0.25
	}
}

// AttackResult is the detection quality for one attack type.
type AttackResult struct {
	// Recall is the share of injected readings that were quarantined.
	Recall float64 `json:"recall"`
	// Precision is the share of quarantined readings of the attacked
	// streams (after warm-up) that were injected ones.
	Precision float64 `json:"precision"`
	// RuleDetectable says hard rules are expected to catch this attack;
	// otherwise only the statistical baseline can.
	RuleDetectable bool `json:"rule_detectable"`
	Injected       int  `json:"injected"`
	Detected       int  `json:"detected"`
	FalseFlags     int  `json:"false_flags"`
}

// Result is the outcome of Run.
type Result struct {
	// FalsePositiveRate is the share of clean readings (after warm-up) in
	// the attack-free run that were quarantined.
	FalsePositiveRate float64                 `json:"false_positive_rate"`
	Attacks           map[string]AttackResult `json:"attacks"`
	CleanReadings     int                     `json:"clean_readings"`
	// CleanFlagsByRule counts the false positives by rule.
	CleanFlagsByRule map[string]int `json:"clean_flags_by_rule"`
	Config           struct {
		Seed       uint64 `json:"seed"`
		Households int    `json:"households"`
		Days       int    `json:"days"`
		WarmupDays int    `json:"warmup_days"`
	} `json:"config"`
}

type attack uint8

const (
	clean attack = iota
	spikes
	scaledValues
	slowDrift
	replayedDay
	fakeDevice
	timeShift
	flatLine
	attackCount
)

var attackNames = [...]string{"", "spikes", "scaled_values", "slow_drift", "replayed_day", "fake_device", "time_shift", "flat_line"}

// RuleDetectable reports which attacks the hard rules are expected to catch.
var ruleDetectable = [...]bool{spikes: true, replayedDay: true, fakeDevice: true, timeShift: true, flatLine: true}

// Run generates the fleet, runs the detector once on clean data and once
// per attack type, and scores it. It is deterministic for a Config.
func Run(cfg Config) Result {
	cfg.defaults()
	fleet := generate(&cfg)
	var res Result
	res.Config.Seed, res.Config.Households, res.Config.Days, res.Config.WarmupDays = cfg.Seed, cfg.Households, cfg.Days, cfg.WarmupDays
	res.Attacks = map[string]AttackResult{}
	scoreFrom := cfg.Start.UnixMilli() + int64(cfg.WarmupDays)*86_400_000

	o := runOnce(&cfg, fleet, clean, scoreFrom)
	res.CleanReadings = o.clean
	res.CleanFlagsByRule = o.byRule
	res.FalsePositiveRate = ratio(o.falseFlags, o.clean)
	for a := spikes; a < attackCount; a++ {
		o := runOnce(&cfg, fleet, a, scoreFrom)
		res.Attacks[attackNames[a]] = AttackResult{
			Recall: ratio(o.detected, o.injected), Precision: ratio(o.detected, o.detected+o.attackedFalse),
			RuleDetectable: ruleDetectable[a], Injected: o.injected, Detected: o.detected, FalseFlags: o.attackedFalse,
		}
	}
	return res
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(float64(a)/float64(b)*1e4) / 1e4
}

type outcome struct {
	injected, detected int
	clean, falseFlags  int
	attackedFalse      int
	byRule             map[string]int
}

// runOnce copies the fleet, injects attack a (none for clean), delivers it
// and counts.
func runOnce(cfg *Config, fleet []household, a attack, scoreFrom int64) outcome {
	rng := rand.New(rand.NewPCG(cfg.Seed^0x5eed, uint64(a)))
	hs := make([]household, len(fleet))
	attacked := make([]bool, len(fleet))
	for h := range fleet {
		hs[h] = fleet[h]
		hs[h].series = make([]series, len(fleet[h].series))
		for i, s := range fleet[h].series {
			s.rs = slices.Clone(s.rs)
			hs[h].series[i] = s
		}
		if a != clean && rng.Float64() < cfg.AttackedFraction {
			attacked[h] = true
			inject(&hs[h], a, rng, scoreFrom, cfg)
		}
	}
	det, err := plausibility.New(plausibility.Config{Rules: cfg.Rules, Now: func() time.Time { return time.Time{} }})
	if err != nil {
		panic(err) // Rules come from the caller's code, not from input
	}
	o := outcome{byRule: map[string]int{}}
	for h := range hs {
		deliver(det, &hs[h], rand.New(rand.NewPCG(cfg.Seed, 1<<32|uint64(h))), cfg, func(_ *series, r *reading, flagged bool, v *plausibility.Verdict, hadAttack bool) {
			if r.sent < scoreFrom {
				return
			}
			switch {
			case r.label != clean:
				o.injected++
				if flagged {
					o.detected++
				}
			default:
				o.clean++
				if flagged {
					o.falseFlags++
					if hadAttack {
						o.attackedFalse++
					}
					for _, rs := range v.Reasons {
						if rs.Rule.Quarantines() {
							o.byRule[rs.Rule.String()]++
						}
					}
				}
			}
		})
	}
	return o
}

// deliver sends a household's series to det in 15-minute batches (with
// outages that are backfilled in one batch) and reports every reading with
// whether it was quarantined.
func deliver(det *plausibility.Detector, hh *household, rng *rand.Rand, cfg *Config,
	report func(s *series, r *reading, flagged bool, v *plausibility.Verdict, attackedStream bool)) {
	const batch = 15 * 60_000
	start := cfg.Start.UnixMilli()
	end := start + int64(cfg.Days)*86_400_000
	attackedStream := make([]bool, len(hh.series))
	for i, s := range hh.series {
		slices.SortStableFunc(s.rs, func(x, y reading) int { return cmp.Compare(x.sent, y.sent) })
		for _, r := range s.rs {
			if r.label != clean {
				attackedStream[i] = true
				break
			}
		}
	}
	pos := make([]int, len(hh.series))
	buf := make([][]wire.Reading, len(hh.series))
	refs := make([][]*reading, len(hh.series))
	flagged := make([][]*plausibility.Verdict, len(hh.series))
	var outageUntil int64
	for T := start + batch; T <= end; T += batch {
		if outageUntil == 0 && rng.Float64() < 0.05/96 {
			outageUntil = T + int64(1+rng.IntN(8))*3_600_000
		}
		if outageUntil != 0 && T < outageUntil && T < end {
			continue // the agent spools
		}
		outageUntil = 0
		recv := T + 2000 + rng.Int64N(88_000)
		var site []plausibility.SiteSeries
		var siteIdx []int
		for i := range hh.series {
			s := &hh.series[i]
			buf[i], refs[i] = buf[i][:0], refs[i][:0]
			for pos[i] < len(s.rs) && s.rs[pos[i]].sent < T {
				r := &s.rs[pos[i]]
				buf[i] = append(buf[i], wire.Reading{Time: r.t, Value: r.v})
				refs[i] = append(refs[i], r)
				pos[i]++
			}
			flagged[i] = flagged[i][:0]
			for range buf[i] {
				flagged[i] = append(flagged[i], nil)
			}
			if len(buf[i]) == 0 {
				continue
			}
			ctx := s.ctx
			ctx.Received = recv
			for _, v := range det.Check(ctx, buf[i]) {
				if v.Quarantine() {
					flagged[i][v.Index] = &v
				}
			}
			if s.role != 0 {
				site = append(site, plausibility.SiteSeries{Role: s.role, Readings: buf[i]})
				siteIdx = append(siteIdx, i)
			}
		}
		for _, sv := range det.CheckSite(registry.TenantID("ten_eval"), site) {
			i := siteIdx[sv.Series]
			if flagged[i][sv.Index] == nil {
				flagged[i][sv.Index] = &sv.Verdict
			}
		}
		for i := range hh.series {
			for j, r := range refs[i] {
				report(&hh.series[i], r, flagged[i][j] != nil, flagged[i][j], attackedStream[i])
			}
		}
	}
}
