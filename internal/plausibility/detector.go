package plausibility

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/wire"
)

// Site holds the physical facts about a site that the rules need.
type Site struct {
	// MaxPowerW is the connection limit in W; 0 uses Rules.MaxPowerW.
	MaxPowerW float64
	// NetMetered sites may export: their power streams may be negative.
	NetMetered bool
	// HasLocation says Lat and Lon (degrees, north and east positive) are
	// set. They drive the day/night model and the solar-time buckets of the
	// baseline; without them the baseline uses UTC hours.
	HasLocation bool
	Lat, Lon    float64
	// DaylightFrom and DaylightTo, when DaylightTo > DaylightFrom, give a
	// configured daylight window in minutes after midnight UTC, used
	// instead of the solar model when HasLocation is false.
	DaylightFrom, DaylightTo int
}

// StreamContext is what the caller knows about one stream and one batch.
type StreamContext struct {
	Tenant registry.TenantID // selects the tenant's Rules
	Stream registry.StreamID // keys the per-stream state. Must be non-empty.
	Kind   Kind              // Must be valid; an unknown kind flags every reading (fail closed)
	Site   Site
	// Production marks a stream measuring generation (PV): it must read
	// zero at night.
	Production bool
	// NoBaseline skips the seasonal baseline for a stream that the weather
	// rather than habit drives, such as grid export (PV surplus).
	NoBaseline bool
	// Received is the time the hub received the batch, Unix ms; 0 means
	// Config.Now.
	Received int64
	// MeterID is the meter identity the device reported with this batch
	// and BoundMeterID the one registered for the device bound to the
	// connector. When BoundMeterID is set, MeterID must equal it (an
	// unreported identity does not match).
	MeterID, BoundMeterID string
	// ReplacedAt is the time (Unix ms) of the latest recorded meter
	// replacement, 0 if none. The first reading at or after it may restart
	// a counter anywhere, e.g. near zero.
	ReplacedAt int64
	// PreviousMeterID is the serial of the meter replaced at ReplacedAt: a
	// batch reported under it whose readings all precede ReplacedAt (sent
	// late) matches too.
	PreviousMeterID string
	// CounterWrap is the value at which an energy counter rolls over to
	// zero (e.g. 1e9 Wh for a 6-digit kWh register with three decimals),
	// 0 if it never does.
	CounterWrap float64
}

// MeterMismatch reports whether a batch breaks its device's meter binding:
// a bound serial exists and the batch reports another identity, or none —
// except the replaced meter's (previous, replaced at replacedAt) for a
// batch whose newest reading, maxT, precedes the replacement.
func MeterMismatch(reported, bound, previous string, replacedAt, maxT int64) bool {
	if bound == "" || reported == bound {
		return false
	}
	return reported == "" || reported != previous || maxT >= replacedAt
}

// Config configures a Detector.
type Config struct {
	// Rules are the rules of tenants without their own (see SetRules).
	// The zero value means DefaultRules().
	Rules *Rules
	// Now is the clock used when a StreamContext has no Received time.
	// Default time.Now.
	Now func() time.Time
}

// Detector checks readings against the rules and the per-stream state it
// learns from accepted readings. It is safe for concurrent use; batches of
// one stream are checked one at a time, in the order the caller submits
// them.
type Detector struct {
	now func() time.Time

	mu      sync.RWMutex
	rules   *Rules
	tenants map[registry.TenantID]*Rules
	streams map[registry.StreamID]*stream
}

// New returns a Detector. It fails if cfg.Rules does not pass Rules.Check.
func New(cfg Config) (*Detector, error) {
	r := DefaultRules()
	if cfg.Rules != nil {
		r = *cfg.Rules
	}
	if err := r.Check(); err != nil {
		return nil, err
	}
	d := &Detector{now: cfg.Now, rules: &r, tenants: map[registry.TenantID]*Rules{}, streams: map[registry.StreamID]*stream{}}
	if d.now == nil {
		d.now = time.Now
	}
	return d, nil
}

// SetRules sets the rules of one tenant. Streams keep their learned state.
func (d *Detector) SetRules(t registry.TenantID, r Rules) error {
	if err := r.Check(); err != nil {
		return err
	}
	d.mu.Lock()
	d.tenants[t] = &r
	d.mu.Unlock()
	return nil
}

// Forget drops the state of a stream (erased or deleted).
func (d *Detector) Forget(id registry.StreamID) {
	d.mu.Lock()
	delete(d.streams, id)
	d.mu.Unlock()
}

func (d *Detector) rulesAndStream(ctx *StreamContext) (*Rules, *stream) {
	d.mu.RLock()
	r, ok := d.tenants[ctx.Tenant]
	if !ok {
		r = d.rules
	}
	st := d.streams[ctx.Stream]
	d.mu.RUnlock()
	if st == nil {
		d.mu.Lock()
		if st = d.streams[ctx.Stream]; st == nil {
			st = &stream{}
			d.streams[ctx.Stream] = st
		}
		d.mu.Unlock()
	}
	return r, st
}

const (
	msPerHour = 3_600_000
	msPerDay  = 86_400_000
	buckets   = 48 // 24 solar hours × {weekday, weekend}
	maxWindow = 8
	maxSlots  = 1 << 16
	zClip     = 4.0
)

// stream is the learned state of one stream. Only accepted readings
// (no quarantining reason) move lastT, lastV, the baseline and the
// fingerprints; the frozen run and the replay window follow every reading in
// time order.
type stream struct {
	mu sync.Mutex
	streamState
}

type streamState struct {
	kind Kind

	has   bool
	lastT int64
	lastV float64
	step  int64 // smoothed interval between accepted readings, ms

	frozenV   float64
	frozenRun uint32

	hasLag   bool
	lagRef   int64 // receive time − newest time of the last accepted live batch
	prevRecv int64

	// replaced is the meter replacement (StreamContext.ReplacedAt) the
	// stream has accepted a reading after: each replacement lets one
	// reading restart a counter.
	replaced int64

	wn        uint8
	win       [maxWindow - 1]uint64 // bits of the latest values, win[wn-1] newest
	replaying bool
	replayHit bool // the last sampled window matched (fast streams need two)
	fp        fingerprints

	cusumUp, cusumDown float64
	base               []bucket // nil until the baseline is first used

	// sunSlot caches the solar elevation of a 15-minute slot (not
	// persisted): the sun moves less than 4° in a slot.
	sunSlot int64
	sunElev float64
	// baseLast is the time of the last reading the baseline learned from
	// (not persisted: after a restart the next reading is learned from).
	baseLast int64
	bounds   bounds
}

type bucket struct {
	m, d float64 // median and MAD in the compressed domain
	n    uint32
}

func (s *stream) reset(k Kind) {
	s.streamState = streamState{kind: k}
}

// Check checks a batch of readings of one stream, in order, and returns a
// Verdict for each flagged reading, in index order; nil if none is flagged.
// Readings without a quarantining reason are learned from. Check never
// modifies rs. For a clean batch it does not allocate.
func (d *Detector) Check(ctx StreamContext, rs []wire.Reading) []Verdict {
	if len(rs) == 0 {
		return nil
	}
	rules, st := d.rulesAndStream(&ctx)
	recv := ctx.Received
	if recv == 0 {
		recv = d.now().UnixMilli()
	}
	var vs verdicts
	if !ctx.Kind.valid() {
		for i := range rs {
			vs.add(i, RuleConfig, "unknown stream kind")
		}
		return vs
	}
	kr := rules.kind(ctx.Kind)

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.kind != ctx.Kind {
		st.reset(ctx.Kind)
	}

	// Batch-wide facts.
	minT, maxT := rs[0].Time, rs[0].Time
	for i := 1; i < len(rs); i++ {
		minT = min(minT, rs[i].Time)
		maxT = max(maxT, rs[i].Time)
	}
	identity := MeterMismatch(ctx.MeterID, ctx.BoundMeterID, ctx.PreviousMeterID, ctx.ReplacedAt, maxT)
	skew := rules.Skew.Milliseconds()
	lag := recv - maxT
	jump := false
	live := false
	if st.hasLag {
		elapsed := recv - st.prevRecv
		live = elapsed > 0 && maxT-minT <= elapsed+elapsed/2+60_000
		if cj := rules.ClockJump.Milliseconds(); cj > 0 && live {
			dl := lag - st.lagRef
			jump = dl > cj || dl < -cj
		}
	}
	st.prevRecv = recv
	if !jump && lag >= -skew && (live || !st.hasLag) {
		st.lagRef, st.hasLag = lag, true
	}

	futureT := recv + skew
	oldT := recv - rules.MaxAge.Milliseconds()
	maxW := ctx.Site.MaxPowerW
	if maxW <= 0 {
		maxW = rules.MaxPowerW
	}
	lo, hi := kr.Min, kr.Max
	if math.IsNaN(hi) {
		hi = maxW * (1 + kr.LimitTol)
	}
	if math.IsNaN(lo) {
		lo = 0
		if ctx.Site.NetMetered {
			lo = -hi
		}
	}
	negative := lo == 0 && !ctx.Site.NetMetered && (ctx.Kind == KindPower || ctx.Kind == KindSwitchedPower)
	maxGap := kr.MaxGap.Milliseconds()
	energyRate := maxW * (1 + kr.LimitTol) / msPerHour // Wh per ms
	rate := kr.MaxRate / 1000                          // units per ms
	frozenN := uint32(kr.FrozenSamples)
	frozenSpan := kr.FrozenSpan.Milliseconds()
	win := kr.ReplayWindow
	sample := uint64(1) // fingerprint one window in sample, about one per ReplaySample
	step := st.step
	if step == 0 && len(rs) > 1 {
		// A new stream: judge its rate by this batch, or its first
		// batch of a fast stream would be treated as a slow one.
		step = (maxT - minT) / int64(len(rs)-1)
	}
	if per := kr.ReplaySample.Milliseconds(); per > 0 && step > 0 && step < per {
		sample = uint64(per / step)
	}
	bl := &kr.Baseline
	useBase := bl.enabled() && !ctx.NoBaseline
	every := bl.Every.Milliseconds()
	if useBase && st.base == nil {
		st.base = make([]bucket, buckets)
	}
	var solarOff int64
	if ctx.Site.HasLocation {
		solarOff = int64(ctx.Site.Lon * 240_000) // 4 minutes per degree
	}
	night := ctx.Production && (ctx.Site.HasLocation || ctx.Site.DaylightTo > ctx.Site.DaylightFrom)

	for i := range rs {
		t, v := rs[i].Time, rs[i].Value
		var why uint32 // bit per Rule: the quarantining reasons so far
		if identity {
			why |= 1 << RuleMeterIdentity
		}
		if jump {
			why |= 1 << RuleClockJump
		}
		if t > futureT {
			why |= 1 << RuleFuture
		} else if t < oldT {
			why |= 1 << RuleTooOld
		}
		if v < lo || v > hi {
			if negative && v < 0 && v >= -hi {
				why |= 1 << RuleNegative
			} else {
				why |= 1 << RuleLimit
			}
		}
		gap := false
		ordered := true
		replaced := false
		if st.has {
			dt := t - st.lastT
			switch {
			case dt == 0:
				why |= 1 << RuleDuplicate
				ordered = false
			case dt < 0:
				why |= 1 << RuleOutOfOrder
				ordered = false
			case ctx.ReplacedAt != 0 && ctx.ReplacedAt != st.replaced && t >= ctx.ReplacedAt:
				replaced = true // a new meter: no continuity with the old one
			default:
				gap = maxGap > 0 && dt > maxGap
				dv := v - st.lastV
				if ctx.Kind == KindEnergy {
					allowed := energyRate*float64(dt) + 1
					if dv < 0 {
						if w := ctx.CounterWrap; w > 0 && dv+w >= 0 && dv+w <= allowed {
							dv = 0 // rolled over within the rate limit
						} else {
							why |= 1 << RuleCounterBackwards
						}
					}
					if dv > allowed {
						why |= 1 << RuleRate
					}
				} else if rate > 0 {
					if math.Abs(dv) > rate*float64(max(dt, 60_000)) {
						why |= 1 << RuleRate
					}
				}
			}
		}
		if ordered {
			if v == st.frozenV && v != 0 {
				st.frozenRun++
			} else {
				st.frozenV, st.frozenRun = v, 1
			}
			if frozenN > 0 && st.frozenRun >= frozenN && (frozenSpan == 0 || int64(st.frozenRun)*max(st.step, 1) >= frozenSpan) {
				why |= 1 << RuleFrozen
			}
			if win > 0 {
				if st.replayCheck(kr, win, sample, v, why == 0) {
					why |= 1 << RuleReplay
				}
			}
		}
		if night && v > rules.NightTolW && st.isNight(&ctx.Site, t, rules.NightElevation) {
			why |= 1 << RuleNight
		}
		var stat uint32
		if useBase && why == 0 && !replaced {
			full := every == 0 || t-st.baseLast >= every || t < st.baseLast
			if full {
				st.baseLast = t
			}
			stat = st.baseline(bl, t+solarOff, v, full)
		}
		if why == 0 {
			if st.has && t > st.lastT && st.step == 0 {
				st.step = t - st.lastT
			} else if st.has && t > st.lastT {
				st.step += (t - st.lastT - st.step) / 8
			} else if !st.has {
				st.step = 0
			}
			st.has, st.lastT, st.lastV = true, t, v
			// The replacement is used up by the restart it allowed, or by
			// any reading after it (one exactly at it may be the old
			// meter's last).
			if ctx.ReplacedAt != 0 && (replaced || t > ctx.ReplacedAt) {
				st.replaced = ctx.ReplacedAt
			}
			if stat == 0 && !gap {
				continue
			}
		}
		why |= stat
		d.explain(&vs, i, why, gap, &ctx, kr, lo, hi, rules)
	}
	if len(vs) == 0 {
		return nil
	}
	return vs
}

// explain turns the reason bits of reading i into Reasons.
func (d *Detector) explain(vs *verdicts, i int, why uint32, gap bool, ctx *StreamContext, kr *KindRules, lo, hi float64, rules *Rules) {
	for r := Rule(1); r < ruleCount; r++ {
		if why&(1<<r) == 0 {
			continue
		}
		var detail string
		switch r {
		case RuleMeterIdentity:
			detail = "reported meter identity differs from the bound meter"
		case RuleClockJump:
			detail = fmt.Sprintf("arrival lag moved by more than %s", rules.ClockJump)
		case RuleFuture:
			detail = fmt.Sprintf("more than %s after receipt", rules.Skew)
		case RuleTooOld:
			detail = fmt.Sprintf("more than %s before receipt", rules.MaxAge)
		case RuleDuplicate:
			detail = "same time as the newest accepted reading"
		case RuleOutOfOrder:
			detail = "before the newest accepted reading"
		case RuleLimit:
			detail = fmt.Sprintf("outside [%g, %g] for %s", lo, hi, ctx.Kind)
		case RuleNegative:
			detail = "negative on a site that is not net-metered"
		case RuleCounterBackwards:
			detail = "counter decreased without rollover or recorded replacement"
		case RuleRate:
			if ctx.Kind == KindEnergy {
				detail = fmt.Sprintf("counter advanced faster than the connection limit of %g W", hi)
			} else {
				detail = fmt.Sprintf("changed faster than %g per second", kr.MaxRate)
			}
		case RuleFrozen:
			detail = fmt.Sprintf("identical non-zero value %d times in a row, over at least %s", kr.FrozenSamples, kr.FrozenSpan)
		case RuleReplay:
			detail = fmt.Sprintf("the last %d values repeat a recent window", kr.ReplayWindow)
		case RuleNight:
			detail = fmt.Sprintf("production above %g W while the sun is down", rules.NightTolW)
		case RuleBaseline:
			detail = fmt.Sprintf("robust z-score beyond %g for this hour and day class", kr.Baseline.Z)
		case RuleLevelShift:
			detail = fmt.Sprintf("sustained shift from the seasonal baseline (CUSUM above %g)", kr.Baseline.CusumH)
		default:
			detail = r.String()
		}
		vs.add(i, r, detail)
	}
	if gap {
		vs.add(i, RuleGap, fmt.Sprintf("no reading for more than %s", kr.MaxGap))
	}
}
