package spool

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// The benchmarks use b.TempDir, so they measure the real disk's fsync.

func BenchmarkAppendSyncAlways(b *testing.B) {
	s := mustOpen(b, Options{Dir: b.TempDir(), MaxBytes: 1 << 40})
	defer s.Close()
	p := make([]byte, 4<<10)
	b.SetBytes(int64(len(p)))
	start := time.Now()
	for b.Loop() {
		if err := s.Append(p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

func BenchmarkAppendGroup8(b *testing.B) {
	s := mustOpen(b, Options{Dir: b.TempDir(), MaxBytes: 1 << 40, Sync: SyncPolicy{Every: 2 * time.Millisecond}})
	defer s.Close()
	p := make([]byte, 4<<10)
	b.SetBytes(int64(len(p)))
	b.SetParallelism((8 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Append(p); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// BenchmarkPeekAck consumes 1 KiB records in batches of 100 (one durable Ack
// per batch). The records are written directly in the segment format.
func BenchmarkPeekAck(b *testing.B) {
	dir := b.TempDir()
	const segBytes = 4 << 20
	p := make([]byte, 1<<10)
	rec := encode(p)
	perSeg := segBytes / len(rec)
	n := b.N
	for seq := uint64(1); n > 0; seq++ {
		k := min(n, perSeg)
		buf := make([]byte, 0, k*len(rec))
		for range k {
			buf = append(buf, rec...)
		}
		if err := os.WriteFile(filepath.Join(dir, segName(seq)), buf, 0o600); err != nil {
			b.Fatal(err)
		}
		n -= k
	}
	s := mustOpen(b, Options{Dir: dir, SegmentBytes: segBytes, MaxBytes: 1 << 40})
	defer s.Close()
	b.SetBytes(int64(len(p)))
	b.ResetTimer()
	start := time.Now()
	for got := 0; got < b.N; {
		recs, err := s.Peek(100, 0)
		if err != nil || len(recs) == 0 {
			b.Fatalf("Peek: %d records, %v", len(recs), err)
		}
		if err := s.Ack(recs[len(recs)-1].Pos); err != nil {
			b.Fatal(err)
		}
		got += len(recs)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
