package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/store"
	"github.com/custos-iot/custos/internal/wire"
)

func TestRectifyStore(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000).UTC()
	for name, open := range backends(t, func() time.Time { return now }) {
		t.Run(name, func(t *testing.T) { testRectifyStore(t, open(t), now) })
	}
}

// storeReadings lands rs on f's stream as one batch and compacts them.
func storeReadings(t *testing.T, s *store.Store, f fixture, id byte, rs []wire.Reading) {
	t.Helper()
	ctx := context.Background()
	c := series.Chunk{Tenant: f.tenant.ID, Subject: f.subject.ID, Stream: f.stream.ID, MinTime: rs[0].Time, MaxTime: rs[len(rs)-1].Time, Count: len(rs), Data: wire.AppendBlock(nil, rs)}
	if _, err := s.WriteBatches(ctx, 1, []series.Batch{{Connector: f.connector.ID, ID: [16]byte{id, 1}, Readings: len(rs), Chunks: []series.Chunk{c}}}); err != nil {
		t.Fatal(err)
	}
	if err := (&series.Compactor{Store: s}).Once(ctx); err != nil {
		t.Fatal(err)
	}
}

func allReadings(t *testing.T, s *store.Store, f fixture) []series.Reading {
	t.Helper()
	p, err := series.Read(context.Background(), s, series.Query{Tenant: f.tenant.ID, Stream: f.stream.ID, From: 0, To: 1 << 50, Limit: series.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	return p.Readings
}

func allBuckets(t *testing.T, s *store.Store, f fixture) map[rollup.Resolution][]rollup.Bucket {
	t.Helper()
	out := map[rollup.Resolution][]rollup.Bucket{}
	for _, res := range rollup.Aggregated {
		bs, err := series.ReadRollups(context.Background(), s, series.RollupQuery{Tenant: f.tenant.ID, Stream: f.stream.ID, Res: res, From: 0, To: 1 << 50})
		if err != nil {
			t.Fatal(err)
		}
		out[res] = bs
	}
	return out
}

// testRectifyStore: a rectification's writes (chunks replaced, rollup rows
// replaced and deleted, the request finished and its parts deleted) are
// committed together, or — when it fails anywhere — not at all; parts of
// corrections follow the request's life (added while it is pending,
// deleted when it is refused or the subject's requests are erased) and are
// visited by Reseal; other streams are untouched.
func testRectifyStore(t *testing.T, s *store.Store, now time.Time) {
	ctx := context.Background()
	a, b := seed(t, s, "a"), seed(t, s, "b")
	const h0 = int64(1_780_000_000_000) / 3_600_000 * 3_600_000
	var rs []wire.Reading
	for i := range int64(720) { // two hours, every 10 s
		rs = append(rs, wire.Reading{Time: h0 + i*10_000, Value: float64(i)})
	}
	storeReadings(t, s, a, 1, rs)
	storeReadings(t, s, b, 2, rs)
	bBefore, bBuckets := allReadings(t, s, b), allBuckets(t, s, b)

	claim := &rights.RectificationClaim{Stream: a.stream.ID, Grounds: "the meter was miswired"}
	req := rights.Request{ID: "rrq_1", Tenant: a.tenant.ID, Subject: a.subject.ID, Kind: rights.Rectification, RequestedBy: rights.BySubject,
		Rectification: claim, Status: rights.Open, Opened: now, Due: rights.DueAfter(now), Updated: now}
	part := func(seq int) store.RectificationPart {
		return store.RectificationPart{Tenant: a.tenant.ID, Request: req.ID, Seq: seq, Subject: a.subject.ID, Stream: a.stream.ID, Count: 1, Data: []byte("sealed")}
	}
	if err := req.AddCorrections(1, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRightsRequest(ctx, req, part(1)); err != nil {
		t.Fatal(err)
	}
	if err := req.AddCorrections(1, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AddRectificationPart(ctx, req, part(2)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddRectificationPart(ctx, req, part(2)); !errs.Is(errs.Conflict, err) {
		t.Errorf("a part with a taken number: %v", err)
	}
	got, err := s.RightsRequest(ctx, a.tenant.ID, req.ID)
	if err != nil || got.Rectification == nil || got.Rectification.Corrections != 2 || got.Rectification.Parts != 2 || got.Rectification.Grounds != claim.Grounds {
		t.Fatalf("stored request: %+v %v", got.Rectification, err)
	}
	parts, err := s.RectificationParts(ctx, a.tenant.ID, req.ID)
	if err != nil || len(parts) != 2 || parts[1].Seq != 2 || string(parts[0].Data) != "sealed" {
		t.Fatalf("parts: %+v %v", parts, err)
	}
	var sealed []store.Sealed
	if _, err := s.Reseal(ctx, a.tenant.ID, a.subject.ID, func(v *store.Sealed) ([]byte, error) {
		if v.Kind == store.SealedCorrections {
			sealed = append(sealed, *v)
		}
		return nil, nil
	}); err != nil || len(sealed) != 2 || sealed[0].Request != string(req.ID) || sealed[1].Seq != 2 {
		t.Errorf("Reseal visited parts %+v (%v)", sealed, err)
	}

	r := series.Rectification{Tenant: a.tenant.ID, Subject: a.subject.ID, Stream: a.stream.ID,
		Corrections: []series.Correction{{Time: h0 + 10_000, Value: 1e6}},
		Delete:      []series.TimeRange{{From: h0 + 3_600_000, To: h0 + 7_200_000}}} // all of the second hour
	apply := func(parts int, fail error) (series.Rectified, error) {
		var out series.Rectified
		err := s.Rectify(ctx, a.tenant.ID, a.stream.ID, func(ctx context.Context, tx *store.RectifyTx) error {
			res, err := r.Apply(ctx, tx, nil)
			if err != nil {
				return err
			}
			if fail != nil {
				return fail
			}
			out = res
			done := req
			done.Status, done.Evidence = rights.Done, []byte(`{"corrected":1}`)
			return tx.FinishRequest(ctx, done, parts)
		})
		return out, err
	}
	before, buckets := allReadings(t, s, a), allBuckets(t, s, a)
	unchanged := func(what string) {
		t.Helper()
		if !slices.Equal(allReadings(t, s, a), before) || !sameBucketMaps(allBuckets(t, s, a), buckets) {
			t.Errorf("%s: the stream changed", what)
		}
		if got, _ := s.RightsRequest(ctx, a.tenant.ID, req.ID); got.Status != rights.Open {
			t.Errorf("%s: the request is %s", what, got.Status)
		}
	}
	// A failure after every write rolls all of them back.
	if _, err := apply(2, errors.New("crash")); err == nil {
		t.Fatal("no error")
	}
	unchanged("a failure")
	// A part added meanwhile (the count differs) fails the whole.
	if _, err := apply(1, nil); !errs.Is(errs.Conflict, err) {
		t.Fatalf("a part added meanwhile: %v", err)
	}
	unchanged("a part added meanwhile")

	res, err := apply(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Corrected != 1 || res.Deleted != 360 {
		t.Errorf("result %+v", res)
	}
	after := allReadings(t, s, a)
	if len(after) != 360 || after[1].Value != 1e6 || after[1].Quality != wire.QualitySubstituted || after[2] != before[2] {
		t.Errorf("readings after: %d, %+v", len(after), after[:3])
	}
	bs := allBuckets(t, s, a)
	if len(bs[rollup.Hour]) != 1 || bs[rollup.Hour][0].Max != 1e6 || bs[rollup.Hour][0].Count != 360 || len(bs[rollup.Min15]) != 4 {
		t.Errorf("buckets after: %+v", bs)
	}
	if bs[rollup.Day][0].Count != 360 || bs[rollup.Month][0].Max != 1e6 {
		t.Errorf("day and month after: %+v %+v", bs[rollup.Day], bs[rollup.Month])
	}
	if got, _ := s.RightsRequest(ctx, a.tenant.ID, req.ID); got.Status != rights.Done || string(got.Evidence) != `{"corrected":1}` {
		t.Errorf("request after: %+v", got)
	}
	if parts, _ := s.RectificationParts(ctx, a.tenant.ID, req.ID); len(parts) != 0 {
		t.Errorf("%d parts left after the request was applied", len(parts))
	}
	// A done request is not finished twice.
	r.Delete = nil
	if _, err := apply(0, nil); !errs.Is(errs.Conflict, err) {
		t.Errorf("finishing a done request: %v", err)
	}
	if !slices.Equal(allReadings(t, s, b), bBefore) || !sameBucketMaps(allBuckets(t, s, b), bBuckets) {
		t.Error("the other subject's stream changed")
	}

	// Refusing a request deletes its parts; erasing the subject's requests
	// deletes them too (erasure requests stay).
	req2 := req
	req2.ID, req2.Status = "rrq_2", rights.Open
	p1 := part(1)
	p1.Request = req2.ID
	if err := s.CreateRightsRequest(ctx, req2, p1); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRightsRequest(ctx, rights.Request{ID: "rrq_3", Tenant: a.tenant.ID, Subject: a.subject.ID, Kind: rights.Rectification, RequestedBy: rights.ByDPO,
		Rectification: claim, Status: rights.Open, Opened: now, Due: now, Updated: now}, store.RectificationPart{Tenant: a.tenant.ID, Request: "rrq_3", Seq: 1, Subject: a.subject.ID, Stream: a.stream.ID, Count: 1, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	req2.Status, req2.Reason = rights.Refused, "the readings are accurate"
	if err := s.UpdateRightsRequest(ctx, req2); err != nil {
		t.Fatal(err)
	}
	if parts, _ := s.RectificationParts(ctx, a.tenant.ID, req2.ID); len(parts) != 0 {
		t.Errorf("%d parts left after a refusal", len(parts))
	}
	if err := s.AddRectificationPart(ctx, req2, p1); !errs.Is(errs.Conflict, err) {
		t.Errorf("a part for a refused request: %v", err)
	}
	// Done and refused are final, whoever got there first.
	reopened := req2
	reopened.Status = rights.InProgress
	if err := s.UpdateRightsRequest(ctx, reopened); !errs.Is(errs.Conflict, err) {
		t.Errorf("a refused request reopened: %v", err)
	}
	reopened.ID = "rrq_nope"
	if err := s.UpdateRightsRequest(ctx, reopened); !errs.Is(errs.NotFound, err) {
		t.Errorf("an unknown request updated: %v", err)
	}
	if _, err := s.EraseSubjectRightsRequests(ctx, a.tenant.ID, a.subject.ID); err != nil {
		t.Fatal(err)
	}
	if parts, _ := s.RectificationParts(ctx, a.tenant.ID, "rrq_3"); len(parts) != 0 {
		t.Errorf("%d parts left after erasure", len(parts))
	}
}

func sameBucketMaps(a, b map[rollup.Resolution][]rollup.Bucket) bool {
	for _, res := range rollup.Aggregated {
		if !slices.Equal(a[res], b[res]) {
			return false
		}
	}
	return true
}
