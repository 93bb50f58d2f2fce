package series_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/store"
	"github.com/custos-iot/custos/internal/wire"
)

const tenant registry.TenantID = "ten_a"

// lander stores landed blocks: the fake directly, the real store through
// WriteBatches as ingest does.
type lander interface {
	series.ChunkSource
	series.CompactStore
}

// block encodes rs as a landed block of stream.
func block(stream registry.StreamID, rs []wire.Reading) series.Chunk {
	c := series.Chunk{Tenant: tenant, Stream: stream, Count: len(rs), MinTime: math.MaxInt64, MaxTime: math.MinInt64, Data: wire.AppendBlock(nil, rs)}
	for _, r := range rs {
		c.MinTime, c.MaxTime = min(c.MinTime, r.Time), max(c.MaxTime, r.Time)
	}
	return c
}

var specialValues = []float64{0, math.Copysign(0, -1), 1.5, -7, math.NaN(), math.Inf(1)}

// randomBlocks makes landed blocks of random readings: out of order within
// and across blocks, late data, many readings at equal times (equal and
// different values), negative times, blocks spanning two hour buckets.
// Every block spans at most MaxChunkSpanMS, as ingest guarantees.
func randomBlocks(rng *rand.Rand, streams []registry.StreamID) map[registry.StreamID][]series.Chunk {
	out := map[registry.StreamID][]series.Chunk{}
	for _, s := range streams {
		for range 1 + rng.IntN(8) {
			start := int64(rng.IntN(5*series.BucketMS)) - 2*series.BucketMS
			span := []int64{0, 10, 1000, series.BucketMS / 2, series.MaxChunkSpanMS}[rng.IntN(5)]
			steps := 1 + rng.Int64N(20)
			rs := make([]wire.Reading, 1+rng.IntN(40))
			for i := range rs {
				rs[i] = wire.Reading{
					Time:    start + rng.Int64N(steps+1)*span/steps,
					Value:   specialValues[rng.IntN(len(specialValues))],
					Quality: wire.Quality(rng.IntN(4)),
				}
			}
			out[s] = append(out[s], block(s, rs))
		}
	}
	return out
}

func readingOf(r wire.Reading) series.Reading {
	return series.Reading{Time: r.Time, Value: r.Value, Quality: r.Quality}
}

// key makes a reading comparable, NaN and -0 included.
type key struct {
	t int64
	v uint64
	q wire.Quality
}

func keyOf(r series.Reading) key { return key{r.Time, math.Float64bits(r.Value), r.Quality} }

// wantReadings is the multiset of blocks' readings in [from, to), as keys in
// read order.
func wantReadings(t *testing.T, blocks []series.Chunk, from, to int64) []key {
	var out []key
	for _, c := range blocks {
		rs, err := wire.DecodeBlock(c.Data, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Time >= from && r.Time < to {
				out = append(out, keyOf(readingOf(r)))
			}
		}
	}
	slices.SortFunc(out, compareKeys)
	return out
}

func compareKeys(a, b key) int {
	switch {
	case a.t != b.t:
		return cmpInt(a.t, b.t)
	case a.v != b.v:
		if a.v < b.v {
			return -1
		}
		return 1
	}
	return int(a.q) - int(b.q)
}

func cmpInt(a, b int64) int {
	if a < b {
		return -1
	}
	return 1
}

// readAll pages through q, calling between after every page, and returns
// the keys read.
func readAll(t *testing.T, src series.ChunkSource, q series.Query, between func()) []key {
	t.Helper()
	var got []key
	for pages := 0; ; pages++ {
		if pages > 100_000 {
			t.Fatal("paging does not end")
		}
		p, err := series.Read(context.Background(), src, q)
		if err != nil {
			t.Fatalf("Read(%+v): %v", q, err)
		}
		if len(p.Readings) == 0 && p.Next != "" {
			t.Fatalf("empty page with a Next cursor")
		}
		for _, r := range p.Readings {
			got = append(got, keyOf(r))
		}
		if p.Next == "" {
			return got
		}
		q.Cursor = p.Next
		between()
	}
}

func checkReadings(t *testing.T, what string, got, want []key) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: read %d readings, want %d (the stored multiset, in time order)\n got %v\nwant %v", what, len(got), len(want), got, want)
	}
}

// property lands random blocks into st and checks that every read returns
// exactly the landed readings in time order, before, during (between
// pages) and after compaction passes of random sizes.
func property(t *testing.T, rng *rand.Rand, st lander, land func(series.Chunk)) {
	streams := []registry.StreamID{"str_a", "str_b", "str_c"}[:1+rng.IntN(3)]
	blocks := randomBlocks(rng, streams)
	var total int
	// Land the streams' blocks interleaved, as connectors would.
	for i := 0; ; i++ {
		landed := false
		for _, s := range streams {
			if i < len(blocks[s]) {
				land(blocks[s][i])
				landed = true
				total++
			}
		}
		if !landed {
			break
		}
	}
	compactSome := func() {
		if rng.IntN(3) == 0 {
			return
		}
		if _, err := (&series.Compactor{Store: st, Limit: 1 + rng.IntN(total)}).Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 4 {
		for _, s := range streams {
			from, to := int64(-3*series.BucketMS), int64(4*series.BucketMS)
			if rng.IntN(2) == 0 {
				from = from + rng.Int64N(7*series.BucketMS)
				to = from + 1 + rng.Int64N(2*series.BucketMS)
			}
			q := series.Query{Tenant: tenant, Stream: s, From: from, To: to, Limit: 1 + rng.IntN(25)}
			want := wantReadings(t, blocks[s], from, to)
			between := func() {}
			if round == 1 || round == 2 {
				between = compactSome
			}
			checkReadings(t, fmt.Sprintf("round %d, stream %s, [%d,%d) limit %d", round, s, from, to, q.Limit), readAll(t, st, q, between), want)
		}
		if round == 2 {
			// Finish compaction for the last round.
			if err := (&series.Compactor{Store: st, Limit: 1 + rng.IntN(total)}).Once(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestReadExactlyOnceWhileCompacting(t *testing.T) {
	for seed := range uint64(300) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			m := &memStore{}
			property(t, rng, m, m.land)
			if len(m.landing) != 0 {
				t.Errorf("%d landed blocks left after Once", len(m.landing))
			}
		})
	}
}

func TestReadExactlyOnceWhileCompactingSQLite(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			st, err := store.Open(context.Background(), store.Config{Path: filepath.Join(t.TempDir(), "hub.db")})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			rng := rand.New(rand.NewPCG(seed, 2))
			n := 0
			property(t, rng, st, func(c series.Chunk) {
				n++
				b := series.Batch{Connector: "con_a", Readings: c.Count, Chunks: []series.Chunk{c}}
				binary.BigEndian.PutUint64(b.ID[:], uint64(n))
				if _, err := st.WriteBatches(context.Background(), 1, []series.Batch{b}); err != nil {
					t.Fatal(err)
				}
			})
			if n, err := st.LandingCount(context.Background()); err != nil || n != 0 {
				t.Errorf("LandingCount after Once = %d, %v; want 0", n, err)
			}
		})
	}
}

// chunkReadings decodes the chunks of Compact's output.
func chunkReadings(t *testing.T, cs []series.Chunk) [][]int64 {
	t.Helper()
	var out [][]int64
	for _, c := range cs {
		rs, err := wire.DecodeBlock(c.Data, nil)
		if err != nil {
			t.Fatalf("chunk %+v: %v", c, err)
		}
		var ts []int64
		for _, r := range rs {
			ts = append(ts, r.Time)
		}
		if c.Count != len(rs) || c.MinTime != ts[0] || c.MaxTime != ts[len(ts)-1] {
			t.Errorf("chunk says count %d, [%d,%d]; holds %v", c.Count, c.MinTime, c.MaxTime, ts)
		}
		if lo, hi := floorBucket(c.MinTime), floorBucket(c.MaxTime); lo != hi {
			t.Errorf("chunk %v spans buckets %d..%d", ts, lo, hi)
		}
		out = append(out, ts)
	}
	return out
}

func floorBucket(t int64) int64 {
	b := t / series.BucketMS
	if t%series.BucketMS != 0 && t < 0 {
		b--
	}
	return b
}

func times(stream registry.StreamID, ts ...int64) series.Chunk {
	rs := make([]wire.Reading, len(ts))
	for i, t := range ts {
		rs[i] = wire.Reading{Time: t, Value: float64(i)}
	}
	return block(stream, rs)
}

func TestCompact(t *testing.T) {
	const h = series.BucketMS
	bad := series.Chunk{ID: 7, Tenant: tenant, Stream: "str_a", MinTime: 5, MaxTime: 6, Count: 2, Data: []byte{0xff, 1, 2}}
	tests := []struct {
		name   string
		landed []series.Chunk
		want   [][]int64
	}{
		{"one block", []series.Chunk{times("str_a", 3, 1, 2)}, [][]int64{{1, 2, 3}}},
		{"bucket boundary", []series.Chunk{times("str_a", h-1, h)}, [][]int64{{h - 1}, {h}}},
		{"block spanning two buckets joins the next block's bucket",
			[]series.Chunk{times("str_a", h-10, h+5), times("str_a", h+1, h+2)},
			[][]int64{{h - 10}, {h + 1, h + 2, h + 5}}},
		{"negative times", []series.Chunk{times("str_a", -1, 0, -h, -h-1)}, [][]int64{{-h, -1}, {0}, {-h - 1}}},
		{"streams apart", []series.Chunk{times("str_a", 5), times("str_b", 4), times("str_a", 3)}, [][]int64{{3, 5}, {4}}},
		{"late data merges", []series.Chunk{times("str_a", 100, 200), times("str_a", 50, 150)}, [][]int64{{50, 100, 150, 200}}},
		{"equal times", []series.Chunk{times("str_a", 9, 9), times("str_a", 9)}, [][]int64{{9, 9, 9}}},
		{"undecodable block carried over", []series.Chunk{times("str_a", 1), bad, times("str_a", 2)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := series.Compact(tt.landed)
			if tt.want == nil {
				// The bad block comes out unchanged (with no ID), the
				// others are compacted.
				if len(out) != 2 || !slices.Equal(out[0].Data, bad.Data) || out[0].ID != 0 || out[0].MinTime != 5 || out[0].Count != 2 {
					t.Fatalf("Compact = %+v; want the bad block carried over first", out)
				}
				out = out[1:]
				tt.want = [][]int64{{1, 2}}
			}
			got := chunkReadings(t, out)
			// Compare as a set of chunks: their order is not part of the contract.
			slices.SortFunc(got, func(a, b []int64) int { return cmpInt(a[0], b[0]) })
			slices.SortFunc(tt.want, func(a, b []int64) int { return cmpInt(a[0], b[0]) })
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Compact chunks = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCompactOrdersEqualTimesByContent(t *testing.T) {
	a := block("str_a", []wire.Reading{{Time: 1, Value: 3}, {Time: 1, Value: 1, Quality: wire.QualityBad}})
	b := block("str_a", []wire.Reading{{Time: 1, Value: 1}, {Time: 0, Value: 2}})
	for _, order := range [][]series.Chunk{{a, b}, {b, a}} {
		out := series.Compact(order)
		rs, err := wire.DecodeBlock(out[0].Data, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := []wire.Reading{{Time: 0, Value: 2}, {Time: 1, Value: 1}, {Time: 1, Value: 1, Quality: wire.QualityBad}, {Time: 1, Value: 3}}
		if !slices.Equal(rs, want) {
			t.Errorf("Compact order = %v, want %v whatever the arrival order", rs, want)
		}
	}
}

func TestReadErrors(t *testing.T) {
	m := &memStore{}
	m.land(times("str_a", 1, 2, 3))
	raw := func(tm, skip uint64) string {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:], tm)
		binary.BigEndian.PutUint64(b[8:], skip)
		return base64.RawURLEncoding.EncodeToString(b[:])
	}
	q := series.Query{Tenant: tenant, Stream: "str_a", From: 0, To: 10, Limit: 10}
	tests := []struct {
		name string
		edit func(*series.Query)
	}{
		{"not base64", func(q *series.Query) { q.Cursor = "!!!" }},
		{"padded base64", func(q *series.Query) { q.Cursor = base64.URLEncoding.EncodeToString(make([]byte, 16)) }},
		{"too short", func(q *series.Query) { q.Cursor = base64.RawURLEncoding.EncodeToString(make([]byte, 15)) }},
		{"too long", func(q *series.Query) { q.Cursor = base64.RawURLEncoding.EncodeToString(make([]byte, 17)) }},
		{"negative skip", func(q *series.Query) { q.Cursor = raw(1, 1<<63) }},
		{"cursor before the range", func(q *series.Query) { q.Cursor = raw(math.MaxUint64, 0) }},
		{"cursor at the end of the range", func(q *series.Query) { q.Cursor = raw(10, 0) }},
		{"limit 0", func(q *series.Query) { q.Limit = 0 }},
		{"limit too large", func(q *series.Query) { q.Limit = series.MaxLimit + 1 }},
		{"empty range", func(q *series.Query) { q.To = q.From }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := q
			tt.edit(&q)
			if _, err := series.Read(context.Background(), m, q); !errs.Is(errs.Invalid, err) {
				t.Errorf("Read = %v, want an Invalid error", err)
			}
		})
	}
	m.land(series.Chunk{Tenant: tenant, Stream: "str_a", MinTime: 2, MaxTime: 2, Count: 1, Data: []byte{0xff}})
	if _, err := series.Read(context.Background(), m, q); !errs.Is(errs.Integrity, err) {
		t.Errorf("Read over an undecodable chunk = %v, want an Integrity error", err)
	}
}

// benchBlocks makes landed blocks shaped like `custos bench ingest`:
// streams × blocks of per readings one second apart.
func benchBlocks(streams, blocks, per int) []series.Chunk {
	rng := rand.New(rand.NewPCG(1, 2))
	var out []series.Chunk
	t0 := int64(1_767_225_600_000)
	v := make([]float64, streams)
	rs := make([]wire.Reading, per)
	for b := range blocks {
		for s := range streams {
			for j := range rs {
				v[s] = max(0, v[s]+float64(rng.IntN(61)-30))
				rs[j] = wire.Reading{Time: t0 + int64(b*per+j)*1000, Value: v[s]}
			}
			out = append(out, block(registry.StreamID(fmt.Sprintf("str_%04d", s)), rs))
		}
	}
	return out
}

func BenchmarkCompact(b *testing.B) {
	landed := benchBlocks(1000, 4, 100) // one default compaction pass
	b.ResetTimer()
	for b.Loop() {
		series.Compact(landed)
	}
	b.ReportMetric(float64(b.N)*float64(len(landed)*100)/b.Elapsed().Seconds(), "readings/s")
}

func BenchmarkRead(b *testing.B) {
	for _, compacted := range []bool{false, true} {
		b.Run(fmt.Sprintf("compacted=%v", compacted), func(b *testing.B) {
			m := &memStore{}
			for _, c := range benchBlocks(1, 360, 100) { // 10 hours
				m.land(c)
			}
			if compacted {
				if err := (&series.Compactor{Store: m}).Once(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			q := series.Query{Tenant: tenant, Stream: "str_0000", From: 0, To: math.MaxInt64, Limit: 10_000}
			n := 0
			b.ResetTimer()
			for b.Loop() {
				q.Cursor = ""
				for {
					p, err := series.Read(context.Background(), m, q)
					if err != nil {
						b.Fatal(err)
					}
					n += len(p.Readings)
					if p.Next == "" {
						break
					}
					q.Cursor = p.Next
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
		})
	}
}
