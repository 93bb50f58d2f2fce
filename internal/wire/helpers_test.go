package wire

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// t0 is 2023-11-14T22:13:20Z, a realistic reading time.
const t0 = 1_700_000_000_000

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }

// household returns n readings of a household meter's power in integer
// watts, 1 per second: a smooth daily-ish curve with ±30 W noise.
func household(r *rand.Rand, n int, start int64) []Reading {
	rs := make([]Reading, n)
	for i := range rs {
		curve := 450 + 300*math.Sin(2*math.Pi*float64(i)/3600)
		rs[i] = Reading{Time: start + int64(i)*1000, Value: math.Round(curve) + float64(r.IntN(61)-30)}
	}
	return rs
}

// energy returns n readings of a monotone energy counter in Wh, 1 per
// second, integrating a household power curve.
func energy(r *rand.Rand, n int, start int64) []Reading {
	rs := make([]Reading, n)
	acc := 12_345_678.0
	for i := range rs {
		acc += (450 + 300*math.Sin(2*math.Pi*float64(i)/3600) + float64(r.IntN(61)-30)) / 3600 * 20 // a busy house: ~2.5 Wh/s
		rs[i] = Reading{Time: start + int64(i)*1000, Value: math.Floor(acc)}
	}
	return rs
}

// voltage returns n readings in 0.1 V steps around 230 V.
func voltage(r *rand.Rand, n int, start int64) []Reading {
	rs := make([]Reading, n)
	for i := range rs {
		rs[i] = Reading{Time: start + int64(i)*1000, Value: float64(2300+r.IntN(41)-20) / 10}
	}
	return rs
}

// temperature returns n float32-derived readings that need the XOR codec.
func temperature(r *rand.Rand, n int, start int64) []Reading {
	rs := make([]Reading, n)
	v := float32(21.3)
	for i := range rs {
		v += float32(r.NormFloat64() * 0.01)
		rs[i] = Reading{Time: start + int64(i)*10_000, Value: float64(v)}
	}
	return rs
}

// testID returns a non-zero batch ID derived from b.
func testID(b byte) BatchID {
	var id BatchID
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

// householdBatch returns a batch of series × per household readings.
func householdBatch(r *rand.Rand, series, per int) *Batch {
	b := &Batch{ID: testID(1)}
	for i := range series {
		key := "meter-" + string(rune('a'+i%26)) + "/import_power_w_" + strconv.Itoa(i)
		b.Series = append(b.Series, Series{Key: key, Readings: household(r, per, t0+int64(i))})
	}
	return b
}

// sameReadings reports whether a and b are equal bit for bit.
func sameReadings(a, b []Reading) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Time != b[i].Time || a[i].Quality != b[i].Quality ||
			math.Float64bits(a[i].Value) != math.Float64bits(b[i].Value) {
			return false
		}
	}
	return true
}

// checkSameBatch fails t unless got carries the same ID, keys and readings
// as want. It ignores the decode-only fields of want if they are zero.
func checkSameBatch(t testing.TB, got, want *Batch) {
	t.Helper()
	if got.ID != want.ID {
		t.Fatalf("ID = %v, want %v", got.ID, want.ID)
	}
	if len(got.Series) != len(want.Series) {
		t.Fatalf("%d series, want %d", len(got.Series), len(want.Series))
	}
	for i := range got.Series {
		g, w := &got.Series[i], &want.Series[i]
		if g.Key != w.Key {
			t.Fatalf("series %d: key %q, want %q", i, g.Key, w.Key)
		}
		if !sameReadings(g.Readings, w.Readings) {
			t.Fatalf("series %d: readings differ:\n got %v\nwant %v", i, g.Readings, w.Readings)
		}
		if w.Block != nil && (g.MinTime != w.MinTime || g.MaxTime != w.MaxTime) {
			t.Fatalf("series %d: time range [%d, %d], want [%d, %d]", i, g.MinTime, g.MaxTime, w.MinTime, w.MaxTime)
		}
	}
	if len(got.Meters) != len(want.Meters) {
		t.Fatalf("%d meters, want %d", len(got.Meters), len(want.Meters))
	}
	for i := range got.Meters {
		if got.Meters[i] != want.Meters[i] {
			t.Fatalf("meter %d: %+v, want %+v", i, got.Meters[i], want.Meters[i])
		}
	}
}

// rawSeries is a series whose block is given as bytes, to build batches
// AppendBatch refuses.
type rawSeries struct {
	key   string
	block []byte
}

// rawBatch encodes a batch without any check.
func rawBatch(id BatchID, ss ...rawSeries) []byte {
	body := append([]byte{}, id[:]...)
	body = binary.AppendUvarint(body, uint64(len(ss)))
	for _, s := range ss {
		body = appendPair(body, s.key, string(s.block))
	}
	return frame(version, body)
}

// appendPair appends two length-prefixed byte strings.
func appendPair(b []byte, x, y string) []byte {
	b = binary.AppendUvarint(b, uint64(len(x)))
	b = append(b, x...)
	b = binary.AppendUvarint(b, uint64(len(y)))
	return append(b, y...)
}

// frame wraps a body in the batch header (magic, version, length), unchecked.
func frame(ver byte, body []byte) []byte {
	out := append([]byte(magic), ver)
	out = binary.AppendUvarint(out, uint64(len(body)))
	return append(out, body...)
}

// regular returns n readings, 1 per second from start, of value v.
func regular(n int, start int64, v float64) []Reading {
	rs := make([]Reading, n)
	for i := range rs {
		rs[i] = Reading{Time: start + int64(i)*1000, Value: v}
	}
	return rs
}
