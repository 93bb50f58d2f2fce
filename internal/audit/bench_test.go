package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkAppend: durable appends to FileStorage (fsync per group commit)
// from many concurrent callers, as the hub's request handlers would.
func BenchmarkAppend(b *testing.B) {
	for _, callers := range []int{1, 64, 512} {
		b.Run("callers="+strconv.Itoa(callers), func(b *testing.B) {
			st, err := OpenFileStorage(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			l := openTestLog(b, st, 1)
			ctx := context.Background()
			e := testEntry(0)
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N/callers + 1
			for range callers {
				wg.Go(func() {
					for range per {
						if _, err := l.Append(ctx, e); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(per*callers)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkFileStorageAppend: one leaf written and made durable, the floor
// under a single request's audit latency (BenchmarkAppend/callers=1 adds
// the Log's sequencing and tree on top).
// BenchmarkFileStorageAppend times one durable single-entry append, with
// direct I/O into preallocated space (the default on Linux) and with
// buffered appends that grow the file: compare the two in one run.
func BenchmarkFileStorageAppend(b *testing.B) {
	for _, buffered := range []bool{false, true} {
		b.Run(fmt.Sprintf("buffered=%v", buffered), func(b *testing.B) {
			defer func(old bool) { bufferedAppends = old }(bufferedAppends)
			bufferedAppends = buffered
			st, leaf := benchStorage(b)
			ctx := context.Background()
			for b.Loop() {
				if _, err := st.Append(ctx, [][]byte{leaf}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFileStorageOverlap: a durable append next to 100 µs of the
// caller's own work (about a small read's handler), written before the
// work (Append) or started before it and finished after (StartAppend).
// Compare the two ns/op of one run.
func BenchmarkFileStorageOverlap(b *testing.B) {
	work := func() {
		for t := time.Now(); time.Since(t) < 100*time.Microsecond; {
		}
	}
	for _, started := range []bool{false, true} {
		b.Run(fmt.Sprintf("started=%v", started), func(b *testing.B) {
			st, leaf := benchStorage(b)
			ctx := context.Background()
			for b.Loop() {
				if !started {
					if _, err := st.Append(ctx, [][]byte{leaf}); err != nil {
						b.Fatal(err)
					}
					work()
					continue
				}
				if _, err := st.StartAppend([][]byte{leaf}); errors.Is(err, errors.ErrUnsupported) {
					b.Skip("no asynchronous direct I/O here")
				} else if err != nil {
					b.Fatal(err)
				}
				work()
				if err := st.FinishAppend(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchStorage opens a FileStorage for b and returns it with one entry's
// leaf.
func benchStorage(b *testing.B) (*FileStorage, []byte) {
	st, err := OpenFileStorage(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	leaf, err := testEntry(0).MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	return st, leaf
}

// BenchmarkVerify1M: offline verification of a 1,000,000-entry bundle.
func BenchmarkVerify1M(b *testing.B) {
	const n = 1_000_000
	ctx := context.Background()
	l := openTestLog(b, NewMemoryStorage(), 1)
	batch := make([]Entry, 0, 8192)
	for i := 0; i < n; i += len(batch) {
		batch = batch[:0]
		for j := i; j < min(n, i+8192); j++ {
			batch = append(batch, testEntry(j))
		}
		if _, err := l.AppendBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := l.Sign(ctx); err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Export(ctx, &buf, l, 0, n); err != nil {
		b.Fatal(err)
	}
	_, _, vkey := testKey(b, testOrigin, 1)
	b.SetBytes(int64(buf.Len()))
	b.ResetTimer()
	for range b.N {
		rep, err := Verify(bytes.NewReader(buf.Bytes()), nil, vkey, nil, 0)
		if err != nil || rep.Entries != n {
			b.Fatal(rep.Entries, err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/verify")
}

// BenchmarkInclusionProof: proofs in a 1M-entry log on FileStorage.
func BenchmarkInclusionProof(b *testing.B) {
	const n = 1 << 20
	ctx := context.Background()
	st, err := OpenFileStorage(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	l := openTestLog(b, st, 1)
	batch := make([]Entry, 8192)
	for i := range batch {
		batch[i] = testEntry(i)
	}
	for i := 0; i < n; i += len(batch) {
		if _, err := l.AppendBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := l.InclusionProof(ctx, uint64(i*7919)%n, n); err != nil {
			b.Fatal(err)
		}
	}
}
