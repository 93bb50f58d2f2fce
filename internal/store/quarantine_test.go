package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/store"
)

func TestQuarantineStore(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000).UTC()
	for name, open := range backends(t, func() time.Time { return now }) {
		t.Run(name, func(t *testing.T) { testQuarantineStore(t, open(t)) })
	}
}

// testQuarantineStore: quarantined blocks are written with their batch, at
// most once however often the batch is replayed; listed per tenant and
// stream in pages; released into the landing area or rejected, all or
// nothing, never across tenants; purged with an erased subject's rows.
func testQuarantineStore(t *testing.T, s *store.Store) {
	ctx := context.Background()
	a, b := seed(t, s, "a"), seed(t, s, "b")
	qb := func(seq int, min int64) series.Quarantined {
		return series.Quarantined{Tenant: a.tenant.ID, Subject: a.subject.ID, Stream: a.stream.ID, Connector: a.connector.ID,
			Seq: seq, Received: 99, MinTime: min, MaxTime: min + 10, Count: 2, Reasons: []byte(`[{"index":0,"reasons":[{"rule":"limit","detail":"x"}]}]`), Data: []byte("sealed")}
	}
	batch := series.Batch{Connector: a.connector.ID, ID: [16]byte{1}, Readings: 5,
		Chunks:     []series.Chunk{{Tenant: a.tenant.ID, Subject: a.subject.ID, Stream: a.stream.ID, MinTime: 0, MaxTime: 5, Count: 3, Data: []byte("ok")}},
		Quarantine: []series.Quarantined{qb(0, 100), qb(1, 200)}}
	for i := range batch.Quarantine {
		batch.Quarantine[i].Batch = batch.ID
	}
	for range 3 { // the first stores, the replays add nothing
		if _, err := s.WriteBatches(ctx, 1, []series.Batch{batch}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.QuarantineCount(ctx, a.tenant.ID, a.stream.ID); err != nil || n != 4 {
		t.Fatalf("quarantined readings after replays: %d %v, want 4", n, err)
	}
	if n, _ := s.ReadingCount(ctx, a.tenant.ID, a.stream.ID); n != 3 {
		t.Fatalf("stored readings: %d, want 3", n)
	}
	page, err := s.Quarantine(ctx, a.tenant.ID, "", 0, 1)
	if err != nil || len(page) != 1 || page[0].Batch != batch.ID || page[0].Seq != 0 || string(page[0].Data) != "sealed" || page[0].MinTime != 100 {
		t.Fatalf("first page: %+v %v", page, err)
	}
	next, err := s.Quarantine(ctx, a.tenant.ID, a.stream.ID, page[0].ID, 10)
	if err != nil || len(next) != 1 || next[0].Seq != 1 {
		t.Fatalf("second page: %+v %v", next, err)
	}
	if other, err := s.Quarantine(ctx, b.tenant.ID, "", 0, 10); err != nil || len(other) != 0 {
		t.Fatalf("tenant b sees %d of a's blocks (%v)", len(other), err)
	}
	// Across tenants, or with one unknown ID, nothing changes.
	if _, err := s.RejectQuarantine(ctx, b.tenant.ID, []int64{page[0].ID}); !errs.Is(errs.NotFound, err) {
		t.Fatalf("reject through tenant b: %v", err)
	}
	if _, err := s.RejectQuarantine(ctx, a.tenant.ID, []int64{page[0].ID, 1 << 40}); !errs.Is(errs.NotFound, err) {
		t.Fatalf("reject with an unknown ID: %v", err)
	}
	if _, err := s.RejectQuarantine(ctx, a.tenant.ID, []int64{page[0].ID, page[0].ID}); !errs.Is(errs.Invalid, err) {
		t.Fatalf("reject with a repeated ID: %v", err)
	}
	if n, _ := s.QuarantineCount(ctx, a.tenant.ID, a.stream.ID); n != 4 {
		t.Fatalf("refused rejections changed the quarantine: %d", n)
	}
	n, err := s.ReleaseQuarantine(ctx, a.tenant.ID, []int64{page[0].ID}, func(q *series.Quarantined) (series.Chunk, error) {
		return series.Chunk{Tenant: q.Tenant, Subject: q.Subject, Stream: q.Stream, MinTime: q.MinTime, MaxTime: q.MaxTime, Count: q.Count, Data: []byte("landed")}, nil
	})
	if err != nil || n != 2 {
		t.Fatalf("release: %d %v", n, err)
	}
	if n, _ := s.ReadingCount(ctx, a.tenant.ID, a.stream.ID); n != 5 {
		t.Fatalf("stored readings after release: %d, want 5", n)
	}
	if _, err := s.ReleaseQuarantine(ctx, a.tenant.ID, []int64{page[0].ID}, nil); !errs.Is(errs.NotFound, err) {
		t.Fatalf("second release: %v", err)
	}
	if n, err := s.RejectQuarantine(ctx, a.tenant.ID, []int64{next[0].ID}); err != nil || n != 2 {
		t.Fatalf("reject: %d %v", n, err)
	}
	if n, _ := s.QuarantineCount(ctx, a.tenant.ID, a.stream.ID); n != 0 {
		t.Fatalf("quarantine after release and reject: %d", n)
	}

	// Policies and saved state.
	if p, err := s.PlausibilityPolicy(ctx, a.tenant.ID); err != nil || p != nil {
		t.Fatalf("no policy: %q %v", p, err)
	}
	for _, p := range []string{`{"max_power_w":5000}`, `{"disabled":true}`} {
		if err := s.SetPlausibilityPolicy(ctx, a.tenant.ID, []byte(p), time.Now()); err != nil {
			t.Fatal(err)
		}
		if got, err := s.PlausibilityPolicy(ctx, a.tenant.ID); err != nil || string(got) != p {
			t.Fatalf("policy: %q %v, want %q", got, err, p)
		}
	}
	st := series.PlausibilityState{Tenant: a.tenant.ID, Subject: a.subject.ID, Stream: a.stream.ID, Data: []byte("v1")}
	for _, d := range []string{"v1", "v2"} {
		st.Data = []byte(d)
		if err := s.SavePlausibilityStates(ctx, []series.PlausibilityState{st}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.LoadPlausibilityState(ctx, a.tenant.ID, a.stream.ID); err != nil || string(got.Data) != "v2" || got.Subject != a.subject.ID {
		t.Fatalf("state: %+v %v", got, err)
	}
	if _, err := s.LoadPlausibilityState(ctx, b.tenant.ID, a.stream.ID); !errs.Is(errs.NotFound, err) {
		t.Fatalf("a's state through tenant b: %v", err)
	}

	// Purge after erasure removes quarantine and saved state.
	batch.ID = [16]byte{2}
	for i := range batch.Quarantine {
		batch.Quarantine[i].Batch = batch.ID
	}
	if _, err := s.WriteBatches(ctx, 1, []series.Batch{batch}); err != nil {
		t.Fatal(err)
	}
	e := &store.Erasure{Subject: a.subject.ID, Tenant: a.tenant.ID, Requested: time.Now(), KeyDestroyed: time.Now()}
	if err := s.EraseSubject(ctx, e); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := s.Purge(ctx, *e, 1, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if n, _ := s.QuarantineCount(ctx, a.tenant.ID, a.stream.ID); n != 0 {
		t.Errorf("%d quarantined readings left after purge", n)
	}
	if _, err := s.LoadPlausibilityState(ctx, a.tenant.ID, a.stream.ID); !errs.Is(errs.NotFound, err) {
		t.Errorf("saved state left after purge: %v", err)
	}
}
