package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/wire"
)

// streamSnap is everything a stream serves: its raw readings and its
// buckets at every resolution.
type streamSnap struct {
	raw  []series.Reading
	aggs map[rollup.Resolution]client.Buckets
}

func snapshot(t *testing.T, c *client.Client, ten registry.TenantID, st registry.StreamID) streamSnap {
	t.Helper()
	ctx := context.Background()
	raw, err := c.AllReadings(ctx, ten, st, 0, 1<<50)
	if err != nil {
		t.Fatal(err)
	}
	s := streamSnap{raw: raw, aggs: map[rollup.Resolution]client.Buckets{}}
	for _, res := range rollup.Aggregated {
		if s.aggs[res], err = c.Aggregates(ctx, ten, st, string(res), 0, 1<<50); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s streamSnap) equal(o streamSnap) bool {
	return slices.Equal(s.raw, o.raw) && reflect.DeepEqual(s.aggs, o.aggs)
}

// wantAggregates compares a stream's served buckets at every resolution
// with a reference aggregation of rs computed from scratch: counts, minima,
// maxima and deltas exactly, sums and means up to rounding.
func wantAggregates(t *testing.T, what string, got streamSnap, rs []wire.Reading) {
	t.Helper()
	rows := map[rollup.Key]*rollup.Row{}
	rollup.Apply(rows, rs, rollup.Aggregated)
	for _, res := range rollup.Aggregated {
		var rr []*rollup.Row
		for k, row := range rows {
			if k.Res == res {
				rr = append(rr, row)
			}
		}
		slices.SortFunc(rr, func(a, b *rollup.Row) int { return int(a.Period - b.Period) })
		want := rollup.Buckets(rr, 0, 1<<50)
		g := got.aggs[res].Buckets
		if len(g) != len(want) {
			t.Errorf("%s: %s has %d buckets, want %d", what, res, len(g), len(want))
			continue
		}
		close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(math.Abs(b), 1) }
		for i, w := range want {
			b := g[i]
			if b.T != w.Start || b.Count != w.Count || b.Min != w.Min || b.Max != w.Max || b.Delta != w.Delta() || !close(b.Sum, w.Sum) || !close(b.Mean, w.Mean()) {
				t.Errorf("%s: %s bucket %s is %+v, want %+v", what, res, series.FormatTime(w.Start), b, w)
			}
		}
	}
}

// asRead turns stored readings into what a read serves.
func asRead(rs []wire.Reading) []series.Reading {
	out := make([]series.Reading, len(rs))
	for i, r := range rs {
		out[i] = series.Reading{Time: r.Time, Value: r.Value, Quality: r.Quality}
	}
	return out
}

// TestRectification: a rectification request (GDPR art. 16) of a subject's
// stream, submitted in parts, applied as one audited action: afterwards
// the raw readings hold the corrected values and the buckets at every
// resolution equal a reference aggregation of the corrected data computed
// from scratch; other streams and subjects are untouched; bad requests are
// refused with a clear error and change nothing; the audit log has an
// entry for the request, each part and the application; the export shows
// the corrections while pending and the corrected readings after.
func TestRectification(t *testing.T) { eachBackend(t, testRectification) }

func testRectification(t *testing.T, cfg hub.Config) {
	cfg.DataDir = t.TempDir()
	cfg.PlausibilityOff = true // the sawtooth below is a test pattern, not a meter
	h, c := startHub(t, cfg)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Rectify Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID, "operations"); err != nil {
		t.Fatal(err)
	}
	c.Purpose = "operations"
	a := addMember(t, h, c, ten.ID, "house-a", registry.Profile{Name: "Member A"})
	b := addMember(t, h, c, ten.ID, "house-b", registry.Profile{Name: "Member B"})
	// Eight hours of readings every second across a day and a month
	// boundary, on a's two streams and b's first.
	start := time.Date(2026, 6, 30, 20, 0, 0, 0, time.UTC).UnixMilli()
	const n = 8 * 3600
	orig := make([]wire.Reading, n)
	for i := range orig {
		orig[i] = wire.Reading{Time: start + int64(i)*1000, Value: float64(i % 600)}
	}
	for _, p := range []struct {
		m      member
		stream int
	}{{a, 0}, {a, 1}, {b, 0}} {
		for i := 0; i < n; i += 3600 {
			p.m.post(t, h, p.stream, orig[i:i+3600])
		}
	}
	if err := h.Compactor.Once(ctx); err != nil {
		t.Fatal(err)
	}
	st := a.hh.Streams[0]
	before := snapshot(t, c, ten.ID, st.ID)
	otherStream, otherSubject := snapshot(t, c, ten.ID, a.hh.Streams[1].ID), snapshot(t, c, ten.ID, b.hh.Streams[0].ID)
	wantAggregates(t, "as stored", before, orig)

	// The rectification: every reading of the first 5 h 50 min gets a new
	// value, except ten minutes at 23:00 that are wrong altogether.
	del := series.TimeRange{From: start + 3*3_600_000, To: start + 3*3_600_000 + 600_000}
	var cs []series.Correction
	want := []wire.Reading{}
	for i, r := range orig {
		switch {
		case r.Time >= del.From && r.Time < del.To:
		case i < 21_000:
			v := 10_000 + float64(i%7)
			cs = append(cs, series.Correction{Time: r.Time, Value: v})
			want = append(want, wire.Reading{Time: r.Time, Value: v, Quality: wire.QualitySubstituted})
		default:
			want = append(want, r)
		}
	}
	sp := subjPath(ten.ID, a.hh.Subject.ID) + "/rights"
	var steps []int
	req, err := c.RequestRectification(ctx, ten.ID, client.Rectification{Subject: a.hh.Subject.ID, Stream: st.ID, RequestedBy: rights.BySubject,
		Grounds: "the meter was miswired until 01:50", Corrections: cs, Delete: []series.TimeRange{del}}, func(done, total int) { steps = append(steps, done) })
	if err != nil {
		t.Fatal(err)
	}
	if req.Status != rights.Open || !req.Due.Equal(req.Opened.AddDate(0, 1, 0)) || req.Rectification.Corrections != len(cs) || req.Rectification.Parts != 2 ||
		!slices.Equal(steps, []int{client.CorrectionsPerPart, len(cs)}) {
		t.Fatalf("request %+v %+v, progress %v", req, req.Rectification, steps)
	}
	// While pending, the corrections are the subject's data: exported.
	files := exportOf(t, c, ten.ID, a)
	if rows := csvRows(t, files["rights-requests/corrections-"+string(req.ID)+".csv"]); len(rows) != len(cs) || rows[0][1] != "10000" {
		t.Fatalf("pending corrections in the export: %d rows", len(rows))
	}

	// Bad requests: refused with a clear error, nothing changed.
	statusOf := func(err error) int {
		var ce *client.Error
		if errors.As(err, &ce) {
			return ce.Status
		}
		return 0
	}
	open := func(body map[string]any) (rights.Request, error) {
		body["kind"], body["requested_by"] = "rectification", "dpo"
		if _, ok := body["grounds"]; !ok {
			body["grounds"] = "wrong"
		}
		var r rights.Request
		err := c.Do(ctx, "POST", sp, body, &r)
		return r, err
	}
	fulfil := func(id rights.RequestID) (rights.Request, error) {
		return c.FulfilRightsRequest(ctx, ten.ID, a.hh.Subject.ID, id)
	}
	one := func(t int64, v float64) []series.Correction { return []series.Correction{{Time: t, Value: v}} }
	for _, bad := range []struct {
		name   string
		body   map[string]any
		status int
		msg    string
	}{
		{"another subject's stream", map[string]any{"stream": b.hh.Streams[0].ID, "corrections": one(start, 1)}, 403, "not subject"},
		{"an unknown stream", map[string]any{"stream": "str_nope"}, 404, "not found"},
		{"no stream", map[string]any{}, 400, "names the stream"},
		{"no grounds", map[string]any{"stream": st.ID, "grounds": ""}, 400, "grounds"},
		{"a time out of range", map[string]any{"stream": st.ID, "corrections": one(-5, 1)}, 400, "correction 1: time"},
		{"an empty delete range", map[string]any{"stream": st.ID, "delete": []series.TimeRange{{From: 10, To: 10}}}, 400, "delete range 1"},
	} {
		if _, err := open(bad.body); statusOf(err) != bad.status || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("%s: %v, want %d with %q", bad.name, err, bad.status, bad.msg)
		}
	}
	if err := c.Do(ctx, "POST", sp, map[string]any{"kind": "access", "requested_by": "subject", "stream": st.ID}, nil); statusOf(err) != 400 {
		t.Errorf("an access request with a stream: %v", err)
	}
	missing, err := open(map[string]any{"stream": st.ID, "corrections": append(one(start+1000, 1), series.Correction{Time: start + 1500, Value: 2})})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fulfil(missing.ID); statusOf(err) != 404 || !strings.Contains(err.Error(), "correction 2: stream "+string(st.ID)+" has no stored reading at 2026-06-30T20:00:01.500Z") {
		t.Errorf("a correction without a reading: %v", err)
	}
	twice, err := open(map[string]any{"stream": st.ID, "corrections": one(start+2000, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "POST", sp+"/"+string(twice.ID)+"/corrections", map[string]any{"corrections": one(start+2000, 2)}, &twice); err != nil || twice.Rectification.Parts != 2 {
		t.Fatalf("second part: %v", err)
	}
	if _, err := fulfil(twice.ID); statusOf(err) != 400 || !strings.Contains(err.Error(), "corrections 1 and 2 are for the same time") {
		t.Errorf("two corrections of one reading: %v", err)
	}
	if err := c.Do(ctx, "POST", sp+"/"+string(twice.ID)+"/status", map[string]string{"status": "done"}, nil); statusOf(err) != 409 {
		t.Errorf("a rectification marked done by hand: %v", err)
	}
	if err := c.Do(ctx, "POST", sp+"/"+string(twice.ID)+"/corrections", map[string]any{"corrections": []series.Correction{}}, nil); statusOf(err) != 400 {
		t.Errorf("an empty part: %v", err)
	}
	if !snapshot(t, c, ten.ID, st.ID).equal(before) {
		t.Fatal("a refused rectification changed the stream")
	}
	for _, id := range []rights.RequestID{missing.ID, twice.ID} {
		if r, err := h.Store.RightsRequest(ctx, ten.ID, id); err != nil || r.Status != rights.Open {
			t.Errorf("a refused application changed request %s: %+v %v", id, r, err)
		}
	}
	// Refusing a request deletes its corrections; it cannot be applied then.
	if err := c.Do(ctx, "POST", sp+"/"+string(missing.ID)+"/status", map[string]string{"status": "refused", "reason": "no such readings"}, nil); err != nil {
		t.Fatal(err)
	}
	if parts, _ := h.Store.RectificationParts(ctx, ten.ID, missing.ID); len(parts) != 0 {
		t.Errorf("%d parts of a refused request kept", len(parts))
	}
	if _, err := fulfil(missing.ID); statusOf(err) != 409 {
		t.Errorf("a refused request applied: %v", err)
	}

	// The subject's key is rolled while the request waits: its sealed
	// corrections are re-sealed with everything else (the old key is
	// retired, so a correction left under it could not be opened).
	if job := rollKeys(t, c, api.RollRequest{Subjects: []registry.SubjectID{a.hh.Subject.ID}}); job.Retired != 1 || job.Unreadable != 0 {
		t.Fatalf("key roll: %+v", job)
	}

	// Applied: one action, one transaction.
	done, err := fulfil(req.ID)
	if err != nil {
		t.Fatal(err)
	}
	var ev rights.RectificationEvidence
	if err := json.Unmarshal(done.Evidence, &ev); err != nil || done.Status != rights.Done {
		t.Fatalf("%+v %v", done, err)
	}
	if ev.Stream != st.ID || ev.Corrected != len(cs) || ev.Deleted != 600 || ev.Chunks != 6 {
		t.Errorf("evidence %+v", ev)
	}
	runs := map[rollup.Resolution][]int{}
	for _, r := range ev.Recomputed {
		runs[r.Res] = append(runs[r.Res], r.Buckets)
	}
	if !reflect.DeepEqual(runs, map[rollup.Resolution][]int{rollup.Min15: {24}, rollup.Hour: {6}, rollup.Day: {2}, rollup.Month: {2}}) {
		t.Errorf("recomputed buckets %+v", ev.Recomputed)
	}
	var keys map[string]json.RawMessage
	json.Unmarshal(done.Evidence, &keys)
	if len(keys) != 6 || keys["recomputed"] == nil || keys["applied"] == nil {
		t.Errorf("the evidence holds %s", done.Evidence) // counts and buckets, no values
	}
	after := snapshot(t, c, ten.ID, st.ID)
	if !slices.Equal(after.raw, asRead(want)) {
		t.Errorf("raw readings after: %d, want %d", len(after.raw), len(want))
	}
	wantAggregates(t, "rectified", after, want)
	for res, bs := range after.aggs { // buckets after the last correction are as they were
		for i, bk := range bs.Buckets {
			if res == rollup.Hour && bk.T >= start+6*3_600_000 && !reflect.DeepEqual(bk, before.aggs[res].Buckets[i]) {
				t.Errorf("an hour without corrections was recomputed: %+v", bk)
			}
		}
	}
	if !snapshot(t, c, ten.ID, a.hh.Streams[1].ID).equal(otherStream) || !snapshot(t, c, ten.ID, b.hh.Streams[0].ID).equal(otherSubject) {
		t.Error("another stream or subject changed")
	}
	if parts, _ := h.Store.RectificationParts(ctx, ten.ID, req.ID); len(parts) != 0 {
		t.Errorf("%d parts of an applied request kept", len(parts))
	}
	if _, err := fulfil(req.ID); statusOf(err) != 409 {
		t.Errorf("applied twice: %v", err)
	}

	// A reading still landing (not compacted) at a corrected time: the
	// hub compacts before it applies, so both readings there become the
	// corrected one.
	late := wire.Reading{Time: start + 30*60_000, Value: 77}
	a.post(t, h, 0, []wire.Reading{late})
	lr, err := open(map[string]any{"stream": st.ID, "corrections": one(late.Time, 12.5)})
	if err != nil {
		t.Fatal(err)
	}
	if lr, err = fulfil(lr.ID); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(lr.Evidence, &ev)
	if ev.Corrected != 1 || ev.Deleted != 1 {
		t.Errorf("evidence of the late reading's correction: %+v", ev)
	}
	want[slices.IndexFunc(want, func(r wire.Reading) bool { return r.Time == late.Time })].Value = 12.5
	after = snapshot(t, c, ten.ID, st.ID)
	if !slices.Equal(after.raw, asRead(want)) {
		t.Error("raw readings after correcting a late reading")
	}
	wantAggregates(t, "after correcting a late reading", after, want)

	// The export shows the corrected readings, and only the corrections
	// still pending.
	files = exportOf(t, c, ten.ID, a)
	rows := csvRows(t, files["readings/"+string(st.ID)+".csv"])
	if len(rows) != len(want) || rows[5][1] != strconv.FormatFloat(want[5].Value, 'g', -1, 64) || rows[5][2] != "4" {
		t.Errorf("exported readings: %d, row 5 %v", len(rows), rows[5])
	}
	for name := range files {
		if strings.Contains(name, "corrections-") && name != "rights-requests/corrections-"+string(twice.ID)+".csv" {
			t.Errorf("the export still holds %s", name)
		}
	}
	if rows := csvRows(t, files["rights-requests/corrections-"+string(twice.ID)+".csv"]); len(rows) != 2 {
		t.Errorf("the pending request's corrections: %v", rows)
	}

	// Audit: the request, each part and each application are entries
	// naming the subject.
	es, err := h.Audit.Entries(ctx, 0, h.Audit.Size())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range es {
		if e.Subject == audit.SubjectID(a.hh.Subject.ID) && e.Outcome == audit.Allowed && strings.HasPrefix(string(e.Resource), sp) {
			seen[string(e.Action)+" "+strings.TrimPrefix(string(e.Resource), sp)]++
		}
	}
	for _, k := range []string{
		"POST /v1/tenants/{tenant}/subjects/{subject}/rights ",
		"POST /v1/tenants/{tenant}/subjects/{subject}/rights/{request}/corrections /" + string(req.ID) + "/corrections",
		"POST /v1/tenants/{tenant}/subjects/{subject}/rights/{request}/fulfil /" + string(req.ID) + "/fulfil",
	} {
		if seen[k] == 0 {
			t.Errorf("no audit entry %q", k)
		}
	}
	if seen["POST /v1/tenants/{tenant}/subjects/{subject}/rights/{request}/fulfil /"+string(req.ID)+"/fulfil"] != 2 { // applied, then refused as done
		t.Errorf("audit entries of the application: %v", seen)
	}

	// Erasing the subject deletes the corrections still pending.
	var er rights.Request
	if err := c.Do(ctx, "POST", sp, map[string]any{"kind": "erasure", "requested_by": "dpo"}, &er); err != nil {
		t.Fatal(err)
	}
	if _, err := fulfil(er.ID); err != nil {
		t.Fatal(err)
	}
	var left int
	sqlOf(h).QueryRow(`SELECT COUNT(*) FROM rectification_parts WHERE subject_id = ?`, a.hh.Subject.ID).Scan(&left)
	if left != 0 {
		t.Errorf("%d parts of corrections left after the subject's erasure", left)
	}
	if !snapshot(t, c, ten.ID, b.hh.Streams[0].ID).equal(otherSubject) {
		t.Error("the other subject's stream changed")
	}
}

// TestRectifyQuarantined: a reading held in quarantine is not a stored
// reading — it is released or rejected, not rectified: correcting its time
// is refused (404) and changes nothing; the quarantine keeps it and the
// rollups still exclude it; a neighbouring stored reading is corrected.
func TestRectifyQuarantined(t *testing.T) {
	h, c := startHub(t, hub.Config{})
	ctx := context.Background()
	ten, m, st, rs := spikedMember(t, h, c, "Rectify Quarantine Coop", "house-q", 60, 30)
	if err := h.Compactor.Once(ctx); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, c, ten.ID, st.ID)
	corr := func(cs ...series.Correction) (rights.Request, error) {
		r, err := c.RequestRectification(ctx, ten.ID, client.Rectification{Subject: m.hh.Subject.ID, Stream: st.ID, RequestedBy: rights.ByAdmin, Grounds: "spike", Corrections: cs}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.FulfilRightsRequest(ctx, ten.ID, m.hh.Subject.ID, r.ID)
	}
	if _, err := corr(series.Correction{Time: rs[30].Time, Value: 450}); err == nil || !strings.Contains(err.Error(), "quarantine") {
		t.Fatalf("correcting a quarantined reading: %v", err)
	}
	if !snapshot(t, c, ten.ID, st.ID).equal(before) {
		t.Fatal("the stream changed")
	}
	if n, _ := h.Store.QuarantineCount(ctx, ten.ID, st.ID); n != 1 {
		t.Fatalf("quarantine holds %d readings", n)
	}
	if _, err := corr(series.Correction{Time: rs[29].Time, Value: 450}); err != nil {
		t.Fatal(err)
	}
	want := slices.Delete(slices.Clone(rs), 30, 31)
	want[29] = wire.Reading{Time: rs[29].Time, Value: 450, Quality: wire.QualitySubstituted}
	after := snapshot(t, c, ten.ID, st.ID)
	if !slices.Equal(after.raw, asRead(want)) {
		t.Error("raw readings after")
	}
	wantAggregates(t, "quarantine excluded", after, want)
}

// BenchmarkRectifyDay applies a rectification of one day of readings
// every second (86,400 corrections, every bucket of the day recomputed)
// on a hub with sealing and auditing, and reports it as a ratio to what
// storing the same day costs in the same run: ingest through the device
// endpoint (24 batches of an hour, mTLS) and its compaction into chunks and
// rollups. Submitting the corrections (5 parts over the API) is reported
// apart.
//
//	go test ./internal/hub -run XXX -bench RectifyDay -benchtime 3x
func BenchmarkRectifyDay(b *testing.B) {
	h, c := startHub(b, hub.Config{PlausibilityOff: true})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Bench Coop")
	if err != nil {
		b.Fatal(err)
	}
	m := addMember(b, h, c, ten.ID, "house-bench", registry.Profile{Name: "Member"})
	st := m.hh.Streams[0]
	var ingest, submit, apply time.Duration
	for i := 0; i < b.N; i++ {
		day := time.Date(2026, 3, 1+i, 0, 0, 0, 0, time.UTC).UnixMilli()
		rs := make([]wire.Reading, 86_400)
		cs := make([]series.Correction, len(rs))
		for k := range rs {
			rs[k] = wire.Reading{Time: day + int64(k)*1000, Value: float64(k%3600) / 10}
			cs[k] = series.Correction{Time: rs[k].Time, Value: rs[k].Value + 0.5}
		}
		t0 := time.Now()
		for k := 0; k < len(rs); k += 3600 {
			m.post(b, h, 0, rs[k:k+3600])
		}
		if err := h.Compactor.Once(ctx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		req, err := c.RequestRectification(ctx, ten.ID, client.Rectification{Subject: m.hh.Subject.ID, Stream: st.ID, RequestedBy: rights.ByDPO, Grounds: "bench", Corrections: cs}, nil)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		done, err := c.FulfilRightsRequest(ctx, ten.ID, m.hh.Subject.ID, req.ID)
		if err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		var ev rights.RectificationEvidence
		if json.Unmarshal(done.Evidence, &ev); ev.Corrected != len(rs) {
			b.Fatalf("evidence %+v", ev)
		}
		ingest, submit, apply = ingest+t1.Sub(t0), submit+t2.Sub(t1), apply+t3.Sub(t2)
	}
	n := float64(b.N)
	b.ReportMetric(ingest.Seconds()*1000/n, "ingest-ms/day")
	b.ReportMetric(submit.Seconds()*1000/n, "submit-ms/day")
	b.ReportMetric(apply.Seconds()*1000/n, "apply-ms/day")
	b.ReportMetric(apply.Seconds()/ingest.Seconds(), "apply/ingest")
	b.ReportMetric((submit+apply).Seconds()/ingest.Seconds(), "submit+apply/ingest")
}
