package plausibility

import (
	"fmt"
	"math"
	"time"
)

// Kind is what a stream measures, which decides the rules that apply.
type Kind uint8

// The stream kinds.
const (
	// KindPower is a continuously varying power in W: grid import or
	// export, PV production. Negative values mean the other direction.
	KindPower Kind = iota + 1
	// KindSwitchedPower is the power in W of an on/off load: EV charger,
	// heat pump, battery. It sits at zero or at a constant level for hours,
	// so frozen values and the seasonal baseline do not apply.
	KindSwitchedPower
	// KindEnergy is a cumulative energy counter in Wh that never decreases
	// except by rollover or meter replacement.
	KindEnergy
	// KindTemperature is a temperature in °C.
	KindTemperature

	kindCount = iota + 1
)

var kindNames = [...]string{"", "power", "switched_power", "energy", "temperature"}

func (k Kind) String() string {
	if k == 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
	return kindNames[k]
}

func (k Kind) valid() bool { return k >= KindPower && k < kindCount }

// Rules configures the detector for one tenant. Build it with DefaultRules
// and change what the tenant needs; a zero field means "off" where the field
// doc says so, not "default".
type Rules struct {
	// Skew is how far in the future (relative to the time the batch was
	// received) a reading may lie. Default 2 minutes.
	Skew time.Duration
	// MaxAge is how far in the past a reading may lie. Agents spool
	// through outages, so this is generous. Default 90 days.
	MaxAge time.Duration
	// ClockJump is how much the arrival lag of a live batch (receive time
	// minus its newest reading) may differ from the stream's previous
	// accepted lag. Catch-up batches after an outage are exempt. 0 turns
	// the rule off. Default 15 minutes.
	ClockJump time.Duration
	// MaxPowerW is the connection limit used when a Site gives none.
	// Default 43,470 W (3 × 63 A at 230 V).
	MaxPowerW float64
	// BalanceTolW and BalanceTolRel bound how far import − export +
	// production may fall below zero or below the sub-metered loads: by
	// BalanceTolW plus BalanceTolRel times the sum of all magnitudes.
	// Defaults 150 W and 0.05.
	BalanceTolW, BalanceTolRel float64
	// NightElevation is the solar elevation in degrees below which a
	// production stream must read (near) zero. Default −3°.
	NightElevation float64
	// NightTolW is the production still accepted at night (inverter
	// standby, meter noise). Default 25 W.
	NightTolW float64

	Power         KindRules // rules for KindPower
	SwitchedPower KindRules // rules for KindSwitchedPower
	Energy        KindRules // rules for KindEnergy
	Temperature   KindRules // rules for KindTemperature
}

// KindRules configures the rules for one stream kind.
type KindRules struct {
	// Min and Max are physical limits. For power kinds, Max is replaced by
	// the site's connection limit times (1 + LimitTol) and Min by its
	// negative on net-metered sites (0 elsewhere) when they are NaN.
	Min, Max float64
	// LimitTol is the fraction above the connection limit still accepted
	// (meters and fuses tolerate short overloads). Default 0.1.
	LimitTol float64
	// MaxRate bounds |Δvalue| per second between consecutive readings,
	// allowing at least one minute's change. 0 is off. For KindEnergy the
	// rate comes from the connection limit instead and this is ignored.
	MaxRate float64
	// FrozenSamples flags a reading that is the FrozenSamples-th identical
	// non-zero value in a row. 0 is off. Defaults: power 3 (a 5-minute
	// average of a real load never repeats exactly), temperature 0.
	FrozenSamples int
	// FrozenSpan is the least time a frozen run must also cover, judged
	// by the stream's usual interval: a 1 Hz meter with 1 W resolution
	// repeats a value three times in a row now and then, a 5-minute
	// average never does. 0 is off. Default 10 minutes for power.
	FrozenSpan time.Duration
	// MaxGap notes (without quarantining) a reading that follows the
	// previous one after more than MaxGap. 0 is off. Default 1 hour.
	MaxGap time.Duration
	// ReplayWindow is the number of consecutive values fingerprinted to
	// detect replays of recent data; 0 is off. Default 3 for power.
	ReplayWindow int
	// ReplaySlots is the size of each of the two fingerprint tables (a
	// power of two). Memory is 8 × ReplaySlots bytes per stream; they
	// remember between ReplaySlots/2 and ReplaySlots sampled windows —
	// 3.5 to 7 days at 5-minute intervals with the default 2048. Streams
	// faster than ReplaySample fingerprint one window per ReplaySample on
	// average, so the memory covers the same time span.
	ReplaySlots int
	// ReplaySample is the mean time between fingerprinted windows.
	// Default 5 minutes.
	ReplaySample time.Duration
	// Baseline configures the statistical detector; zero is off.
	Baseline BaselineRules
}

// BaselineRules configures the robust seasonal baseline of a stream: a
// median and a median absolute deviation per (solar hour of day × weekday
// or weekend) bucket, learned online from accepted readings in a
// log-compressed domain y = sign(x)·log2(1 + |x|/Scale).
type BaselineRules struct {
	// Z flags a reading whose robust z-score |y − median| / (1.4826·MAD +
	// Floor) exceeds it. 0 turns the per-reading test off.
	Z float64
	// Scale is the unit of the log compression; 0 means no compression
	// (temperatures).
	Scale float64
	// Floor is added to the robust scale so that flat buckets do not
	// produce huge z-scores.
	Floor float64
	// Rate is the learning rate of the median and MAD (0 < Rate < 1).
	Rate float64
	// MinSamples is how many readings a bucket needs before it judges.
	MinSamples int
	// CusumK and CusumH configure a two-sided CUSUM over the clipped
	// z-scores that flags sustained shifts (scaled values, drift). CusumH
	// 0 turns it off.
	CusumK, CusumH float64
	// Every is the least time between readings the baseline learns from
	// and feeds to the CUSUM: its rate and CUSUM thresholds are tuned for
	// 5-minute data, and a 1 Hz stream would otherwise learn and drift
	// 300 times as fast. Readings in between are still scored against
	// the median (z-test) and share the CUSUM's verdict. 0 judges every
	// reading fully. Default 5 minutes.
	Every time.Duration
}

func (b BaselineRules) enabled() bool { return b.Rate > 0 && (b.Z > 0 || b.CusumH > 0) }

// DefaultRules returns the documented defaults.
func DefaultRules() Rules {
	nan := math.NaN()
	power := BaselineRules{Z: 8, Scale: 50, Floor: 1, Rate: 0.03, MinSamples: 24, CusumK: 1, CusumH: 40, Every: 5 * time.Minute}
	return Rules{
		Skew:           2 * time.Minute,
		MaxAge:         90 * 24 * time.Hour,
		ClockJump:      15 * time.Minute,
		MaxPowerW:      43470,
		BalanceTolW:    150,
		BalanceTolRel:  0.05,
		NightElevation: -3,
		NightTolW:      25,
		Power: KindRules{Min: nan, Max: nan, LimitTol: 0.1, FrozenSamples: 3, FrozenSpan: 10 * time.Minute, MaxGap: time.Hour,
			ReplayWindow: 3, ReplaySlots: 2048, ReplaySample: 5 * time.Minute, Baseline: power},
		SwitchedPower: KindRules{Min: nan, Max: nan, LimitTol: 0.1, MaxGap: time.Hour},
		Energy:        KindRules{Min: 0, Max: math.Inf(1), LimitTol: 0.1, MaxGap: time.Hour},
		Temperature: KindRules{Min: -50, Max: 120, MaxRate: 2.0 / 60, MaxGap: time.Hour,
			Baseline: BaselineRules{Z: 12, Floor: 0.5, Rate: 0.03, MinSamples: 24, Every: 5 * time.Minute}},
	}
}

func (r *Rules) kind(k Kind) *KindRules {
	switch k {
	case KindPower:
		return &r.Power
	case KindSwitchedPower:
		return &r.SwitchedPower
	case KindEnergy:
		return &r.Energy
	default:
		return &r.Temperature
	}
}

// Check reports why r cannot be used, if it cannot.
func (r *Rules) Check() error {
	if r.Skew < 0 || r.MaxAge <= 0 || r.ClockJump < 0 {
		return fmt.Errorf("plausibility rules: Skew and ClockJump must be ≥ 0 and MaxAge > 0")
	}
	if !(r.MaxPowerW > 0) || r.BalanceTolW < 0 || r.BalanceTolRel < 0 || r.NightTolW < 0 {
		return fmt.Errorf("plausibility rules: MaxPowerW must be > 0 and tolerances ≥ 0")
	}
	for k := KindPower; k < kindCount; k++ {
		kr := r.kind(k)
		switch {
		case kr.LimitTol < 0 || kr.MaxRate < 0 || kr.FrozenSamples < 0 || kr.FrozenSpan < 0 || kr.MaxGap < 0:
			return fmt.Errorf("plausibility rules: %s: negative tolerance, rate, samples or gap", k)
		case kr.ReplayWindow < 0 || kr.ReplayWindow > maxWindow:
			return fmt.Errorf("plausibility rules: %s: ReplayWindow must be 0..%d", k, maxWindow)
		case kr.ReplayWindow > 0 && (kr.ReplaySlots < 16 || kr.ReplaySlots > maxSlots || kr.ReplaySlots&(kr.ReplaySlots-1) != 0):
			return fmt.Errorf("plausibility rules: %s: ReplaySlots must be a power of two in 16..%d", k, maxSlots)
		case kr.Baseline.Rate < 0 || kr.Baseline.Rate >= 1 || kr.Baseline.Z < 0 || kr.Baseline.CusumH < 0 ||
			kr.Baseline.CusumK < 0 || kr.Baseline.Floor < 0 || kr.Baseline.Scale < 0 || kr.Baseline.MinSamples < 0 || kr.Baseline.Every < 0:
			return fmt.Errorf("plausibility rules: %s: baseline parameters out of range", k)
		case kr.Baseline.enabled() && !(kr.Baseline.Floor > 0):
			return fmt.Errorf("plausibility rules: %s: baseline needs Floor > 0", k)
		}
	}
	return nil
}
