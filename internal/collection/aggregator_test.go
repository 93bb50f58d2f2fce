package collection

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/wire"
)

var t0 = time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC).UnixMilli() // a DST change day in Europe: irrelevant, buckets are UTC

const m15 = 15 * 60_000

type out struct {
	key string
	r   wire.Reading
}

func collect(got *[]out) Emit {
	return func(key string, r wire.Reading) { *got = append(*got, out{key, r}) }
}

func pol(res rollup.Resolution, k Kind) StreamPolicy {
	return StreamPolicy{Key: "k", Policy: Policy{Send: true, Finest: res}, Kind: k}
}

func TestGaugeMean(t *testing.T) {
	g := NewAggregator()
	var got []out
	now := time.Unix(0, 0)
	p := pol(rollup.Min15, Gauge)
	// 0..899 s in the first bucket, values 0..899: mean 449.5.
	for i := range 900 {
		g.Add("k", p, true, wire.Reading{Time: t0 + int64(i)*1000, Value: float64(i)}, now, collect(&got))
	}
	if len(got) != 0 {
		t.Fatalf("emitted %v before the bucket closed", got)
	}
	// The first reading of the next bucket closes it.
	g.Add("k", p, true, wire.Reading{Time: t0 + m15, Value: 7, Quality: wire.QualityUncertain}, now, collect(&got))
	want := []out{{"k", wire.Reading{Time: t0, Value: 449.5}}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// Idle close: the second bucket's end has passed and the stream is quiet.
	g.CloseIdle(time.UnixMilli(t0+2*m15), time.Minute, collect(&got))
	if len(got) != 2 || got[1].r != (wire.Reading{Time: t0 + m15, Value: 7, Quality: wire.QualityUncertain}) {
		t.Fatalf("idle close: %v", got)
	}
	if st := g.Stats(); st.Folded != 901 || st.Emitted != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestCounterLastAtEnd(t *testing.T) {
	g := NewAggregator()
	var got []out
	p := pol(rollup.Hour, Counter)
	for i := range 120 { // two hours, one reading a minute, +10 Wh each
		g.Add("k", p, true, wire.Reading{Time: t0 + int64(i)*60_000 + 30_000, Value: 1000 + 10*float64(i)}, time.Time{}, collect(&got))
	}
	want := []out{{"k", wire.Reading{Time: t0 + 3_600_000, Value: 1000 + 10*59}}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestOutOfOrderAndLate(t *testing.T) {
	g := NewAggregator()
	var got []out
	p := pol(rollup.Min15, Gauge)
	add := func(ms int64, v float64) {
		g.Add("k", p, true, wire.Reading{Time: t0 + ms, Value: v}, time.Time{}, collect(&got))
	}
	add(2000, 2)
	add(1000, 4) // out of order, same bucket: counts
	add(m15+1, 10)
	add(3000, 100)        // its bucket was emitted: late, dropped
	add(m15, 20)          // out of order within the open bucket
	add(2*m15+5, 0)       // closes the second bucket
	add(m15+500, 1e9)     // late again
	add(math.MaxInt32, 0) // far ahead: closes the third
	want := []out{{"k", wire.Reading{Time: t0, Value: 3}}, {"k", wire.Reading{Time: t0 + m15, Value: 15}}, {"k", wire.Reading{Time: t0 + 2*m15, Value: 0}}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if st := g.Stats(); st.Late != 2 {
		t.Errorf("late = %d, want 2", st.Late)
	}
}

// TestRestartMidBucket: state saved mid-bucket and restored gives the same
// mean as an uninterrupted run; readings replayed after the restart are
// not counted twice; a bucket already in the spool is not sent again.
func TestRestartMidBucket(t *testing.T) {
	p := pol(rollup.Min15, Gauge)
	run := func(g *Aggregator, from, to int, got *[]out) {
		for i := from; i < to; i++ {
			g.Add("k", p, true, wire.Reading{Time: t0 + int64(i)*1000, Value: float64(i % 97)}, time.Time{}, collect(got))
		}
	}
	var straight []out
	g := NewAggregator()
	run(g, 0, 2000, &straight)

	var got []out
	g = NewAggregator()
	run(g, 0, 400, &got)
	st, err := g.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	g, err = RestoreAggregator(st, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	run(g, 300, 2000, &got) // a replaying source sends 300..399 again
	if !slices.Equal(got, straight) {
		t.Fatalf("after restart: %v\nstraight:      %v", got, straight)
	}

	// A crash after the spool took bucket 1's reading but before the state
	// was saved: the saved state still has bucket 1 open.
	got = nil
	g = NewAggregator()
	run(g, 0, 1799, &got) // bucket 1 (900..1799) open, 1799 not yet
	st, _ = g.MarshalState()
	run(g, 1799, 1801, &got) // 1800 closes bucket 1: "spooled"
	spooledAt := got[len(got)-1].r.Time
	g, _ = RestoreAggregator(st, time.Time{})
	g.Spooled("k", spooledAt)
	got = nil
	run(g, 1799, 2000, &got)
	if len(got) != 0 {
		t.Fatalf("bucket sent twice: %v", got)
	}
	if th := g.Through()["k"]; th != t0+1999_000 {
		t.Errorf("through = %d", th-t0)
	}
}

func TestPolicyChanges(t *testing.T) {
	g := NewAggregator()
	var got []out
	e := collect(&got)
	g.Add("k", pol(rollup.Raw, Gauge), true, wire.Reading{Time: t0, Value: 1}, time.Time{}, e)
	g.Add("k", pol(rollup.Min15, Gauge), true, wire.Reading{Time: t0 + 1000, Value: 2}, time.Time{}, e)
	g.Add("k", pol(rollup.Raw, Gauge), true, wire.Reading{Time: t0 + 2000, Value: 3}, time.Time{}, e) // partial 15m bucket flushed first
	g.Add("k", pol(rollup.Min15, Gauge), true, wire.Reading{Time: t0 + 3000, Value: 4}, time.Time{}, e)
	g.Add("k", StreamPolicy{Key: "k", Policy: Policy{Send: false, Finest: rollup.Raw}}, true, wire.Reading{Time: t0 + 4000, Value: 5}, time.Time{}, e) // off: open bucket discarded
	g.Add("k", StreamPolicy{}, false, wire.Reading{Time: t0 + 5000, Value: 6}, time.Time{}, e)                                                         // unknown stream
	g.CloseIdle(time.UnixMilli(t0+10*m15), 0, e)
	want := []out{{"k", wire.Reading{Time: t0, Value: 1}}, {"k", wire.Reading{Time: t0, Value: 2}}, {"k", wire.Reading{Time: t0 + 2000, Value: 3}}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if st := g.Stats(); st.Off != 1 || st.Unknown != 1 || st.Passed != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestRestoreRejectsGarbage(t *testing.T) {
	for _, s := range []string{``, `{}`, `{"version":2}`, `{"version":1,"streams":{"k":{"res":"raw","kind":"gauge"}}}`, `{"version":1,"streams":{"k":{"res":"15m","kind":"x"}}}`, `{"version":1,"streams":{"k":null}}`} {
		if _, err := RestoreAggregator([]byte(s), time.Time{}); err == nil {
			t.Errorf("restored %q", s)
		}
	}
}

func TestRuleFilter(t *testing.T) {
	rs := func(ts ...int64) []wire.Reading {
		var out []wire.Reading
		for _, x := range ts {
			out = append(out, wire.Reading{Time: t0 + x, Value: 1})
		}
		return out
	}
	off := Policy{Send: false, Finest: rollup.Raw}
	q15 := Policy{Send: true, Finest: rollup.Min15}
	eff := t0 + 10*m15
	for _, c := range []struct {
		name string
		rule Rule
		in   []wire.Reading
		keep int
		why  Refusal
	}{
		{"default", DefaultRule, rs(1, 2, 3), 3, ""},
		{"15m aligned", Rule{q15, Default, eff}, rs(0, m15, 20*m15), 3, ""},
		{"15m raw before grace end", Rule{q15, Default, eff}, rs(1, 2, 3), 3, ""},
		{"15m raw after grace", Rule{q15, Default, eff}, rs(10*m15, 10*m15+1, 11*m15), 2, RefusedFiner},
		{"15m twice per bucket", Rule{q15, q15, eff}, []wire.Reading{{Time: t0, Value: 1}, {Time: t0, Value: 2}}, 1, RefusedFiner},
		{"off", Rule{off, off, 0}, rs(0, m15), 0, RefusedOff},
		{"off after grace, raw before", Rule{off, Default, eff}, rs(5, 10*m15), 1, RefusedOff},
		{"invalid fails closed", Rule{Policy{Send: true, Finest: "2m"}, Policy{Send: true, Finest: "2m"}, 0}, rs(0), 0, RefusedFiner},
	} {
		keep, n, why := c.rule.Filter(c.in)
		if len(keep) != c.keep || n != len(c.in)-c.keep || why != c.why {
			t.Errorf("%s: kept %d refused %d (%q), want kept %d (%q)", c.name, len(keep), n, why, c.keep, c.why)
		}
	}
}

func TestKindOfAndParse(t *testing.T) {
	for u, k := range map[string]Kind{"W": Gauge, "Wh": Counter, "kWh": Counter, "°C": Gauge, "m³": Counter, "": Gauge} {
		if KindOf(u) != k {
			t.Errorf("KindOf(%q) = %s", u, KindOf(u))
		}
	}
	for _, s := range []string{"off", "raw", "15m", "1h", "1d", "1mo"} {
		p, err := Parse(s)
		if err != nil || p.String() != s {
			t.Errorf("Parse(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := Parse("5m"); err == nil {
		t.Error("Parse(5m) succeeded")
	}
	d := NewDocument([]StreamPolicy{{Key: "b"}, {Key: "a", Policy: Default}})
	if p, ok := d.Lookup("a"); !ok || p.Policy != Default {
		t.Errorf("lookup a: %v %v", p, ok)
	}
	if _, ok := d.Lookup("c"); ok {
		t.Error("lookup c")
	}
	if d2 := NewDocument([]StreamPolicy{{Key: "a", Policy: Default}, {Key: "b"}}); d2.Version != d.Version {
		t.Error("version depends on order")
	}
}

func FuzzRestoreAggregator(f *testing.F) {
	g := NewAggregator()
	for i := range 100 {
		g.Add("k", pol(rollup.Min15, Gauge), true, wire.Reading{Time: t0 + int64(i)*60_000, Value: float64(i)}, time.Time{}, func(string, wire.Reading) {})
	}
	st, _ := g.MarshalState()
	f.Add(st)
	f.Add([]byte(`{"version":1,"streams":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := RestoreAggregator(data, time.Time{})
		if err != nil {
			return
		}
		// A restored aggregator keeps working.
		for i := range 3 {
			for key := range g.open {
				g.Add(key, pol(rollup.Hour, Counter), true, wire.Reading{Time: t0 + int64(i)*m15, Value: 1}, time.Time{}, func(string, wire.Reading) {})
			}
		}
		g.CloseIdle(time.UnixMilli(t0+1e9), 0, func(string, wire.Reading) {})
		if _, err := g.MarshalState(); err != nil {
			t.Fatal(err)
		}
	})
}

func BenchmarkAggregatorAdd(b *testing.B) {
	g := NewAggregator()
	p := pol(rollup.Min15, Gauge)
	emit := func(string, wire.Reading) {}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		g.Add("k", p, true, wire.Reading{Time: t0 + int64(i)*1000, Value: float64(i)}, time.Time{}, emit)
	}
}

func BenchmarkRuleFilter(b *testing.B) {
	rs := make([]wire.Reading, 1000)
	for i := range rs {
		rs[i] = wire.Reading{Time: t0 + int64(i)*m15, Value: 1}
	}
	r := Rule{Current: Policy{Send: true, Finest: rollup.Min15}, Previous: Default, Effective: t0}
	b.ReportAllocs()
	for b.Loop() {
		r.Filter(rs)
	}
}
