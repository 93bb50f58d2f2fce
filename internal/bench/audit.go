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
)

// AuditResult is the outcome of `custos bench audit`.
type AuditResult struct {
	// AppendPerSec: entries made durable per second on the hub's file
	// storage by Callers concurrent appenders (the log group-commits them).
	AppendPerSec float64 `json:"append_per_sec"`
	Callers      int     `json:"callers"`
	// Verify1MS: offline verification of an exported 1,000,000-entry log.
	Verify1MS float64 `json:"verify_1m_s"`
	// ReadOverheadRatio: median latency of an API read (a day of
	// 15-minute aggregates) with the audit log over the same read on a hub
	// whose entries are discarded, same run.
	ReadOverheadRatio float64 `json:"read_overhead_ratio"`
	ReadAuditedMS     float64 `json:"read_audited_p50_ms"`
	ReadUnauditedMS   float64 `json:"read_unaudited_p50_ms"`
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
	for _, off := range []bool{false, true} {
		p50, err := auditedRead(ctx, filepath.Join(dir, fmt.Sprint("hub-", off)), off)
		if err != nil {
			return res, err
		}
		if off {
			res.ReadUnauditedMS = p50
		} else {
			res.ReadAuditedMS = p50
		}
	}
	if res.ReadUnauditedMS > 0 {
		res.ReadOverheadRatio = res.ReadAuditedMS / res.ReadUnauditedMS
	}
	return res, nil
}

// auditedRead times reads of a day of 15-minute aggregates through the API.
func auditedRead(ctx context.Context, dir string, auditOff bool) (float64, error) {
	b, err := newBedWith(ctx, dir, func(c *hub.Config) { c.AuditOff = auditOff })
	if err != nil {
		return 0, err
	}
	defer b.stop()
	hh, dev, err := b.household(ctx, "house-a")
	if err != nil {
		return 0, err
	}
	day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := b.load(ctx, hh, dev, day, time.Second, 86400); err != nil {
		return 0, err
	}
	if err := b.h.Compactor.Once(ctx); err != nil {
		return 0, err
	}
	var ds []time.Duration
	for range 300 {
		t := time.Now()
		if _, err := b.c.Aggregates(ctx, b.ten, hh.Streams[0].ID, "15m", day.UnixMilli(), day.AddDate(0, 0, 1).UnixMilli()); err != nil {
			return 0, err
		}
		ds = append(ds, time.Since(t))
	}
	return percentile(ds, 0.5), nil
}
