package series_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/wire"
)

// adSealer "seals" by prefixing the associated data, and opens only what
// carries the same: enough to catch a value written or read at the wrong
// place.
type adSealer struct{}

func (adSealer) Seal(_ context.Context, s registry.SubjectID, p, ad []byte) ([]byte, error) {
	return append(append(append([]byte(s), 0), append(slices.Clone(ad), 0xff)...), p...), nil
}

func (adSealer) Open(_ context.Context, s registry.SubjectID, c, ad []byte) ([]byte, error) {
	prefix := append(append([]byte(s), 0), append(slices.Clone(ad), 0xff)...)
	if !bytes.HasPrefix(c, prefix) {
		return nil, errs.E(errs.Integrity, "wrong associated data")
	}
	return slices.Clone(c[len(prefix):]), nil
}

// memTx is the fake's RectifyTx: it works on a copy of the store that
// replaces the original only when the rectification succeeds.
type memTx struct {
	m      *memStore
	tenant registry.TenantID
	stream registry.StreamID
}

func (x *memTx) Chunks(_ context.Context, from, to int64, data bool) ([]series.Chunk, error) {
	var out []series.Chunk
	for _, c := range x.m.chunks {
		if c.Tenant == x.tenant && c.Stream == x.stream && c.MinTime >= from-series.MaxChunkSpanMS && c.MinTime < to && c.MaxTime >= from {
			c.Data = slices.Clone(c.Data)
			if !data {
				c.Data = nil
			}
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b series.Chunk) int { return cmp.Or(cmp.Compare(a.MinTime, b.MinTime), cmp.Compare(a.ID, b.ID)) })
	return out, nil
}

func (x *memTx) Landed(context.Context) ([]series.Chunk, error) {
	var out []series.Chunk
	for _, c := range x.m.landing {
		if c.Tenant == x.tenant && c.Stream == x.stream {
			c.Data = nil
			out = append(out, c)
		}
	}
	return out, nil
}

func (x *memTx) ReplaceChunks(_ context.Context, del []int64, cs []series.Chunk) error {
	x.m.chunks = slices.DeleteFunc(x.m.chunks, func(c series.Chunk) bool {
		return c.Stream == x.stream && slices.Contains(del, c.ID)
	})
	for _, c := range cs {
		x.m.next++
		c.ID = x.m.next
		c.Data = slices.Clone(c.Data)
		x.m.chunks = append(x.m.chunks, c)
	}
	return nil
}

func (x *memTx) Rollups(ctx context.Context, res rollup.Resolution, from, to int64, fn func(*series.RollupRow) error) error {
	return x.m.StreamRollups(ctx, x.tenant, x.stream, res, from, to, fn)
}

func (x *memTx) PutRollups(_ context.Context, rows []series.RollupRow) error {
	for _, r := range rows {
		k := rollupKey{r.Stream, r.Res, r.Period}
		if r.Data == nil {
			delete(x.m.rollups, k)
			continue
		}
		r.Data = slices.Clone(r.Data)
		x.m.rollups[k] = r
	}
	return nil
}

// clone copies the store's rows.
func (m *memStore) clone() *memStore {
	c := &memStore{next: m.next, rollups: map[rollupKey]series.RollupRow{}}
	for _, x := range m.landing {
		x.Data = slices.Clone(x.Data)
		c.landing = append(c.landing, x)
	}
	for _, x := range m.chunks {
		x.Data = slices.Clone(x.Data)
		c.chunks = append(c.chunks, x)
	}
	for k, r := range m.rollups {
		r.Data = slices.Clone(r.Data)
		c.rollups[k] = r
	}
	return c
}

// rectify applies r to m as one transaction: all of it or nothing.
func rectify(m *memStore, r series.Rectification) (series.Rectified, error) {
	work := m.clone()
	res, err := r.Apply(context.Background(), &memTx{m: work, tenant: r.Tenant, stream: r.Stream}, adSealer{})
	if err == nil {
		m.landing, m.chunks, m.rollups, m.next = work.landing, work.chunks, work.rollups, work.next
	}
	return res, err
}

// sameRows reports whether two stores hold the same rows.
func sameRows(a, b *memStore) bool {
	eq := func(x, y series.Chunk) bool {
		return x.ID == y.ID && x.MinTime == y.MinTime && bytes.Equal(x.Data, y.Data)
	}
	return slices.EqualFunc(a.chunks, b.chunks, eq) && slices.EqualFunc(a.landing, b.landing, eq) &&
		maps.EqualFunc(a.rollups, b.rollups, func(x, y series.RollupRow) bool { return bytes.Equal(x.Data, y.Data) })
}

const (
	subA registry.SubjectID = "sub_a"
	strA registry.StreamID  = "str_a"
	strB registry.StreamID  = "str_b"
)

// rectStart is 2026-01-31 20:00 UTC: the data crosses a day, a month and
// (in the reference) nothing else.
var rectStart = time.Date(2026, 1, 31, 20, 0, 0, 0, time.UTC).UnixMilli()

// rectData is 10 hours of readings every 10 s on a stream, with two
// readings at one time, a bad one and one taken with an unsynchronised
// clock.
func rectData(stream registry.StreamID) []wire.Reading {
	var rs []wire.Reading
	for i := range int64(3600) {
		rs = append(rs, wire.Reading{Time: rectStart + i*10_000, Value: float64(i%97) + 0.25})
	}
	rs[100].Quality = wire.QualityBad
	rs[200].Quality = wire.QualityClockUnsynced
	rs = append(rs, wire.Reading{Time: rs[300].Time, Value: 1e3})
	if stream == strB {
		for i := range rs {
			rs[i].Value *= 2
		}
	}
	return rs
}

// storeOf lands rs per stream in hourly blocks and compacts them.
func storeOf(t *testing.T, data map[registry.StreamID][]wire.Reading) *memStore {
	t.Helper()
	m := &memStore{}
	for _, st := range []registry.StreamID{strA, strB} {
		rs := data[st]
		for len(rs) > 0 {
			n := min(len(rs), 500)
			c := block(st, rs[:n])
			c.Subject = subA
			sealed, _ := adSealer{}.Seal(context.Background(), subA, c.Data, series.LandingAD(tenant, st))
			c.Data = sealed
			m.land(c)
			rs = rs[n:]
		}
	}
	if err := (&series.Compactor{Store: m, Sealer: adSealer{}}).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

// corrected applies corrections and deletions to rs as the specification
// says, independently of the implementation.
func corrected(rs []wire.Reading, cs []series.Correction, del []series.TimeRange) []wire.Reading {
	byTime := map[int64]float64{}
	for _, c := range cs {
		byTime[c.Time] = c.Value
	}
	var out []wire.Reading
	done := map[int64]bool{}
	for _, r := range rs {
		if v, ok := byTime[r.Time]; ok {
			if !done[r.Time] {
				out = append(out, wire.Reading{Time: r.Time, Value: v, Quality: wire.QualitySubstituted | r.Quality&wire.QualityClockUnsynced})
				done[r.Time] = true
			}
			continue
		}
		if slices.ContainsFunc(del, func(d series.TimeRange) bool { return d.From <= r.Time && r.Time < d.To }) {
			continue
		}
		out = append(out, r)
	}
	return out
}

func readRaw(t *testing.T, m *memStore, st registry.StreamID) []series.Reading {
	t.Helper()
	var out []series.Reading
	q := series.Query{Tenant: tenant, Stream: st, From: 0, To: 1 << 50, Limit: series.MaxLimit, Sealer: adSealer{}}
	for {
		p, err := series.Read(context.Background(), m, q)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Readings...)
		if p.Next == "" {
			return out
		}
		q.Cursor = p.Next
	}
}

// sameBuckets compares every resolution's buckets of a stream in two
// stores: counts, minima, maxima, first and last exactly, sums up to
// rounding (they are added in a different order).
func sameBuckets(t *testing.T, what string, got, want *memStore, st registry.StreamID) {
	t.Helper()
	for _, res := range rollup.Aggregated {
		q := series.RollupQuery{Tenant: tenant, Stream: st, Res: res, From: 0, To: 1 << 50, Sealer: adSealer{}}
		g, err := series.ReadRollups(context.Background(), got, q)
		if err != nil {
			t.Fatal(err)
		}
		w, err := series.ReadRollups(context.Background(), want, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(g) != len(w) {
			t.Errorf("%s %s: %d buckets, want %d", what, res, len(g), len(w))
			continue
		}
		for i := range g {
			a, b := g[i], w[i]
			sum := math.Abs(a.Sum-b.Sum) <= 1e-9*max(math.Abs(b.Sum), 1)
			a.Sum, b.Sum = 0, 0
			if a != b || !sum {
				t.Errorf("%s %s bucket %s: got %+v (sum %v), want %+v (sum %v)", what, res, series.FormatTime(a.Start), g[i].Agg, g[i].Sum, w[i].Agg, w[i].Sum)
			}
		}
	}
}

// TestRectify: corrections and deletions across hours, a day and a month
// boundary leave raw readings and the rollups at every resolution exactly
// as if the corrected data had been stored in the first place (a second
// store fed the corrected data is the reference), touch no other stream,
// and report what they did.
func TestRectify(t *testing.T) {
	h := int64(series.BucketMS)
	base := rectData(strA)
	r := series.Rectification{Tenant: tenant, Subject: subA, Stream: strA,
		Corrections: []series.Correction{
			{Time: rectStart + 3*h + 10_000, Value: 5000}, // 23:00, the new maximum of its buckets
			{Time: rectStart + 1000*10_000, Value: -40},   // new minimum
			{Time: base[100].Time, Value: 7},              // a bad reading becomes a counted one
			{Time: base[200].Time, Value: 8},              // keeps its clock flag
			{Time: base[300].Time, Value: 9},              // two readings at that time become one
			{Time: rectStart, Value: 0.5},                 // the first reading of the day and month
			{Time: base[3599].Time, Value: 123.5},         // the last
			{Time: rectStart + 4*h - 10_000, Value: 1},    // last reading of January
		},
		Delete: []series.TimeRange{{From: rectStart + 5*h + 30*60_000, To: rectStart + 6*h + 15*60_000}}, // across an hour
	}
	m := storeOf(t, map[registry.StreamID][]wire.Reading{strA: base, strB: rectData(strB)})
	beforeB := readRaw(t, m, strB)
	res, err := rectify(m, r)
	if err != nil {
		t.Fatal(err)
	}
	want := corrected(base, r.Corrections, r.Delete)
	ref := storeOf(t, map[registry.StreamID][]wire.Reading{strA: want, strB: rectData(strB)})
	if got, w := readRaw(t, m, strA), readRaw(t, ref, strA); !slices.Equal(got, w) {
		t.Errorf("raw readings differ from the reference: %d vs %d", len(got), len(w))
	}
	sameBuckets(t, "rectified", m, ref, strA)
	sameBuckets(t, "other stream", m, ref, strB)
	if !slices.Equal(readRaw(t, m, strB), beforeB) {
		t.Error("the other stream's readings changed")
	}
	if res.Corrected != 8 || res.Deleted != 1+45*6 || res.Chunks != 6 {
		t.Errorf("result %+v", res)
	}
	runs := map[rollup.Resolution][]int{}
	for _, run := range res.Recomputed {
		runs[run.Res] = append(runs[run.Res], run.Buckets)
	}
	// 15m: 20:00-21:00 (first reading, bad, clock, duplicate), 22:45-23:15,
	// 23:45, 01:30-02:15 (delete), 05:45 (last); 1h: 20, 22-24,
	// 01-03, 05; 1d: 31 January and 1 February; 1mo: January and February.
	for res, want := range map[rollup.Resolution][]int{rollup.Min15: {4, 2, 1, 3, 1}, rollup.Hour: {1, 2, 2, 1}, rollup.Day: {2}, rollup.Month: {2}} {
		if !slices.Equal(runs[res], want) {
			t.Errorf("%s runs %v, want %v", res, runs[res], want)
		}
	}
	got := readRaw(t, m, strA)
	for _, rd := range got {
		if rd.Time == base[200].Time && rd.Quality != wire.QualitySubstituted|wire.QualityClockUnsynced {
			t.Errorf("clock flag lost: %v", rd.Quality)
		}
	}

	// Applying the same corrections again changes nothing more.
	if _, err := rectify(m, series.Rectification{Tenant: tenant, Subject: subA, Stream: strA, Corrections: r.Corrections}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(readRaw(t, m, strA), readRaw(t, ref, strA)) {
		t.Error("a second application changed the readings")
	}
	sameBuckets(t, "applied twice", m, ref, strA)
}

// TestRectifyDeletesEverything: deleting every reading of the stream
// removes its chunks and rollup rows.
func TestRectifyDeletesEverything(t *testing.T) {
	m := storeOf(t, map[registry.StreamID][]wire.Reading{strA: rectData(strA), strB: rectData(strB)})
	if _, err := rectify(m, series.Rectification{Tenant: tenant, Subject: subA, Stream: strA, Delete: []series.TimeRange{{From: 0, To: wire.MaxTime}}}); err != nil {
		t.Fatal(err)
	}
	if rs := readRaw(t, m, strA); len(rs) != 0 {
		t.Errorf("%d readings left", len(rs))
	}
	for k := range m.rollups {
		if k.stream == strA {
			t.Errorf("rollup row %v left", k)
		}
	}
	if len(readRaw(t, m, strB)) != len(rectData(strB)) {
		t.Error("the other stream lost readings")
	}
}

// TestRectifyRefuses: every bad rectification is refused with its error
// kind and a message naming what is wrong, and changes nothing.
func TestRectifyRefuses(t *testing.T) {
	h := int64(series.BucketMS)
	ok := series.Correction{Time: rectStart + 60_000, Value: 1}
	cases := []struct {
		name  string
		r     series.Rectification
		spoil func(m *memStore) // damage to the store before
		kind  errs.Kind
		msg   string
	}{
		{name: "nothing", kind: errs.Invalid, msg: "nothing to rectify"},
		{name: "no reading at that time", r: series.Rectification{Corrections: []series.Correction{ok, {Time: rectStart + 5, Value: 1}}}, kind: errs.NotFound, msg: "correction 2: stream str_a has no stored reading at 2026-01-31T20:00:00.005Z"},
		{name: "after the last reading", r: series.Rectification{Corrections: []series.Correction{{Time: rectStart + 9*h + 59*60_000 + 55_000, Value: 1}}}, kind: errs.NotFound, msg: "correction 1"},
		{name: "empty delete range", r: series.Rectification{Corrections: []series.Correction{ok}, Delete: []series.TimeRange{{From: rectStart + 1, To: rectStart + 9_999}}}, kind: errs.NotFound, msg: "no stored reading in delete range"},
		{name: "same time twice", r: series.Rectification{Corrections: []series.Correction{ok, {Time: ok.Time, Value: 2}}}, kind: errs.Invalid, msg: "corrections 1 and 2"},
		{name: "inside a delete range", r: series.Rectification{Corrections: []series.Correction{ok}, Delete: []series.TimeRange{{From: ok.Time, To: ok.Time + 1}}}, kind: errs.Invalid, msg: "inside delete range"},
		{name: "overlapping ranges", r: series.Rectification{Delete: []series.TimeRange{{From: 10, To: 20}, {From: 15, To: 30}}}, kind: errs.Invalid, msg: "overlap"},
		{name: "empty range", r: series.Rectification{Delete: []series.TimeRange{{From: 10, To: 10}}}, kind: errs.Invalid, msg: "delete range 1"},
		{name: "NaN", r: series.Rectification{Corrections: []series.Correction{{Time: ok.Time, Value: math.NaN()}}}, kind: errs.Invalid, msg: "finite"},
		{name: "time out of range", r: series.Rectification{Corrections: []series.Correction{{Time: -1, Value: 1}}}, kind: errs.Invalid, msg: "outside"},
		{name: "too many hours", r: series.Rectification{Corrections: func() []series.Correction {
			var cs []series.Correction
			for i := range int64(series.MaxRectifyHours + 1) {
				cs = append(cs, series.Correction{Time: rectStart + i*h, Value: 1})
			}
			return cs
		}()}, kind: errs.Invalid, msg: "split it"},
		{name: "not compacted yet", r: series.Rectification{Corrections: []series.Correction{ok}}, kind: errs.Conflict, msg: "not compacted",
			spoil: func(m *memStore) {
				c := block(strA, []wire.Reading{{Time: ok.Time - 1000, Value: 3}, {Time: ok.Time + 1000, Value: 3}})
				c.Subject = subA
				m.land(c)
			}},
		{name: "raw readings partly gone", r: series.Rectification{Corrections: []series.Correction{ok}},
			spoil: func(m *memStore) { // the hour's chunk loses its later half
				for i, c := range m.chunks {
					if c.Stream == strA && c.MinTime == rectStart {
						pt, _ := adSealer{}.Open(context.Background(), subA, c.Data, series.ChunkAD(tenant, strA, rectStart))
						rs, _ := wire.DecodeBlock(pt, nil)
						rs = rs[:len(rs)/2]
						m.chunks[i].Data, _ = adSealer{}.Seal(context.Background(), subA, wire.AppendBlock(nil, rs), series.ChunkAD(tenant, strA, rectStart))
						m.chunks[i].MaxTime, m.chunks[i].Count = rs[len(rs)-1].Time, len(rs)
					}
				}
			}, kind: errs.Conflict, msg: "the 1h bucket 2026-01-31T20:00:00.000Z of stream str_a does not agree with its raw readings"},
		{name: "hourly buckets partly gone", r: series.Rectification{Corrections: []series.Correction{ok}},
			spoil: func(m *memStore) { // the day's 22:00 bucket is lost
				k := rollupKey{strA, rollup.Hour, rollup.Hour.Period(rectStart)}
				r := m.rollups[k]
				pt, _ := adSealer{}.Open(context.Background(), subA, r.Data, series.RollupAD(tenant, strA, rollup.Hour, r.Period))
				row, _ := rollup.DecodeRow(pt)
				row.Set(rectStart+2*h, rollup.Agg{})
				r.Data, _ = adSealer{}.Seal(context.Background(), subA, rollup.AppendRow(nil, row), series.RollupAD(tenant, strA, rollup.Hour, r.Period))
				m.rollups[k] = r
			}, kind: errs.Conflict, msg: "the 1d bucket 2026-01-31T00:00:00.000Z of stream str_a does not agree with its 1h buckets"},
		{name: "a chunk that cannot be opened", r: series.Rectification{Corrections: []series.Correction{ok}},
			spoil: func(m *memStore) {
				for i, c := range m.chunks {
					if c.Stream == strA && c.MinTime == rectStart {
						m.chunks[i].Data[0] ^= 1 // another subject's prefix
					}
				}
			}, kind: errs.Integrity, msg: "cannot be opened"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := storeOf(t, map[registry.StreamID][]wire.Reading{strA: rectData(strA), strB: rectData(strB)})
			if c.spoil != nil {
				c.spoil(m)
			}
			before := m.clone()
			c.r.Tenant, c.r.Subject, c.r.Stream = tenant, subA, strA
			_, err := rectify(m, c.r)
			if !errs.Is(c.kind, err) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want a %v error containing %q", err, c.kind, c.msg)
			}
			if c.msg == "not compacted" && !errors.Is(err, series.ErrNotCompacted) {
				t.Errorf("%v is not ErrNotCompacted", err)
			}
			if !sameRows(m, before) {
				t.Error("the store changed")
			}
		})
	}
}
