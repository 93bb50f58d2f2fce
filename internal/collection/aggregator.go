package collection

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/wire"
)

// Aggregator applies stream policies on the edge, before readings are
// spooled: it drops the readings of streams that must not be sent, passes
// raw ones through, and coarsens the others into one reading per bucket
// (see the package doc), emitted when the bucket closes. A bucket closes
// when a reading of a later bucket arrives, or when CloseIdle finds the
// stream idle past the bucket's end.
//
// Its State can be saved and restored, so that a restarted agent continues
// its open buckets (means and counter values stay right) and never sends a
// bucket twice. An Aggregator is not safe for concurrent use.
type Aggregator struct {
	open  map[string]*bucket
	stats Stats
}

// bucket is the state of one stream.
type bucket struct {
	Res   rollup.Resolution `json:"res"`
	Kind  Kind              `json:"kind"`
	Start int64             `json:"start"` // start of the open bucket; meaningful if Agg.Count > 0
	Agg   rollup.Agg        `json:"agg"`
	Q     wire.Quality      `json:"q,omitempty"` // flags of the readings in Agg
	// Done is the start of the newest bucket emitted; readings of it or
	// an earlier bucket are late.
	Done int64 `json:"done"`
	// HasDone says Done is set.
	HasDone bool `json:"has_done,omitempty"`
	// Floor drops readings at or before it: after a restore, those were
	// aggregated already (a source replaying history sends them again).
	Floor int64 `json:"-"`
	// Seen is when (wall clock) the stream last got a reading.
	Seen time.Time `json:"-"`
}

// Stats counts what the aggregator did with readings.
type Stats struct {
	Passed  uint64 `json:"passed"`  // raw readings passed through
	Folded  uint64 `json:"folded"`  // readings folded into buckets
	Emitted uint64 `json:"emitted"` // coarse readings emitted
	Off     uint64 `json:"off"`     // dropped: the stream must not be sent
	Unknown uint64 `json:"unknown"` // dropped: the hub does not list the stream
	Late    uint64 `json:"late"`    // dropped: their bucket was already emitted or replayed
}

// NewAggregator returns an empty aggregator.
func NewAggregator() *Aggregator { return &Aggregator{open: map[string]*bucket{}} }

// Emit receives a reading to spool.
type Emit func(key string, r wire.Reading)

// Add applies policy p (from the current Document; ok false if the
// document does not list the key) to reading r of stream key at wall-clock
// time now, calling emit for what is to be spooled.
func (g *Aggregator) Add(key string, p StreamPolicy, ok bool, r wire.Reading, now time.Time, emit Emit) {
	b := g.open[key]
	switch {
	case !ok:
		g.stats.Unknown++
		g.discard(key)
		return
	case !p.Send:
		g.stats.Off++
		g.discard(key) // an open bucket must not leave either
		return
	case p.Finest == rollup.Raw || !p.Finest.Valid():
		if b != nil {
			g.flush(key, b, emit) // a partial bucket under the old policy
			delete(g.open, key)
		}
		g.stats.Passed++
		emit(key, r)
		return
	}
	if b != nil && (b.Res != p.Finest || b.Kind != p.Kind) {
		g.flush(key, b, emit)
		delete(g.open, key)
		b = nil
	}
	if b == nil {
		b = &bucket{Res: p.Finest, Kind: p.Kind}
		g.open[key] = b
	}
	start := b.Res.Bucket(r.Time)
	switch {
	case r.Time <= b.Floor && b.Floor != 0,
		b.HasDone && start <= b.Done,
		b.Agg.Count > 0 && start < b.Start:
		g.stats.Late++
		return
	case b.Agg.Count > 0 && start > b.Start:
		g.flush(key, b, emit)
	}
	if b.Agg.Count == 0 {
		b.Start, b.Q = start, 0
	}
	before := b.Agg.Count
	b.Agg.Add(r)
	if b.Agg.Count == before {
		g.stats.Late++ // a reading that does not count (bad quality, not finite)
		return
	}
	b.Q |= r.Quality
	b.Seen = now
	g.stats.Folded++
}

// flush emits b's open bucket, if any, and marks it done.
func (g *Aggregator) flush(key string, b *bucket, emit Emit) {
	if b.Agg.Count == 0 {
		return
	}
	r := wire.Reading{Time: b.Start, Value: b.Agg.Mean(), Quality: b.Q}
	if b.Kind == Counter {
		r = wire.Reading{Time: b.Res.Next(b.Start), Value: b.Agg.Last, Quality: b.Q}
	}
	emit(key, r)
	g.stats.Emitted++
	b.Done, b.HasDone = b.Start, true
	b.Agg, b.Q = rollup.Agg{}, 0
}

// discard forgets a stream's open bucket without emitting it.
func (g *Aggregator) discard(key string) { delete(g.open, key) }

// CloseIdle emits every open bucket whose end has passed (by the reading
// clock, now) and whose stream got no reading for idle (wall clock). A
// stream that stops mid-bucket is thus sent once it has been quiet for
// idle, not held back for ever.
func (g *Aggregator) CloseIdle(now time.Time, idle time.Duration, emit Emit) {
	for key, b := range g.open {
		if b.Agg.Count > 0 && now.UnixMilli() >= b.Res.Next(b.Start) && now.Sub(b.Seen) >= idle {
			g.flush(key, b, emit)
		}
	}
}

// Spooled tells the aggregator that the spool already holds a reading of
// key at time t (the newest, from the spool after a restart). An open
// bucket that this reading was emitted from is closed without emitting it
// again: the crash came after the spool write, before the state was saved.
func (g *Aggregator) Spooled(key string, t int64) {
	b := g.open[key]
	if b == nil || b.Agg.Count == 0 {
		return
	}
	emitted := b.Res.Bucket(t) // a gauge's reading is at its bucket's start
	if b.Kind == Counter {
		emitted = b.Res.Bucket(t - 1) // a counter's at its end
	}
	if emitted >= b.Start {
		b.Done, b.HasDone = b.Start, true
		b.Agg, b.Q = rollup.Agg{}, 0
	}
}

// Through returns, per stream with aggregation state, the time of the
// newest reading aggregated: a replaying source resumes after it.
func (g *Aggregator) Through() map[string]int64 {
	out := map[string]int64{}
	for key, b := range g.open {
		t := int64(-1)
		if b.HasDone {
			t = b.Res.Next(b.Done) - 1
		}
		if b.Agg.Count > 0 {
			t = max(t, b.Agg.LastTime)
		}
		if t >= 0 {
			out[key] = t
		}
	}
	return out
}

// Stats returns the counters.
func (g *Aggregator) Stats() Stats { return g.stats }

// Open reports how many streams have an open bucket.
func (g *Aggregator) Open() int {
	n := 0
	for _, b := range g.open {
		if b.Agg.Count > 0 {
			n++
		}
	}
	return n
}

// state is the saved form of an Aggregator.
type state struct {
	Version int                `json:"version"`
	Streams map[string]*bucket `json:"streams"`
}

// MarshalState encodes the aggregator's state: open buckets and what was
// emitted last, per stream.
func (g *Aggregator) MarshalState() ([]byte, error) {
	return json.Marshal(state{Version: 1, Streams: g.open})
}

// RestoreAggregator decodes a state written by MarshalState. Readings at
// or before a restored bucket's newest reading are treated as already
// aggregated (see Add). now is the wall clock, from which restored streams
// count as idle.
func RestoreAggregator(data []byte, now time.Time) (*Aggregator, error) {
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("collection: aggregator state: %w", err)
	}
	if s.Version != 1 {
		return nil, fmt.Errorf("collection: aggregator state version %d unknown", s.Version)
	}
	g := NewAggregator()
	for key, b := range s.Streams {
		if b == nil || !b.Res.Valid() || b.Res == rollup.Raw || (b.Kind != Gauge && b.Kind != Counter) || b.Agg.Count < 0 {
			return nil, fmt.Errorf("collection: aggregator state: stream %d is malformed", len(g.open))
		}
		if b.Agg.Count > 0 {
			b.Floor = b.Agg.LastTime
			b.Seen = now
		}
		g.open[key] = b
	}
	return g, nil
}
