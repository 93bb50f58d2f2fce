package rollup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"testing"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/wire"
)

// sample is one named row.
type sample struct {
	name string
	row  *Row
}

// applied returns the one row of res that readings rs produce.
func applied(tb testing.TB, res Resolution, rs []wire.Reading) *Row {
	tb.Helper()
	rows := map[Key]*Row{}
	Apply(rows, rs, []Resolution{res})
	if len(rows) != 1 {
		tb.Fatalf("%d rows, want 1", len(rows))
	}
	for _, row := range rows {
		return row
	}
	return nil
}

// every returns n readings from start, step ms apart, of values f(i).
func every(start, step int64, n int, f func(i int) float64) []wire.Reading {
	rs := make([]wire.Reading, n)
	for i := range rs {
		rs[i] = wire.Reading{Time: start + int64(i)*step, Value: f(i)}
	}
	return rs
}

// sampleRows returns rows of every resolution and shape.
func sampleRows(tb testing.TB) []sample {
	day := ms(tb, "2024-03-31T00:00:00Z")
	year := ms(tb, "2024-01-01T00:00:00Z")
	power := func(i int) float64 { return math.Round(800+600*math.Sin(float64(i)/90)) + float64(i%7)/8 }
	energy := func(i int) float64 { return 123456.5 + float64(i)*0.25 }
	big := []wire.Reading{{Time: day, Value: math.MaxFloat64}, {Time: day + 1, Value: math.MaxFloat64}}
	nanSum := applied(tb, Hour, big)
	nanSum.Merge(applied(tb, Hour, []wire.Reading{{Time: day + 2, Value: -math.MaxFloat64}, {Time: day + 3, Value: -math.MaxFloat64}}))
	return []sample{
		{"empty", &Row{Res: Min15, Period: day}},
		{"one-reading", applied(tb, Hour, []wire.Reading{{Time: day + 5*hourMS + 17, Value: 21.5}})},
		{"day-of-15m", applied(tb, Min15, every(day, 10_000, 8640, power))},
		{"day-of-1h", applied(tb, Hour, every(day, 60_000, 1440, power))},
		{"energy-1d", applied(tb, Day, every(ms(tb, "2024-02-01T00:00:00Z"), hourMS, 24*60, energy))},
		{"leap-year-1d", applied(tb, Day, every(year+hourMS, dayMS, 366, power))},
		{"months-1969", applied(tb, Month, every(ms(tb, "1969-01-01T00:00:00Z"), dayMS, 365, power))},
		{"sparse-15m", applied(tb, Min15, []wire.Reading{{Time: day + 3, Value: -1}, {Time: day + 40*min15MS, Value: 2},
			{Time: day + dayMS - 1, Value: 0.1}, {Time: day + dayMS - 1, Value: 0.3}})},
		{"ties", applied(tb, Hour, []wire.Reading{{Time: day, Value: 3}, {Time: day, Value: 1}, {Time: day, Value: 2}})},
		{"inf-sum", applied(tb, Hour, big)},
		{"nan-sum", nanSum},
		{"tiny", applied(tb, Month, []wire.Reading{{Time: year, Value: math.SmallestNonzeroFloat64}, {Time: year + 1, Value: -math.MaxFloat64}})},
	}
}

// checkSameRow fails unless the rows are equal, floats bit for bit.
func checkSameRow(t testing.TB, got, want *Row) {
	t.Helper()
	if got.Res != want.Res || got.Period != want.Period || len(got.Buckets) != len(want.Buckets) {
		t.Fatalf("got %s row %d with %d buckets, want %s row %d with %d", got.Res, got.Period, len(got.Buckets),
			want.Res, want.Period, len(want.Buckets))
	}
	for i, g := range got.Buckets {
		w := want.Buckets[i]
		same := g.Start == w.Start && g.Count == w.Count && g.FirstTime == w.FirstTime && g.LastTime == w.LastTime
		for _, f := range [][2]float64{{g.Sum, w.Sum}, {g.Min, w.Min}, {g.Max, w.Max}, {g.First, w.First}, {g.Last, w.Last}} {
			same = same && sameBits(f[0], f[1])
		}
		if !same {
			t.Fatalf("bucket %d: got %+v, want %+v", i, g, w)
		}
	}
}

func TestRowRoundTrip(t *testing.T) {
	for _, s := range sampleRows(t) {
		enc := AppendRow([]byte("prefix"), s.row)
		if string(enc[:6]) != "prefix" {
			t.Fatalf("%s: AppendRow overwrote dst", s.name)
		}
		enc = enc[6:]
		got, err := DecodeRow(enc)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		checkSameRow(t, got, s.row)
		if again := AppendRow(nil, got); !bytes.Equal(again, enc) {
			t.Fatalf("%s: re-encoding differs", s.name)
		}
		t.Logf("%-13s %s %3d buckets: %5d bytes", s.name, s.row.Res, len(s.row.Buckets), len(enc))
	}
}

func TestDecodeRowRejectsTruncations(t *testing.T) {
	for _, s := range sampleRows(t) {
		enc := AppendRow(nil, s.row)
		for n := range len(enc) {
			if row, err := DecodeRow(enc[:n]); err == nil {
				t.Fatalf("%s: accepted the first %d of %d bytes: %+v", s.name, n, len(enc), row)
			} else {
				checkMalformed(t, err)
			}
		}
	}
}

func checkMalformed(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) || !errs.Is(errs.Integrity, err) {
		t.Fatalf("error %q (kind %v) does not wrap ErrMalformed with kind integrity", err, errs.KindOf(err))
	}
}

// rawBucket is a bucket encoding written field by field.
type rawBucket struct {
	skip, flags, count, firstOff, lastOff uint64
	floats                                []float64
}

func rawRow(ver, res byte, period int64, n uint64, bs ...rawBucket) []byte {
	b := []byte{ver, res}
	b = binary.AppendVarint(b, period)
	b = binary.AppendUvarint(b, n)
	for _, x := range bs {
		b = binary.AppendUvarint(b, x.skip)
		b = append(b, byte(x.flags))
		b = binary.AppendUvarint(b, x.count)
		b = binary.AppendUvarint(b, x.firstOff)
		b = binary.AppendUvarint(b, x.lastOff)
		for _, f := range x.floats {
			b = appendFloat(b, f)
		}
	}
	return b
}

func TestDecodeRowRejectsGarbage(t *testing.T) {
	day := int64(19813) * dayMS // 2024-03-31
	year := ms(t, "2024-01-01T00:00:00Z")
	const all = maxIsMin | firstIsMin | firstIsMax | lastIsMin | lastIsMax | sumIsFirst
	one := rawBucket{0, all, 1, 7, 0, []float64{2}}
	two := rawBucket{0, 0, 3, 7, 100, []float64{1, 5, 2, 4, 8}} // min max first last sum
	with := func(b rawBucket, f func(*rawBucket)) rawBucket {
		b.floats = append([]float64(nil), b.floats...)
		f(&b)
		return b
	}
	// The controls must decode, or the cases below prove nothing.
	for _, ok := range [][]byte{rawRow(1, 2, day, 1, one), rawRow(1, 2, day, 1, two), rawRow(1, 4, year, 1, with(one, func(b *rawBucket) { b.skip = 11 }))} {
		if _, err := DecodeRow(ok); err != nil {
			t.Fatalf("control %x: %v", ok, err)
		}
	}
	for name, b := range map[string][]byte{
		"empty input":          nil,
		"version 0":            rawRow(0, 2, day, 1, one),
		"version 2":            rawRow(2, 2, day, 1, one),
		"resolution 0 (raw)":   rawRow(1, 0, day, 1, one),
		"resolution 5":         rawRow(1, 5, day, 1, one),
		"period off by 1 ms":   rawRow(1, 2, day+1, 1, one),
		"day row not a year":   rawRow(1, 3, day, 1, one),
		"period out of range":  rawRow(1, 2, (maxTime/dayMS+1)*dayMS, 1, one),
		"period min int64":     rawRow(1, 2, math.MinInt64, 1, one),
		"more buckets than n":  rawRow(1, 2, day, 0, one),
		"fewer buckets than n": rawRow(1, 2, day, 2, one),
		"25 hourly buckets":    rawRow(1, 2, day, 25, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one, one),
		"hour 24":              rawRow(1, 2, day, 1, with(one, func(b *rawBucket) { b.skip = 24 })),
		"month 13":             rawRow(1, 4, year, 1, with(one, func(b *rawBucket) { b.skip = 12 })),
		"day 367 of a leap yr": rawRow(1, 3, year, 1, with(one, func(b *rawBucket) { b.skip = 366 })),
		"day 366 of 2023":      rawRow(1, 3, ms(t, "2023-01-01T00:00:00Z"), 1, with(one, func(b *rawBucket) { b.skip = 365 })),
		"huge skip":            rawRow(1, 2, day, 1, with(one, func(b *rawBucket) { b.skip = math.MaxUint64 })),
		"unknown flag":         rawRow(1, 2, day, 1, with(one, func(b *rawBucket) { b.flags |= 0x40 })),
		"count 0":              rawRow(1, 2, day, 1, with(one, func(b *rawBucket) { b.count = 0 })),
		"count > max int64":    rawRow(1, 2, day, 1, with(two, func(b *rawBucket) { b.count = 1 << 63 })),
		"first after bucket":   rawRow(1, 2, day, 1, with(one, func(b *rawBucket) { b.firstOff = hourMS })),
		"last after bucket":    rawRow(1, 2, day, 1, with(two, func(b *rawBucket) { b.lastOff = hourMS - 7 })),
		"huge last offset":     rawRow(1, 2, day, 1, with(two, func(b *rawBucket) { b.lastOff = math.MaxUint64 })),
		"explicit equal value": rawRow(1, 2, day, 1, with(two, func(b *rawBucket) { b.floats[2] = 1 })),
		"flags claim equality": rawRow(1, 2, day, 1, with(two, func(b *rawBucket) { b.flags = maxIsMin; b.floats = []float64{1, 2, 4, 8} })),
		"min above max":        rawRow(1, 2, day, 1, with(two, func(b *rawBucket) { b.floats[0] = 6 })),
		"first below min":      rawRow(1, 2, day, 1, with(two, func(b *rawBucket) { b.floats[2] = 0.5 })),
		"last above max":       rawRow(1, 2, day, 1, with(two, func(b *rawBucket) { b.floats[3] = 9 })),
		"NaN min":              rawRow(1, 2, day, 1, with(two, func(b *rawBucket) { b.floats[0] = math.NaN() })),
		"infinite max":         rawRow(1, 2, day, 1, with(two, func(b *rawBucket) { b.floats[1] = math.Inf(1) })),
		"negative zero":        rawRow(1, 2, day, 1, with(one, func(b *rawBucket) { b.floats[0] = math.Copysign(0, -1) })),
		"one reading, 2 times": rawRow(1, 2, day, 1, with(one, func(b *rawBucket) { b.lastOff = 1 })),
		"one reading, 2 sums":  rawRow(1, 2, day, 1, with(one, func(b *rawBucket) { b.flags &^= sumIsFirst; b.floats = append(b.floats, 3) })),
		"one time, first>min":  rawRow(1, 2, day, 1, with(two, func(b *rawBucket) { b.lastOff = 0 })),
		"trailing byte":        append(rawRow(1, 2, day, 1, one), 0),
		"overlong count":       append(rawRow(1, 2, day, 1)[:], 0, all, 0x81, 0x00, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0x40),
		"overlong period":      {1, 2, 0x80, 0x00, 0},
		"varint overflow":      {1, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0},
	} {
		row, err := DecodeRow(b)
		if err == nil {
			t.Errorf("%s: accepted %x as %+v", name, b, row)
			continue
		}
		checkMalformed(t, err)
	}
}

// TestDecodeRowMutations flips bytes of valid encodings at random: every
// result either fails cleanly or decodes to a row that re-encodes to the
// same bytes.
func TestDecodeRowMutations(t *testing.T) {
	rng := newRand(t)
	samples := sampleRows(t)
	for range 20000 {
		enc := AppendRow(nil, samples[rng.IntN(len(samples))].row)
		for range 1 + rng.IntN(3) {
			switch i := rng.IntN(len(enc)); rng.IntN(3) {
			case 0:
				enc[i] = byte(rng.Uint32())
			case 1:
				enc[i] ^= 1 << rng.IntN(8)
			default:
				enc = append(enc[:i], enc[i+1:]...)
			}
			if len(enc) == 0 {
				break
			}
		}
		checkDecodeRoundTrip(t, enc)
	}
	for range 20000 {
		garbage := make([]byte, rng.IntN(64))
		for i := range garbage {
			garbage[i] = byte(rng.Uint32())
		}
		if rng.IntN(2) == 0 && len(garbage) > 1 {
			garbage[0], garbage[1] = version, byte(1+rng.IntN(4))
		}
		checkDecodeRoundTrip(t, garbage)
	}
}

// checkDecodeRoundTrip checks that an accepted input re-encodes to itself
// and decodes to the same row again.
func checkDecodeRoundTrip(t testing.TB, b []byte) {
	t.Helper()
	row, err := DecodeRow(b)
	if err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
		return
	}
	enc := AppendRow(nil, row)
	if !bytes.Equal(enc, b) {
		t.Fatalf("accepted %x but it re-encodes to %x", b, enc)
	}
	again, err := DecodeRow(enc)
	if err != nil {
		t.Fatalf("re-encoding does not decode: %v", err)
	}
	checkSameRow(t, again, row)
}

// TestRowRoundTripProperty encodes rows of random readings.
func TestRowRoundTripProperty(t *testing.T) {
	rng := newRand(t)
	for range 200 {
		rows := map[Key]*Row{}
		Apply(rows, genReadings(rng, t), Aggregated)
		for _, row := range rows {
			enc := AppendRow(nil, row)
			got, err := DecodeRow(enc)
			if err != nil {
				t.Fatal(err)
			}
			checkSameRow(t, got, row)
		}
	}
}

// TestDecodeRowAllocations: whatever n says, DecodeRow allocates for at
// most what the period and the input can hold.
func TestDecodeRowAllocations(t *testing.T) {
	year := ms(t, "2024-01-01T00:00:00Z")
	b := rawRow(1, 3, year, 366)
	// What matters is the size, not the count (the race detector adds
	// allocations of its own): a row claiming 366 buckets without the
	// bytes for them must not make the decoder allocate for 366.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		_, _ = DecodeRow(b)
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 10; per > 2048 {
		t.Errorf("rejecting a row that claims 366 buckets without bytes allocated %d bytes", per)
	}
}
