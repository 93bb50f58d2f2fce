package rollup

import (
	"math"
	"testing"
)

// BenchmarkApply folds 100,000 readings — a 10-second meter over 11.5
// days, with one reading in 50 late by up to an hour — into all four
// resolutions.
func BenchmarkApply(b *testing.B) {
	start := ms(b, "2024-03-25T00:00:00Z")
	rs := every(start, 10_000, 100_000, func(i int) float64 { return 500 + 300*math.Sin(float64(i)/500) })
	for i := 0; i < len(rs); i += 50 {
		rs[i].Time -= int64(i*7919) % hourMS
	}
	b.ReportAllocs()
	for b.Loop() {
		Apply(map[Key]*Row{}, rs, Aggregated)
	}
	b.ReportMetric(float64(len(rs))*float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}

// dayOf15m returns a full day of 15-minute buckets.
func dayOf15m(b *testing.B) *Row {
	rs := every(ms(b, "2024-03-31T00:00:00Z"), 10_000, 8640, func(i int) float64 { return 500 + 300*math.Sin(float64(i)/90) })
	rows := map[Key]*Row{}
	Apply(rows, rs, []Resolution{Min15})
	for _, row := range rows {
		return row
	}
	return nil
}

func BenchmarkAppendRow(b *testing.B) {
	row := dayOf15m(b)
	buf := AppendRow(nil, row)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRow(buf[:0], row)
	}
	b.ReportMetric(float64(len(buf))/float64(len(row.Buckets)), "bytes/bucket")
}

func BenchmarkDecodeRow(b *testing.B) {
	buf := AppendRow(nil, dayOf15m(b))
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeRow(buf); err != nil {
			b.Fatal(err)
		}
	}
}
