// Package sim is a simulated household: PV production, household
// consumption and a heat pump, one reading per stream per interval.
//
// Values are a deterministic function of the seed, the stream and the
// timestamp, so a restarted simulator regenerates exactly the readings it
// would have produced. It can run in real time or replay a stretch of
// simulated time as fast as the agent accepts it (for tests and benches).
package sim

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"github.com/custos-iot/custos/internal/source"
	"github.com/custos-iot/custos/internal/wire"
)

// Config configures a simulated household.
type Config struct {
	// Household prefixes the device names: "<household>-pv",
	// "<household>-meter", "<household>-heatpump". Required.
	Household string `json:"household"`
	// Interval between readings. Default 1 s.
	Interval Duration `json:"interval"`
	// Start, if set, makes the simulator produce simulated time from Start
	// on as fast as Rate allows, instead of following the wall clock.
	Start time.Time `json:"start,omitzero"`
	// Ticks, if positive, stops the simulator after this many intervals
	// from Start (a finite data set, for tests).
	Ticks int64 `json:"ticks,omitempty"`
	// Rate bounds simulated ticks per second when Start is set; 0 means
	// unbounded.
	Rate float64 `json:"rate,omitempty"`
	// Seed varies the household's profile. Default 1.
	Seed uint64 `json:"seed,omitempty"`
	// MeterSerial, if set, is reported as the identity of the
	// household's grid meter ("<household>-meter").
	MeterSerial string `json:"meter_serial,omitempty"`
	// Now is the clock for real-time mode. Default time.Now.
	Now func() time.Time `json:"-"`
}

// Duration is a time.Duration that reads "1s" from JSON.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalText formats the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

type stream struct {
	key  string
	kind int
}

const (
	kindPV = iota
	kindLoad
	kindHeatPump
)

// Sim is a simulated household source.
type Sim struct {
	cfg     Config
	streams []stream
}

// New returns a simulator for cfg.
func New(cfg Config) (*Sim, error) {
	if cfg.Household == "" {
		return nil, fmt.Errorf("sim: household name required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = Duration(time.Second)
	}
	if time.Duration(cfg.Interval)%time.Millisecond != 0 {
		return nil, fmt.Errorf("sim: interval must be a whole number of milliseconds")
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sim{cfg: cfg}
	s.streams = []stream{
		{cfg.Household + "-pv/power_w", kindPV},
		{cfg.Household + "-meter/import_power_w", kindLoad},
		{cfg.Household + "-heatpump/power_w", kindHeatPump},
	}
	return s, nil
}

// Streams describes the simulator's streams for registration at the hub:
// device name, metric, data category and unit.
func Streams(household string) [][4]string {
	return [][4]string{
		{household + "-pv", "power_w", "energy.production", "W"},
		{household + "-meter", "import_power_w", "energy.consumption", "W"},
		{household + "-heatpump", "power_w", "energy.heating", "W"},
	}
}

// Meters reports the configured serial of the household's grid meter.
func (s *Sim) Meters() map[string]string {
	if s.cfg.MeterSerial == "" {
		return nil
	}
	return map[string]string{s.cfg.Household + "-meter": s.cfg.MeterSerial}
}

// Keys lists the stream keys.
func (s *Sim) Keys() []string {
	out := make([]string, len(s.streams))
	for i, st := range s.streams {
		out[i] = st.key
	}
	return out
}

// Run emits one reading per stream per interval.
func (s *Sim) Run(ctx context.Context, resume map[string]int64, emit source.Emit) error {
	iv := time.Duration(s.cfg.Interval).Milliseconds()
	replay := !s.cfg.Start.IsZero()
	var next int64
	if replay {
		next = s.cfg.Start.UnixMilli()
	} else {
		next = s.cfg.Now().UnixMilli()/iv*iv + iv
	}
	// Continue after the newest accepted reading; the streams advance in
	// lockstep, so the oldest of their last times is where to resume.
	if last, ok := s.resumePoint(resume); ok && last+iv > next {
		next = last + iv
	}
	end := int64(math.MaxInt64)
	if replay && s.cfg.Ticks > 0 {
		end = s.cfg.Start.UnixMilli() + s.cfg.Ticks*iv
	}
	// Replay is paced by deadlines, not a time.Ticker: a ticker faster
	// than the timer resolution (about 1 ms on some systems) silently caps
	// the rate, while a deadline lets ticks that are due go out at once.
	var period time.Duration
	var due time.Time
	if replay && s.cfg.Rate > 0 {
		period = max(time.Duration(float64(time.Second)/s.cfg.Rate), 1)
		due = time.Now()
	}
	buf := make([]source.Reading, len(s.streams))
	for next < end {
		switch {
		case period > 0:
			due = due.Add(period)
			now := time.Now()
			if wait := due.Sub(now); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
			} else {
				if ctx.Err() != nil {
					return nil
				}
				if wait < -100*time.Millisecond {
					// Stalled (a slow disk): carry on at Rate rather
					// than catch up in a burst.
					due = now
				}
			}
		case !replay:
			wait := time.Until(time.UnixMilli(next))
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
			}
		default:
			if ctx.Err() != nil {
				return nil
			}
		}
		for i, st := range s.streams {
			buf[i] = source.Reading{Key: st.key, Reading: wire.Reading{Time: next, Value: s.value(st, next)}}
		}
		if err := emit(buf); err != nil {
			return err
		}
		next += iv
	}
	<-ctx.Done()
	return nil
}

func (s *Sim) resumePoint(resume map[string]int64) (int64, bool) {
	var last int64
	found := false
	for _, st := range s.streams {
		t, ok := resume[st.key]
		if !ok {
			continue
		}
		if !found || t < last {
			last = t
		}
		found = true
	}
	return last, found
}

// noise returns a deterministic pseudo-random number in [-1, 1) for a
// stream at a time: the same on every run and every machine.
func (s *Sim) noise(key string, t int64, salt uint64) float64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	x := h.Sum64() ^ uint64(t)*0x9e3779b97f4a7c15 ^ s.cfg.Seed*0xbf58476d1ce4e5b9 ^ salt
	// splitmix64 finaliser
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11)/float64(1<<53)*2 - 1
}

func (s *Sim) value(st stream, t int64) float64 {
	tm := time.UnixMilli(t).UTC()
	hour := float64(tm.Hour()) + float64(tm.Minute())/60 + float64(tm.Second())/3600
	day := float64(tm.YearDay())
	prof := float64(s.cfg.Seed%7) / 7 // household variety
	switch st.kind {
	case kindPV:
		season := 0.55 + 0.45*math.Cos(2*math.Pi*(day-172)/365)
		sun := math.Sin(math.Pi * (hour - 6) / 12)
		if sun <= 0 {
			return 0
		}
		cloud := 0.75 + 0.25*math.Sin(float64(t/60_000)/7+prof*10)
		return math.Round(math.Max(0, (4000+1000*prof)*season*sun*cloud+30*s.noise(st.key, t, 1)))
	case kindLoad:
		base := 250 + 100*prof
		evening := 900 * math.Exp(-math.Pow(hour-19, 2)/4)
		morning := 500 * math.Exp(-math.Pow(hour-7.5, 2)/1.5)
		return math.Round(base + evening + morning + 40*s.noise(st.key, t, 2))
	default: // heat pump: cycles of 20 minutes on, 20 off, more in winter
		cycle := (t / 60_000 / 20) % 2
		if cycle == 1 {
			return math.Round(15 + 3*s.noise(st.key, t, 3))
		}
		winter := 0.6 + 0.4*math.Cos(2*math.Pi*(day-15)/365)
		return math.Round(1800*winter + 60*s.noise(st.key, t, 4))
	}
}

// Value is the simulated value of the stream with the given key at time t
// (Unix ms), or 0 for a key the household does not have.
func (s *Sim) Value(key string, t int64) float64 {
	for _, st := range s.streams {
		if st.key == key {
			return s.value(st, t)
		}
	}
	return 0
}
