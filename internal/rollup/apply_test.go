package rollup

import (
	"cmp"
	"encoding/json"
	"flag"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/wire"
)

var seedFlag = flag.Uint64("seed", 0, "seed of the property tests (0: random)")

// newRand returns a generator seeded from -seed or at random, logging the
// seed so that a failure can be replayed with -seed.
func newRand(t testing.TB) *rand.Rand {
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -seed %d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func TestAggTieBreaks(t *testing.T) {
	rs := []wire.Reading{
		{Time: 100, Value: 5}, {Time: 100, Value: 3}, {Time: 100, Value: 4},
		{Time: 200, Value: 1}, {Time: 200, Value: 9}, {Time: 200, Value: 2},
	}
	want := Agg{Count: 6, Sum: 24, Min: 1, Max: 9, FirstTime: 100, First: 3, LastTime: 200, Last: 9}
	perm := []int{0, 1, 2, 3, 4, 5}
	for range 200 {
		rand.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		var a, b, c Agg
		for k, i := range perm {
			a.Add(rs[i])
			if k%2 == 0 {
				b.Add(rs[i])
			} else {
				c.Add(rs[i])
			}
		}
		c.Merge(b)
		if a != want || c != want {
			t.Fatalf("order %v: Add gives %+v, Merge %+v, want %+v", perm, a, c, want)
		}
	}
}

func TestAggExclusions(t *testing.T) {
	var a Agg
	for _, r := range []wire.Reading{
		{Time: 1, Value: 1e6, Quality: wire.QualityBad},
		{Time: 1, Value: -7, Quality: wire.QualityBad | wire.QualityUncertain},
		{Time: 2, Value: math.NaN()},
		{Time: 2, Value: math.Inf(-1)},
		{Time: maxTime, Value: 1},
		{Time: minTime - 1, Value: 1},
	} {
		a.Add(r)
	}
	if a != (Agg{}) {
		t.Fatalf("readings that do not count changed the aggregate: %+v", a)
	}
	// Other quality flags count.
	a.Add(wire.Reading{Time: 3, Value: 2, Quality: wire.QualityUncertain | wire.QualitySubstituted | wire.QualityClockUnsynced})
	a.Add(wire.Reading{Time: 4, Value: math.Copysign(0, -1)})
	want := Agg{Count: 2, Sum: 2, Min: 0, Max: 2, FirstTime: 3, First: 2, LastTime: 4, Last: 0}
	if a != want || math.Signbit(a.Min) || math.Signbit(a.Last) {
		t.Fatalf("got %+v, want %+v with positive zeros", a, want)
	}
	if a.Mean() != 1 || a.Delta() != -2 || (Agg{}).Mean() != 0 {
		t.Fatalf("Mean %v, Delta %v, empty Mean %v", a.Mean(), a.Delta(), (Agg{}).Mean())
	}
}

func TestBucketJSON(t *testing.T) {
	b := Bucket{Start: 900000, Agg: Agg{Count: 4, Sum: 10, Min: 1, Max: 4, FirstTime: 900001, First: 1, LastTime: 1000000, Last: 4}}
	got, err := json.Marshal([]Bucket{b})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"t":900000,"count":4,"sum":10,"min":1,"max":4,"mean":2.5,"delta":3}]`
	if string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestRowAddAndMergePanics(t *testing.T) {
	day := int64(20000) * dayMS
	for name, f := range map[string]func(){
		"outside period": func() { (&Row{Res: Min15, Period: day}).Add(wire.Reading{Time: day + dayMS}) },
		"raw row":        func() { (&Row{Res: Raw, Period: day}).Add(wire.Reading{Time: day}) },
		"merge other":    func() { (&Row{Res: Hour, Period: day}).Merge(&Row{Res: Hour, Period: day - dayMS}) },
		"apply raw":      func() { Apply(map[Key]*Row{}, nil, []Resolution{Hour, Raw}) },
		"append unsorted": func() {
			AppendRow(nil, &Row{Res: Hour, Period: day, Buckets: []Bucket{
				{Start: day + hourMS, Agg: Agg{Count: 1, FirstTime: day + hourMS}},
				{Start: day, Agg: Agg{Count: 1, FirstTime: day}},
			}})
		},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

// genReadings returns readings over a few months around a base time chosen
// to cross interesting boundaries, with bucket edges, duplicates, equal
// times of different values, negative zeros and bad readings.
func genReadings(rng *rand.Rand, tb testing.TB) []wire.Reading {
	bases := []string{"2024-01-15T00:00:00Z", "1970-01-20T00:00:00Z", "2023-12-20T00:00:00Z", "2024-02-27T00:00:00Z", "2099-11-30T00:00:00Z"}
	base := ms(tb, bases[rng.IntN(len(bases))])
	span := int64(1+rng.IntN(120)) * dayMS
	n := 1 + rng.IntN(400)
	rs := make([]wire.Reading, 0, n)
	for len(rs) < n {
		var r wire.Reading
		switch k := rng.IntN(10); {
		case k < 4:
			r.Time = base - span/2 + rng.Int64N(span)
		case k < 6: // on or next to a bucket edge
			res := Aggregated[rng.IntN(len(Aggregated))]
			r.Time = res.Bucket(base-span/2+rng.Int64N(span)) + rng.Int64N(3) - 1
		case k < 8 && len(rs) > 0: // a duplicate, or another value at the same time
			r = rs[rng.IntN(len(rs))]
			if rng.IntN(2) == 0 {
				r.Value = float64(rng.IntN(21) - 10)
			}
			rs = append(rs, r)
			continue
		default: // a cluster of close readings
			r.Time = base - span/2 + rng.Int64N(span)
			if len(rs) > 0 {
				r.Time = rs[len(rs)-1].Time + rng.Int64N(120_000)
			}
		}
		switch k := rng.IntN(10); {
		case k < 4:
			r.Value = float64(rng.IntN(2001) - 1000)
		case k < 5:
			r.Value = math.Copysign(0, -1)
		default:
			r.Value = (rng.Float64() - 0.3) * math.Pow(10, float64(rng.IntN(8)))
		}
		if rng.IntN(10) == 0 {
			r.Quality = wire.QualityBad
		} else if rng.IntN(10) == 0 {
			r.Quality = wire.QualityUncertain
		}
		rs = append(rs, r)
	}
	rng.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
	return rs
}

// naive recomputes, straight from the readings and with the time package
// for calendar arithmetic, every bucket of every aggregated resolution.
// Sums are added in sorted order.
func naive(rs []wire.Reading) (map[Key]map[int64]Agg, map[Key]map[int64]float64) {
	groups := map[Key]map[int64][]wire.Reading{}
	for _, r := range rs {
		if r.Quality&wire.QualityBad != 0 {
			continue
		}
		u := time.UnixMilli(r.Time).UTC()
		y, m, d := u.Date()
		starts := map[Resolution][2]time.Time{
			Min15: {time.Date(y, m, d, u.Hour(), u.Minute()/15*15, 0, 0, time.UTC), time.Date(y, m, d, 0, 0, 0, 0, time.UTC)},
			Hour:  {time.Date(y, m, d, u.Hour(), 0, 0, 0, time.UTC), time.Date(y, m, d, 0, 0, 0, 0, time.UTC)},
			Day:   {time.Date(y, m, d, 0, 0, 0, 0, time.UTC), time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)},
			Month: {time.Date(y, m, 1, 0, 0, 0, 0, time.UTC), time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)},
		}
		for res, s := range starts {
			k := Key{res, s[1].UnixMilli()}
			if groups[k] == nil {
				groups[k] = map[int64][]wire.Reading{}
			}
			groups[k][s[0].UnixMilli()] = append(groups[k][s[0].UnixMilli()], r)
		}
	}
	out := map[Key]map[int64]Agg{}
	scale := map[Key]map[int64]float64{}
	for k, g := range groups {
		out[k], scale[k] = map[int64]Agg{}, map[int64]float64{}
		for start, rs := range g {
			rs = slices.Clone(rs)
			for i := range rs {
				if rs[i].Value == 0 { // -0 counts as 0
					rs[i].Value = 0
				}
			}
			slices.SortFunc(rs, func(a, b wire.Reading) int {
				return cmp.Or(cmp.Compare(a.Time, b.Time), cmp.Compare(a.Value, b.Value))
			})
			first, last := rs[0], rs[len(rs)-1]
			a := Agg{Count: int64(len(rs)), Min: math.Inf(1), Max: math.Inf(-1),
				FirstTime: first.Time, First: first.Value, LastTime: last.Time, Last: last.Value}
			var abs float64
			for _, r := range rs {
				a.Sum += r.Value
				abs += math.Abs(r.Value)
				a.Min, a.Max = min(a.Min, r.Value), max(a.Max, r.Value)
			}
			out[k][start], scale[k][start] = a, abs
		}
	}
	return out, scale
}

// checkRows compares rows with the naive recomputation: everything exact
// but Sum (and so Mean), which must agree within 1e-9 of the sum of the
// magnitudes (a relative error bound that holds even when values cancel).
func checkRows(t *testing.T, what string, rows map[Key]*Row, want map[Key]map[int64]Agg, scale map[Key]map[int64]float64) {
	t.Helper()
	if len(rows) != len(want) {
		t.Fatalf("%s: %d rows, want %d", what, len(rows), len(want))
	}
	for k, row := range rows {
		w := want[k]
		if row.Res != k.Res || row.Period != k.Period || len(row.Buckets) != len(w) {
			t.Fatalf("%s: row %v is %s/%d with %d buckets, want %d", what, k, row.Res, row.Period, len(row.Buckets), len(w))
		}
		if err := row.check(); err != nil {
			t.Fatalf("%s: row %v: %v", what, k, err)
		}
		for _, b := range row.Buckets {
			wa, ok := w[b.Start]
			if !ok {
				t.Fatalf("%s: row %v: unexpected bucket %s", what, k, fmtMS(b.Start))
			}
			got := b.Agg
			tol := 1e-9 * scale[k][b.Start]
			if math.Abs(got.Sum-wa.Sum) > tol || math.Abs(got.Mean()-wa.Mean()) > tol/float64(wa.Count) {
				t.Fatalf("%s: %s bucket %s: sum %v, want %v", what, k.Res, fmtMS(b.Start), got.Sum, wa.Sum)
			}
			got.Sum = wa.Sum
			if got != wa {
				t.Fatalf("%s: %s bucket %s:\n got %+v\nwant %+v", what, k.Res, fmtMS(b.Start), got, wa)
			}
		}
	}
}

// TestApplyMatchesNaive is the property test of the package: however the
// readings are ordered, batched and merged, the rows equal a recomputation
// from all the readings at once, and encode and decode unchanged.
func TestApplyMatchesNaive(t *testing.T) {
	rng := newRand(t)
	for iter := range 200 {
		rs := genReadings(rng, t)
		want, scale := naive(rs)

		// Split into random batches.
		var batches [][]wire.Reading
		for rest := rs; len(rest) > 0; {
			n := 1 + rng.IntN(len(rest))
			batches, rest = append(batches, rest[:n]), rest[n:]
		}
		res := slices.Clone(Aggregated)
		rng.Shuffle(len(res), func(i, j int) { res[i], res[j] = res[j], res[i] })

		// 1. Apply batch by batch into the same rows.
		incremental := map[Key]*Row{}
		for _, b := range batches {
			Apply(incremental, b, res)
		}
		checkRows(t, "batch by batch", incremental, want, scale)

		// 2. Build rows per batch independently, then merge them (in a
		// random order, through an encode/decode round trip).
		merged := map[Key]*Row{}
		rng.Shuffle(len(batches), func(i, j int) { batches[i], batches[j] = batches[j], batches[i] })
		for _, b := range batches {
			part := map[Key]*Row{}
			Apply(part, b, Aggregated)
			for k, row := range part {
				dec, err := DecodeRow(AppendRow(nil, row))
				if err != nil {
					t.Fatalf("iteration %d: %v", iter, err)
				}
				if merged[k] == nil {
					merged[k] = &Row{Res: k.Res, Period: k.Period}
				}
				merged[k].Merge(dec)
			}
		}
		checkRows(t, "merged", merged, want, scale)

		// 3. Row.Add reading by reading.
		byAdd := map[Key]*Row{}
		for _, r := range rs {
			for _, res := range Aggregated {
				k := Key{res, res.Period(r.Time)}
				if r.Quality&wire.QualityBad != 0 {
					continue
				}
				if byAdd[k] == nil {
					byAdd[k] = &Row{Res: res, Period: k.Period}
				}
				byAdd[k].Add(r)
			}
		}
		checkRows(t, "Row.Add", byAdd, want, scale)

		// Round trip, and Buckets over a random window.
		var hourRows []*Row
		for k, row := range incremental {
			dec, err := DecodeRow(AppendRow(nil, row))
			if err != nil {
				t.Fatalf("iteration %d: row %v: %v", iter, k, err)
			}
			checkSameRow(t, dec, row)
			if k.Res == Hour {
				hourRows = append(hourRows, row)
			}
		}
		checkBuckets(t, rng, hourRows)
	}
}

// checkBuckets compares Buckets over a random window with a filter of all
// the buckets of rows.
func checkBuckets(t *testing.T, rng *rand.Rand, rows []*Row) {
	t.Helper()
	var all []Bucket
	for _, row := range rows {
		all = append(all, row.Buckets...)
	}
	if len(all) == 0 {
		return
	}
	slices.SortFunc(all, func(a, b Bucket) int { return cmp.Compare(a.Start, b.Start) })
	lo, hi := all[0].Start, all[len(all)-1].Start
	from := lo - hourMS + rng.Int64N(hi-lo+2*hourMS)
	to := from + rng.Int64N(hi-lo+2*hourMS)
	var want []Bucket
	for _, b := range all {
		if b.Start >= from && b.Start < to {
			want = append(want, b)
		}
	}
	rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	got := Buckets(rows, from, to)
	if !slices.Equal(got, want) {
		t.Fatalf("Buckets(%d rows, %s, %s): %d buckets, want %d", len(rows), fmtMS(from), fmtMS(to), len(got), len(want))
	}
}

func TestBucketsMergesEqualStarts(t *testing.T) {
	day := int64(19000) * dayMS
	a, b := &Row{Res: Hour, Period: day}, &Row{Res: Hour, Period: day}
	a.Add(wire.Reading{Time: day + 10, Value: 1})
	a.Add(wire.Reading{Time: day + 2*hourMS, Value: 5})
	b.Add(wire.Reading{Time: day + 20, Value: 3})
	got := Buckets([]*Row{a, nil, b}, day, day+dayMS)
	want := []Bucket{
		{Start: day, Agg: Agg{Count: 2, Sum: 4, Min: 1, Max: 3, FirstTime: day + 10, First: 1, LastTime: day + 20, Last: 3}},
		{Start: day + 2*hourMS, Agg: Agg{Count: 1, Sum: 5, Min: 5, Max: 5, FirstTime: day + 2*hourMS, First: 5, LastTime: day + 2*hourMS, Last: 5}},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got := Buckets([]*Row{a}, day+1, day+2*hourMS); len(got) != 0 {
		t.Fatalf("window excluding both starts returned %+v", got)
	}
	if a.Buckets[0].Count != 1 {
		t.Fatal("Buckets modified a row")
	}
}
