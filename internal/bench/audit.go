package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/registry"
)

// AuditResult is the outcome of `custos bench audit`.
type AuditResult struct {
	// AppendPerSec: entries made durable per second on the hub's file
	// storage by Callers concurrent appenders (the log group-commits them).
	AppendPerSec float64 `json:"append_per_sec"`
	Callers      int     `json:"callers"`
	// Verify1MS: offline verification of an exported 1,000,000-entry log.
	Verify1MS float64 `json:"verify_1m_s"`
	// ReadOverheadRatio: median latency of an API read of a day of raw
	// 1 s readings with the audit log over the same read on a hub whose
	// entries are discarded, the two hubs side by side in the same run.
	ReadOverheadRatio float64 `json:"read_overhead_ratio"`
	ReadAuditedMS     float64 `json:"read_audited_p50_ms"`
	ReadUnauditedMS   float64 `json:"read_unaudited_p50_ms"`
	// SmallRead*: the same for the smallest read, a day of 15-minute
	// aggregates (96 buckets), where the entry's fsync weighs most.
	SmallReadOverheadRatio float64 `json:"small_read_overhead_ratio"`
	SmallReadAuditedMS     float64 `json:"small_read_audited_p50_ms"`
	SmallReadUnauditedMS   float64 `json:"small_read_unaudited_p50_ms"`
}

// Audit runs the audit log benchmarks.
func Audit(ctx context.Context, dir string, d time.Duration, progress io.Writer) (AuditResult, error) {
	var res AuditResult
	if d <= 0 {
		d = 3 * time.Second
	}
	if dir == "" {
		t, err := os.MkdirTemp("", "custos-bench-audit-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(t)
		dir = t
	}
	skey, vkey, err := audit.GenerateKey(rand.Reader, "bench.custos/audit")
	if err != nil {
		return res, err
	}
	signer, _ := audit.NewSigner(skey)
	verifier, _ := audit.NewVerifier(vkey)

	fmt.Fprintf(progress, "appending for %s...\n", d)
	st, err := audit.OpenFileStorage(filepath.Join(dir, "append"))
	if err != nil {
		return res, err
	}
	l, err := audit.Open(ctx, audit.Config{Storage: st, Origin: signer.Name(), Signer: signer, Verifier: verifier})
	if err != nil {
		return res, err
	}
	res.Callers = 256
	var n atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range res.Callers {
		wg.Go(func() {
			e := audit.Entry{Principal: audit.PrincipalID(fmt.Sprintf("con_bench%03d", i)), Action: "ingest.batch", Resource: "batch/x", Outcome: audit.Allowed}
			for time.Now().Before(deadline) {
				if _, err := l.Append(ctx, e); err != nil {
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	res.AppendPerSec = float64(n.Load()) / time.Since(start).Seconds()
	l.Close()

	fmt.Fprintf(progress, "building and verifying a 1,000,000-entry log...\n")
	ml, err := audit.Open(ctx, audit.Config{Storage: audit.NewMemoryStorage(), Origin: signer.Name(), Signer: signer, Verifier: verifier, CheckpointInterval: -1})
	if err != nil {
		return res, err
	}
	batch := make([]audit.Entry, 8192)
	for i := range batch {
		batch[i] = audit.Entry{Principal: "usr_bench", Action: "series.read", Resource: audit.Resource(fmt.Sprintf("stream/str_%06d", i)), Outcome: audit.Allowed, Subject: "sub_bench"}
	}
	for i := 0; i < 1_000_000; i += len(batch) {
		if _, err := ml.AppendBatch(ctx, batch[:min(len(batch), 1_000_000-i)]); err != nil {
			return res, err
		}
	}
	cp, err := ml.Sign(ctx)
	if err != nil {
		return res, err
	}
	var buf bytes.Buffer
	if err := audit.ExportAt(ctx, &buf, ml, cp, 0, ml.Size()); err != nil {
		return res, err
	}
	t := time.Now()
	rep, err := audit.Verify(bytes.NewReader(buf.Bytes()), nil, vkey, nil, 0)
	if err != nil || rep.Entries != 1_000_000 {
		return res, fmt.Errorf("verify: %d entries, %v", rep.Entries, err)
	}
	res.Verify1MS = time.Since(t).Seconds()
	ml.Close()

	fmt.Fprintf(progress, "timing reads with and without the audit log...\n")
	small, raw, err := auditedReads(ctx, dir)
	if err != nil {
		return res, err
	}
	res.SmallReadAuditedMS, res.SmallReadUnauditedMS = small[0], small[1]
	res.ReadAuditedMS, res.ReadUnauditedMS = raw[0], raw[1]
	if small[1] > 0 {
		res.SmallReadOverheadRatio = small[0] / small[1]
	}
	if raw[1] > 0 {
		res.ReadOverheadRatio = raw[0] / raw[1]
	}
	return res, nil
}

// readBed is a hub with a day of readings of one household.
type readBed struct {
	*bed
	stream registry.StreamID
	from   int64
	to     int64
}

func newReadBed(ctx context.Context, dir string, auditOff bool) (*readBed, error) {
	return newReadBedWith(ctx, dir, func(c *hub.Config) { c.AuditOff = auditOff })
}

func newReadBedWith(ctx context.Context, dir string, tweak func(*hub.Config)) (*readBed, error) {
	b, err := newBedWith(ctx, dir, tweak)
	if err != nil {
		return nil, err
	}
	hh, dev, err := b.household(ctx, "house-a")
	if err != nil {
		b.stop()
		return nil, err
	}
	day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := b.load(ctx, hh, dev, day, time.Second, 86400); err != nil {
		b.stop()
		return nil, err
	}
	if err := b.h.Compactor.Once(ctx); err != nil {
		b.stop()
		return nil, err
	}
	return &readBed{b, hh.Streams[0].ID, day.UnixMilli(), day.AddDate(0, 0, 1).UnixMilli()}, nil
}

func (rb *readBed) read(ctx context.Context, raw bool) (time.Duration, error) {
	t := time.Now()
	var err error
	if raw {
		_, err = rb.c.AllReadings(ctx, rb.ten, rb.stream, rb.from, rb.to)
	} else {
		_, err = rb.c.Aggregates(ctx, rb.ten, rb.stream, "15m", rb.from, rb.to)
	}
	return time.Since(t), err
}

// auditedReads times reads through the API on two hubs running side by
// side, one auditing and one discarding its entries, alternating requests
// so that both see the same machine. It returns the median latencies
// (audited, unaudited) of the small read and of the raw day.
func auditedReads(ctx context.Context, dir string) (small, raw [2]float64, err error) {
	on, err := newReadBed(ctx, filepath.Join(dir, "audited"), false)
	if err != nil {
		return small, raw, err
	}
	defer on.stop()
	off, err := newReadBed(ctx, filepath.Join(dir, "unaudited"), true)
	if err != nil {
		return small, raw, err
	}
	defer off.stop()
	for k, n := range map[bool]int{false: 2000, true: 60} {
		var a, u []time.Duration
		for i := range n {
			first, second := on, off
			if i%2 == 1 {
				first, second = off, on
			}
			d1, err := first.read(ctx, k)
			if err != nil {
				return small, raw, err
			}
			d2, err := second.read(ctx, k)
			if err != nil {
				return small, raw, err
			}
			if first == on {
				a, u = append(a, d1), append(u, d2)
			} else {
				u, a = append(u, d1), append(a, d2)
			}
		}
		m := [2]float64{percentile(a, 0.5), percentile(u, 0.5)}
		if k {
			raw = m
		} else {
			small = m
		}
	}
	return small, raw, nil
}
