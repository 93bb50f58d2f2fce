package wire

import (
	"testing"
)

// benchBatch is the benchmark workload: 10 household series × 100 readings.
func benchBatch() *Batch { return householdBatch(newRand(99), 10, 100) }

func reportReadings(b *testing.B, perOp int) {
	b.ReportMetric(float64(perOp)*float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}

func BenchmarkAppendBatch(b *testing.B) {
	batch := benchBatch()
	buf, err := AppendBatch(nil, batch)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if buf, err = AppendBatch(buf[:0], batch); err != nil {
			b.Fatal(err)
		}
	}
	reportReadings(b, batch.Len())
	b.ReportMetric(float64(len(buf))/float64(batch.Len()), "B/reading")
}

func BenchmarkDecodeBatch(b *testing.B) {
	batch := benchBatch()
	buf, err := AppendBatch(nil, batch)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeBatch(buf); err != nil {
			b.Fatal(err)
		}
	}
	reportReadings(b, batch.Len())
	b.ReportMetric(float64(len(buf))/float64(batch.Len()), "B/reading")
}

func blockWorkloads() []readingsCase {
	r := newRand(98)
	return []readingsCase{
		{"household", household(r, 100, t0)},
		{"energy", energy(r, 100, t0)},
		{"voltage", voltage(r, 100, t0)},
		{"xor", temperature(r, 100, t0)},
	}
}

func BenchmarkAppendBlock(b *testing.B) {
	for _, w := range blockWorkloads() {
		b.Run(w.name, func(b *testing.B) {
			buf := AppendBlock(nil, w.rs)
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendBlock(buf[:0], w.rs)
			}
			reportReadings(b, len(w.rs))
			b.ReportMetric(float64(len(buf))/float64(len(w.rs)), "B/reading")
		})
	}
}

func BenchmarkDecodeBlock(b *testing.B) {
	for _, w := range blockWorkloads() {
		b.Run(w.name, func(b *testing.B) {
			block := AppendBlock(nil, w.rs)
			dst := make([]Reading, 0, len(w.rs))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if dst, err = DecodeBlock(block, dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
			reportReadings(b, len(w.rs))
			b.ReportMetric(float64(len(block))/float64(len(w.rs)), "B/reading")
		})
	}
}
