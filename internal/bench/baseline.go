package bench

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// BaselineDurable measures the disk's limit for the ingest contract "a
// batch is durable before it is acknowledged", without any grouping: one
// writer appends each batch of readings to a plain file as fixed 17-byte
// records (time, value, quality) and fdatasyncs after every batch. It
// returns acknowledged readings per second.
func BaselineDurable(dir string, batch int, d time.Duration) (float64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "plain-durable.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, batch*17)
	var n int64
	start := time.Now()
	for t := int64(0); time.Since(start) < d; {
		for i := range batch {
			o := i * 17
			binary.LittleEndian.PutUint64(buf[o:], uint64(t))
			binary.LittleEndian.PutUint64(buf[o+8:], math.Float64bits(float64(i)))
			buf[o+16] = 0
			t += 1000
		}
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := fdatasync(f); err != nil {
			return 0, err
		}
		n += int64(batch)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// BaselineGrouped measures the same with the hub's group-commit policy:
// producers (one per connector) hand batches to one appender that writes
// whatever is pending and makes it durable with one fdatasync before
// acknowledging all of it. With many producers this is bound by memory
// copies and write calls rather than the disk. It returns acknowledged
// readings per second.
func BaselineGrouped(dir string, producers, batch int, d time.Duration) (float64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "plain.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	type req struct {
		buf  []byte
		done chan error
	}
	queue := make(chan req, producers)
	var acked atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	deadline := time.Now().Add(d)
	start := time.Now()
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, batch*17)
			done := make(chan error, 1)
			t := int64(p) << 32
			for time.Now().Before(deadline) {
				for i := range batch {
					o := i * 17
					binary.LittleEndian.PutUint64(buf[o:], uint64(t))
					binary.LittleEndian.PutUint64(buf[o+8:], math.Float64bits(float64(i)))
					buf[o+16] = 0
					t += 1000
				}
				queue <- req{buf, done}
				if err := <-done; err != nil {
					return
				}
				acked.Add(int64(batch))
			}
		}()
	}
	var werr error
	go func() {
		for {
			var group []req
			select {
			case r := <-queue:
				group = append(group, r)
			case <-stop:
				return
			}
		more:
			for {
				select {
				case r := <-queue:
					group = append(group, r)
				default:
					break more
				}
			}
			var err error
			for _, r := range group {
				if _, err = f.Write(r.buf); err != nil {
					break
				}
			}
			if err == nil {
				err = fdatasync(f)
			}
			if err != nil {
				werr = err
			}
			for _, r := range group {
				r.done <- err
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	return float64(acked.Load()) / elapsed.Seconds(), werr
}
