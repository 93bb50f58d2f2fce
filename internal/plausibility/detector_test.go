package plausibility

import (
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/wire"
)

var t0 = time.Date(2024, 3, 4, 0, 0, 0, 0, time.UTC).UnixMilli() // a Monday

const min5 = 5 * 60_000

func newDet(t testing.TB) *Detector {
	d, err := New(Config{Now: func() time.Time { return time.UnixMilli(t0 + 365*msPerDay) }})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// series returns n readings every 5 minutes from start with values f(i).
func series(start int64, n int, f func(i int) float64) []wire.Reading {
	rs := make([]wire.Reading, n)
	for i := range rs {
		rs[i] = wire.Reading{Time: start + int64(i)*min5, Value: f(i)}
	}
	return rs
}

// secs returns n readings every second from start with values f(i).
func secs(start int64, n int, f func(i int) float64) []wire.Reading {
	rs := make([]wire.Reading, n)
	for i := range rs {
		rs[i] = wire.Reading{Time: start + int64(i)*1000, Value: f(i)}
	}
	return rs
}

// wobble is a non-repeating load around 450 W.
func wobble(i int) float64 {
	h := uint64(i)*0x9e3779b97f4a7c15 + 1
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 32
	return 400 + float64(h%1000)/10
}

func flaggedRules(vs []Verdict) map[int][]Rule {
	m := map[int][]Rule{}
	for _, v := range vs {
		for _, r := range v.Reasons {
			m[v.Index] = append(m[v.Index], r.Rule)
		}
	}
	return m
}

func has(vs []Verdict, i int, r Rule) bool {
	for _, v := range vs {
		if v.Index == i && v.Has(r) {
			return true
		}
	}
	return false
}

func ctxFor(kind Kind) StreamContext {
	return StreamContext{Tenant: "ten_x", Stream: "str_x", Kind: kind, Site: Site{MaxPowerW: 10000}}
}

func TestRules(t *testing.T) {
	recvAfter := func(rs []wire.Reading) int64 { return rs[len(rs)-1].Time + 60_000 }
	for _, tc := range []struct {
		name  string
		ctx   func() StreamContext
		prep  []wire.Reading // accepted history
		batch []wire.Reading
		want  Rule // flagged on the last reading of batch; 0 = nothing flagged
	}{
		{"limit exactly at connection limit + tolerance", func() StreamContext { return ctxFor(KindPower) },
			nil, []wire.Reading{{Time: t0, Value: 11000}}, 0},
		{"limit just above", func() StreamContext { return ctxFor(KindPower) },
			nil, []wire.Reading{{Time: t0, Value: 11000.001}}, RuleLimit},
		{"negative not net-metered", func() StreamContext { return ctxFor(KindPower) },
			nil, []wire.Reading{{Time: t0, Value: -5}}, RuleNegative},
		{"negative net-metered", func() StreamContext { c := ctxFor(KindPower); c.Site.NetMetered = true; return c },
			nil, []wire.Reading{{Time: t0, Value: -5000}}, 0},
		{"duplicate time", func() StreamContext { return ctxFor(KindPower) },
			[]wire.Reading{{Time: t0, Value: 10}}, []wire.Reading{{Time: t0, Value: 11}}, RuleDuplicate},
		{"out of order", func() StreamContext { return ctxFor(KindPower) },
			[]wire.Reading{{Time: t0, Value: 10}}, []wire.Reading{{Time: t0 - min5, Value: 11}}, RuleOutOfOrder},
		{"frozen third identical", func() StreamContext { return ctxFor(KindPower) },
			nil, series(t0, 3, func(int) float64 { return 321.5 }), RuleFrozen},
		{"zeros are not frozen", func() StreamContext { return ctxFor(KindPower) },
			nil, series(t0, 10, func(int) float64 { return 0 }), 0},
		{"1 Hz: three identical seconds are not frozen", func() StreamContext { return ctxFor(KindPower) },
			nil, secs(t0, 3, func(int) float64 { return 321 }), 0},
		{"1 Hz: identical for 10 minutes is frozen", func() StreamContext { return ctxFor(KindPower) },
			nil, secs(t0, 601, func(i int) float64 { return 321 }), RuleFrozen},
		{"two identical are not frozen", func() StreamContext { return ctxFor(KindPower) },
			nil, series(t0, 2, func(int) float64 { return 321.5 }), 0},
		{"temperature rate", func() StreamContext { return ctxFor(KindTemperature) },
			[]wire.Reading{{Time: t0, Value: 10}}, []wire.Reading{{Time: t0 + min5, Value: 40}}, RuleRate},
		{"temperature rate exactly at limit", func() StreamContext { return ctxFor(KindTemperature) },
			[]wire.Reading{{Time: t0, Value: 10}}, []wire.Reading{{Time: t0 + min5, Value: 20}}, 0},
		{"counter backwards", func() StreamContext { return ctxFor(KindEnergy) },
			[]wire.Reading{{Time: t0, Value: 5000}}, []wire.Reading{{Time: t0 + min5, Value: 4999}}, RuleCounterBackwards},
		{"counter reset to zero without replacement", func() StreamContext { return ctxFor(KindEnergy) },
			[]wire.Reading{{Time: t0, Value: 5e6}}, []wire.Reading{{Time: t0 + min5, Value: 2}}, RuleCounterBackwards},
		{"counter reset with recorded replacement", func() StreamContext {
			c := ctxFor(KindEnergy)
			c.ReplacedAt = t0 + 60_000
			return c
		}, []wire.Reading{{Time: t0, Value: 5e6}}, []wire.Reading{{Time: t0 + min5, Value: 2}, {Time: t0 + 2*min5, Value: 40}}, 0},
		{"counter reset after a replacement at the old meter's last reading", func() StreamContext {
			c := ctxFor(KindEnergy)
			c.ReplacedAt = t0
			return c
		}, []wire.Reading{{Time: t0, Value: 5e6}}, []wire.Reading{{Time: t0 + min5, Value: 2}, {Time: t0 + 2*min5, Value: 40}}, 0},
		{"a replacement lets one reading restart", func() StreamContext {
			c := ctxFor(KindEnergy)
			c.ReplacedAt = t0 + 60_000
			return c
		}, []wire.Reading{{Time: t0, Value: 5e6}, {Time: t0 + min5, Value: 2}}, []wire.Reading{{Time: t0 + 2*min5, Value: 1}}, RuleCounterBackwards},
		{"counter rollover", func() StreamContext { c := ctxFor(KindEnergy); c.CounterWrap = 1e8; return c },
			[]wire.Reading{{Time: t0, Value: 1e8 - 100}}, []wire.Reading{{Time: t0 + min5, Value: 200}}, 0},
		{"counter rollover too fast", func() StreamContext { c := ctxFor(KindEnergy); c.CounterWrap = 1e8; return c },
			[]wire.Reading{{Time: t0, Value: 1e8 - 100}}, []wire.Reading{{Time: t0 + min5, Value: 5000}}, RuleCounterBackwards},
		{"counter at the rate limit", func() StreamContext { return ctxFor(KindEnergy) },
			// 10 kW × 1.1 for 5 minutes = 916.67 Wh, plus 1 Wh of resolution
			[]wire.Reading{{Time: t0, Value: 1000}}, []wire.Reading{{Time: t0 + min5, Value: 1000 + 11000.0/12 + 1}}, 0},
		{"counter above the rate limit", func() StreamContext { return ctxFor(KindEnergy) },
			[]wire.Reading{{Time: t0, Value: 1000}}, []wire.Reading{{Time: t0 + min5, Value: 1000 + 11000.0/12 + 2}}, RuleRate},
		{"meter identity mismatch", func() StreamContext { c := ctxFor(KindPower); c.MeterID, c.BoundMeterID = "m2", "m1"; return c },
			nil, []wire.Reading{{Time: t0, Value: 10}}, RuleMeterIdentity},
		{"meter identity missing", func() StreamContext { c := ctxFor(KindPower); c.BoundMeterID = "m1"; return c },
			nil, []wire.Reading{{Time: t0, Value: 10}}, RuleMeterIdentity},
		{"PV at night", func() StreamContext {
			c := ctxFor(KindPower)
			c.Production, c.Site.HasLocation, c.Site.Lat, c.Site.Lon = true, true, 52.5, 13.4
			return c
		}, nil, []wire.Reading{{Time: t0 + 23*msPerHour, Value: 800}}, RuleNight},
		{"PV at noon", func() StreamContext {
			c := ctxFor(KindPower)
			c.Production, c.Site.HasLocation, c.Site.Lat, c.Site.Lon = true, true, 52.5, 13.4
			return c
		}, nil, []wire.Reading{{Time: t0 + 11*msPerHour, Value: 800}}, 0},
		{"PV outside configured daylight window", func() StreamContext {
			c := ctxFor(KindPower)
			c.Production, c.Site.DaylightFrom, c.Site.DaylightTo = true, 6*60, 18*60
			return c
		}, nil, []wire.Reading{{Time: t0 + 19*msPerHour, Value: 800}}, RuleNight},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDet(t)
			ctx := tc.ctx()
			if tc.prep != nil {
				ctx.Received = recvAfter(tc.prep)
				if vs := d.Check(ctx, tc.prep); vs != nil {
					t.Fatalf("history flagged: %v", flaggedRules(vs))
				}
			}
			ctx.Received = recvAfter(tc.batch)
			vs := d.Check(ctx, tc.batch)
			last := len(tc.batch) - 1
			if tc.want == 0 {
				if vs != nil {
					t.Fatalf("flagged %v, want nothing", flaggedRules(vs))
				}
				return
			}
			if !has(vs, last, tc.want) {
				t.Fatalf("got %v, want %s on reading %d", flaggedRules(vs), tc.want, last)
			}
		})
	}
}

func TestTimeRules(t *testing.T) {
	d := newDet(t)
	ctx := ctxFor(KindPower)
	ctx.Received = t0
	vs := d.Check(ctx, []wire.Reading{
		{Time: t0 + 2*60_000, Value: 1},        // exactly at the skew allowance
		{Time: t0 + 2*60_000 + 1, Value: 2},    // beyond
		{Time: t0 - 90*msPerDay - 1, Value: 3}, // too old (and out of order)
		{Time: t0 + 2*60_000 + 10, Value: 4},   // future again
	})
	if has(vs, 0, RuleFuture) || !has(vs, 1, RuleFuture) || !has(vs, 2, RuleTooOld) || !has(vs, 3, RuleFuture) {
		t.Fatalf("got %v", flaggedRules(vs))
	}
}

func TestGapIsANote(t *testing.T) {
	d := newDet(t)
	ctx := ctxFor(KindPower)
	ctx.Received = t0 + 10*msPerHour
	vs := d.Check(ctx, []wire.Reading{{Time: t0, Value: 100}, {Time: t0 + 2*msPerHour, Value: 120}})
	if len(vs) != 1 || !vs[0].Has(RuleGap) || vs[0].Quarantine() {
		t.Fatalf("got %+v", vs)
	}
}

func TestClockJump(t *testing.T) {
	d := newDet(t)
	ctx := ctxFor(KindPower)
	v := 0
	batch := func(from int64, recv int64) []Verdict {
		ctx.Received = recv
		return d.Check(ctx, series(from, 3, func(i int) float64 { v++; return wobble(v) }))
	}
	// Live batches every 15 minutes, then the clock goes back by an hour.
	for k := range int64(8) {
		if vs := batch(t0+k*3*min5, t0+(k+1)*3*min5+30_000); vs != nil {
			t.Fatalf("batch %d flagged: %v", k, flaggedRules(vs))
		}
	}
	vs := batch(t0+9*3*min5-msPerHour, t0+10*3*min5+30_000)
	if !has(vs, 0, RuleOutOfOrder) {
		t.Fatalf("overlap not flagged: %v", flaggedRules(vs))
	}
	vs = batch(t0+12*3*min5-msPerHour+min5, t0+13*3*min5+30_000) // still behind but newer than accepted: a live batch an hour late
	if !has(vs, 2, RuleClockJump) {
		t.Fatalf("lagging clock not flagged: %v", flaggedRules(vs))
	}
	// A backfill after a 6-hour outage is not a clock jump.
	d2 := newDet(t)
	ctx.Stream = "str_y"
	d = d2
	for k := range int64(4) {
		if vs := batch(t0+k*3*min5, t0+(k+1)*3*min5+30_000); vs != nil {
			t.Fatal(flaggedRules(vs))
		}
	}
	ctx.Received = t0 + 4*3*min5 + 6*msPerHour + 30_000
	if vs := d.Check(ctx, series(t0+4*3*min5, 72, func(i int) float64 { return wobble(i + 100) })); vs != nil {
		t.Fatalf("backfill flagged: %v", flaggedRules(vs))
	}
}

func TestReplay(t *testing.T) {
	d := newDet(t)
	ctx := ctxFor(KindPower)
	day := series(t0, 288, func(i int) float64 { return wobble(i) })
	ctx.Received = t0 + msPerDay
	if vs := d.Check(ctx, day); vs != nil {
		t.Fatalf("first day flagged: %v", flaggedRules(vs))
	}
	replay := make([]wire.Reading, len(day))
	for i, r := range day {
		replay[i] = wire.Reading{Time: r.Time + msPerDay, Value: r.Value}
	}
	ctx.Received = t0 + 2*msPerDay
	vs := d.Check(ctx, replay)
	if len(vs) < 286 || vs[0].Index != 2 {
		t.Fatalf("replay: %d flagged, first %v", len(vs), vs[0].Index)
	}
}

// TestDSTDay: households live by local time, so on the EU DST day their
// load moves by an hour in UTC. The baseline buckets by solar time and
// must not flag the shifted day.
func TestDSTDay(t *testing.T) {
	d := newDet(t)
	ctx := ctxFor(KindPower)
	ctx.Site.HasLocation, ctx.Site.Lat, ctx.Site.Lon = true, 52.5, 13.4
	start := time.Date(2024, 3, 3, 0, 0, 0, 0, time.UTC).UnixMilli()
	dst := time.Date(2024, 3, 31, 1, 0, 0, 0, time.UTC).UnixMilli()
	load := func(t int64, i int) float64 {
		off := int64(msPerHour)
		if t >= dst {
			off = 2 * msPerHour
		}
		h := ((t + off) % msPerDay) / msPerHour
		base := 250.0
		if h >= 17 && h < 22 {
			base = 900
		}
		return base + wobble(i)/10
	}
	for day := range 35 { // spans the leap-free March 31st DST day and a week after
		rs := series(start+int64(day)*msPerDay, 288, nil2)
		for i := range rs {
			rs[i].Value = load(rs[i].Time, day*288+i)
		}
		ctx.Received = rs[len(rs)-1].Time + 60_000
		vs := d.Check(ctx, rs)
		for _, v := range vs {
			if v.Quarantine() {
				t.Fatalf("day %d (%s): reading %d flagged %v", day, time.UnixMilli(rs[0].Time).UTC().Format(time.DateOnly), v.Index, v.Reasons)
			}
		}
	}
}

func nil2(int) float64 { return 0 }

// TestLeapDay: February 29th is an ordinary day for every rule.
func TestLeapDay(t *testing.T) {
	d := newDet(t)
	ctx := ctxFor(KindEnergy)
	start := time.Date(2024, 2, 28, 0, 0, 0, 0, time.UTC).UnixMilli()
	rs := series(start, 3*288, func(i int) float64 { return 1000 + float64(i)*40 })
	ctx.Received = rs[len(rs)-1].Time + 60_000
	if vs := d.Check(ctx, rs); vs != nil {
		t.Fatalf("flagged %v", flaggedRules(vs))
	}
	if b := bucketOf(time.Date(2024, 2, 29, 13, 0, 0, 0, time.UTC).UnixMilli()); b != 13 { // a Thursday
		t.Fatalf("bucket %d", b)
	}
	if b := bucketOf(time.Date(2024, 3, 2, 13, 0, 0, 0, time.UTC).UnixMilli()); b != 24+13 { // a Saturday
		t.Fatalf("bucket %d", b)
	}
}

func TestBaselineFlagsOutlier(t *testing.T) {
	d := newDet(t)
	ctx := ctxFor(KindTemperature)
	for day := range 7 {
		rs := series(t0+int64(day)*msPerDay, 288, func(i int) float64 { return 10 + float64(i%3)*0.1 })
		ctx.Received = rs[len(rs)-1].Time + 60_000
		if vs := d.Check(ctx, rs); vs != nil {
			t.Fatalf("day %d flagged %v", day, flaggedRules(vs))
		}
	}
	rs := series(t0+7*msPerDay, 2, func(i int) float64 { return 10 + float64(i)*9.5 }) // within the rate limit, far off baseline
	ctx.Received = rs[1].Time + 60_000
	if vs := d.Check(ctx, rs); !has(vs, 1, RuleBaseline) {
		t.Fatalf("got %v", flaggedRules(vs))
	}
}

func TestCheckSite(t *testing.T) {
	d := newDet(t)
	ss := []SiteSeries{
		{RoleImport, []wire.Reading{rd(t0, 500), rd(t0+min5, 100), rd(t0+2*min5, 0)}},
		{RoleExport, []wire.Reading{rd(t0, 0), rd(t0+min5, 0), rd(t0+2*min5, 5000)}},
		{RoleProduction, []wire.Reading{rd(t0, 0), rd(t0+min5, 0), rd(t0+2*min5, 1000)}},
		{RoleLoad, []wire.Reading{rd(t0, 400), rd(t0+min5, 3000), rd(t0+2*min5, 0)}},
	}
	got := d.CheckSite("ten_x", ss)
	if len(got) != 2 || got[0].Series != 0 || got[0].Index != 1 || got[1].Series != 1 || got[1].Index != 2 {
		t.Fatalf("got %+v", got)
	}
	if a := testing.AllocsPerRun(100, func() { d.CheckSite("ten_x", ss[:1]) }); a != 0 {
		t.Fatalf("%v allocs", a)
	}
}

func TestUnknownKindFailsClosed(t *testing.T) {
	d := newDet(t)
	vs := d.Check(StreamContext{Stream: "s"}, []wire.Reading{{Time: t0, Value: 1}})
	if !has(vs, 0, RuleConfig) {
		t.Fatal(vs)
	}
}

func TestCleanCheckDoesNotAllocate(t *testing.T) {
	d := newDet(t)
	ctx := ctxFor(KindPower)
	ctx.Site.HasLocation, ctx.Site.Lat, ctx.Site.Lon = true, 52.5, 13.4
	i := 0
	rs := make([]wire.Reading, 100)
	next := func() {
		for j := range rs {
			rs[j] = wire.Reading{Time: t0 + int64(i)*min5, Value: wobble(i)}
			i++
		}
		ctx.Received = rs[len(rs)-1].Time + 30_000
	}
	for range 10 {
		next()
		d.Check(ctx, rs)
	}
	if a := testing.AllocsPerRun(50, func() {
		next()
		if vs := d.Check(ctx, rs); vs != nil {
			t.Fatal(flaggedRules(vs))
		}
	}); a != 0 {
		t.Fatalf("%v allocs per clean batch", a)
	}
}

func rd(t int64, v float64) wire.Reading { return wire.Reading{Time: t, Value: v} }

// TestReplayFastStream: on a 1 Hz stream a replayed hour is caught after
// the first sampled windows, while a coarse random walk, whose short
// windows repeat by chance, is not flagged.
func TestReplayFastStream(t *testing.T) {
	d := newDet(t)
	ctx := ctxFor(KindPower)
	// Coarse 1 Hz random walk in whole watts: clean.
	v, flagged := 1000.0, 0
	var hour []float64
	h := uint64(1)
	for b := range 240 { // 240 batches of 100 s
		rs := make([]wire.Reading, 100)
		for j := range rs {
			h = h*6364136223846793005 + 1442695040888963407
			v = max(1, v+float64(int(h>>33)%61-30))
			rs[j] = wire.Reading{Time: t0 + int64(b*100+j)*1000, Value: v}
			if b < 36 {
				hour = append(hour, v)
			}
		}
		ctx.Received = rs[99].Time + 1000
		flagged += len(d.Check(ctx, rs))
	}
	if flagged != 0 {
		t.Fatalf("%d clean readings flagged", flagged)
	}
	// The first hour's values again, as if new: most are caught.
	next := t0 + 240*100*1000
	caught := 0
	for b := range 36 {
		rs := make([]wire.Reading, 100)
		for j := range rs {
			rs[j] = wire.Reading{Time: next + int64(b*100+j)*1000, Value: hour[b*100+j]}
		}
		ctx.Received = rs[99].Time + 1000
		for _, vd := range d.Check(ctx, rs) {
			if vd.Has(RuleReplay) {
				caught++
			}
		}
	}
	if caught < len(hour)*3/4 {
		t.Fatalf("replayed hour: %d of %d readings caught", caught, len(hour))
	}
	t.Logf("replayed hour at 1 Hz: %d of %d readings caught", caught, len(hour))
}

// TestBaselineFastStream: a 1 Hz stream learns once per 5 minutes but
// every reading is scored: an outlier between two learning points is
// flagged, and clean readings are not.
func TestBaselineFastStream(t *testing.T) {
	d := newDet(t)
	ctx := ctxFor(KindPower)
	ctx.Site.MaxPowerW = 43470
	const day = 86_400
	flagged := 0
	for b := range 3 * day / 600 { // three days in batches of 10 minutes
		rs := secs(t0+int64(b)*600_000, 600, func(i int) float64 { return wobble(b*600+i) / 100 })
		ctx.Received = rs[len(rs)-1].Time + 1000
		flagged += len(d.Check(ctx, rs))
	}
	if flagged > 0 {
		t.Fatalf("%d clean readings flagged", flagged)
	}
	next := t0 + 3*day*1000
	rs := secs(next, 600, func(i int) float64 { return wobble(i) / 100 })
	rs[437].Value = 20000 // far from a standby load of ~4.5 W, yet within the connection limit
	ctx.Received = rs[599].Time + 1000
	vs := d.Check(ctx, rs)
	if len(vs) != 1 || vs[0].Index != 437 || !vs[0].Has(RuleBaseline) {
		t.Fatalf("outlier between learning points: %v", flaggedRules(vs))
	}
}

func TestMeterMismatch(t *testing.T) {
	const at = 1_000
	for _, tc := range []struct {
		name                      string
		reported, bound, previous string
		maxT                      int64
		want                      bool
	}{
		{"no binding", "x", "", "", 5_000, false},
		{"the bound meter", "m2", "m2", "m1", 5_000, false},
		{"another meter", "m3", "m2", "m1", 5_000, true},
		{"none reported", "", "m2", "m1", 500, true},
		{"the replaced meter before the replacement", "m1", "m2", "m1", at - 1, false},
		{"the replaced meter at the replacement", "m1", "m2", "m1", at, true},
		{"the replaced meter after it", "m1", "m2", "m1", 5_000, true},
		{"none reported, no previous", "", "m2", "", 500, true},
	} {
		if got := MeterMismatch(tc.reported, tc.bound, tc.previous, at, tc.maxT); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
