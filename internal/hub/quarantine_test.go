package hub_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/ingest"
	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/wire"
)

// postResult sends one batch through the device endpoint with the member's
// enrolled client certificate and returns the hub's answer.
func (m member) postBatch(t *testing.T, h *hub.Hub, b *wire.Batch) ingest.Result {
	t.Helper()
	r := send(t, m.device, h.DeviceURL()+"/v1/batches", api.BatchContentType, bytes.NewReader(encode(t, b)))
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("post: %d %s %v", r.status, r.body, r.err)
	}
	var res ingest.Result
	if err := json.Unmarshal(r.body, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// fiveMinutes returns n plausible power readings every 5 minutes from start
// (a load wobbling around 450 W, its value a hash of the time, so that
// no window of values repeats).
func fiveMinutes(start time.Time, n int) []wire.Reading {
	rs := make([]wire.Reading, n)
	for i := range rs {
		t := start.UnixMilli() + int64(i)*300_000
		h := uint64(t)*0x9e3779b97f4a7c15 + 1 // a value per time: no window repeats
		h ^= h >> 29
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 32
		rs[i] = wire.Reading{Time: t, Value: 400 + float64(h%1000)/10}
	}
	return rs
}

func batchOf(key string, rs []wire.Reading) *wire.Batch {
	b := &wire.Batch{Series: []wire.Series{{Key: key, Readings: rs}}}
	if _, err := rand.Read(b.ID[:]); err != nil {
		panic(err)
	}
	return b
}

func readsOf(t *testing.T, c *client.Client, ten registry.TenantID, st registry.StreamID) map[int64]float64 {
	t.Helper()
	rs, err := c.AllReadings(context.Background(), ten, st, 0, 1<<50)
	if err != nil {
		t.Fatal(err)
	}
	m := map[int64]float64{}
	for _, r := range rs {
		m[r.Time] = r.Value
	}
	return m
}

func dailyMax(t *testing.T, h *hub.Hub, c *client.Client, ten registry.TenantID, st registry.StreamID) float64 {
	t.Helper()
	ctx := context.Background()
	if err := h.Compactor.Once(ctx); err != nil {
		t.Fatal(err)
	}
	agg, err := c.Aggregates(ctx, ten, st, "1mo", 0, 1<<50)
	if err != nil {
		t.Fatal(err)
	}
	mx := 0.0
	for _, b := range agg.Buckets {
		mx = max(mx, b.Max)
	}
	return mx
}

// TestQuarantine: an implausible reading posted by an enrolled connector
// through the device endpoint is quarantined — acknowledged, kept sealed
// with its reasons, absent from reads and rollups; a replay of the batch
// adds nothing; release puts it into reads and rollups; reject destroys it;
// erasure makes the quarantine of the subject unreadable and purges it.
func TestQuarantine(t *testing.T) { eachBackend(t, testQuarantine) }

func testQuarantine(t *testing.T, cfg hub.Config) {
	h, c := startHub(t, cfg)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Quarantine Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	m := addMember(t, h, c, ten.ID, "house-q", registry.Profile{Name: "Member Q"})
	st := m.hh.Streams[1] // import_power_w, W

	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	rs := fiveMinutes(start, 60)
	const spike = 1e6 // far above any household connection
	rs[30].Value = spike
	b := batchOf(st.Key, rs)
	res := m.postBatch(t, h, b)
	if res.Readings != 60 || res.Quarantined != 1 || res.Duplicates != 0 {
		t.Fatalf("result: %+v, want 60 readings of which 1 quarantined", res)
	}
	// A replay of the same batch (an agent that did not see the
	// acknowledgement) stores and quarantines nothing more.
	if res := m.postBatch(t, h, b); res.Duplicates != 1 || res.Readings != 0 || res.Quarantined != 0 {
		t.Fatalf("replay: %+v", res)
	}
	got := readsOf(t, c, ten.ID, st.ID)
	if len(got) != 59 {
		t.Fatalf("%d readings readable, want 59", len(got))
	}
	if _, ok := got[rs[30].Time]; ok {
		t.Fatal("the quarantined reading is readable")
	}
	if mx := dailyMax(t, h, c, ten.ID, st.ID); mx >= spike {
		t.Fatalf("the quarantined reading reached the rollups: max %g", mx)
	}

	page, err := c.Quarantine(ctx, ten.ID, st.ID, client.DefaultPurpose, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 1 || len(page.Entries[0].Readings) != 1 {
		t.Fatalf("quarantine: %+v", page)
	}
	e := page.Entries[0]
	q := e.Readings[0]
	if q.Time != rs[30].Time || q.Value != spike || len(q.Reasons) == 0 || q.Reasons[0].Rule != plausibility.RuleLimit {
		t.Fatalf("quarantined reading: %+v", q)
	}
	// Sealed at rest: the spike's bytes are nowhere in the row.
	var data []byte
	if err := sqlOf(h).QueryRow(`SELECT data FROM quarantine WHERE id = ?`, e.ID).Scan(&data); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, wire.AppendBlock(nil, []wire.Reading{{Time: rs[30].Time, Value: spike}})[2:]) {
		t.Fatal("quarantined block stored in clear")
	}

	// Release: the reading joins the stream and, once compacted, its rollups.
	if r, err := c.ReleaseQuarantine(ctx, ten.ID, []int64{e.ID}); err != nil || r.Readings != 1 {
		t.Fatalf("release: %+v %v", r, err)
	}
	if got := readsOf(t, c, ten.ID, st.ID); len(got) != 60 || got[rs[30].Time] != spike {
		t.Fatalf("after release: %d readings", len(got))
	}
	if mx := dailyMax(t, h, c, ten.ID, st.ID); mx != spike {
		t.Fatalf("after release the rollup max is %g, want %g", mx, spike)
	}
	if _, err := c.ReleaseQuarantine(ctx, ten.ID, []int64{e.ID}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("second release: %v", err)
	}

	// Reject: gone for good, the stream unchanged.
	later := fiveMinutes(start.Add(5*time.Hour), 12)
	later[5].Value = -spike // negative on a site that is not net-metered, and beyond the limit
	if res := m.postBatch(t, h, batchOf(st.Key, later)); res.Quarantined != 1 {
		t.Fatalf("second batch: %+v", res)
	}
	page, err = c.Quarantine(ctx, ten.ID, "", "", "", 0)
	if err != nil || len(page.Entries) != 1 {
		t.Fatalf("quarantine: %+v %v", page, err)
	}
	if r, err := c.RejectQuarantine(ctx, ten.ID, []int64{page.Entries[0].ID}); err != nil || r.Readings != 1 {
		t.Fatalf("reject: %+v %v", r, err)
	}
	if page, err := c.Quarantine(ctx, ten.ID, "", "", "", 0); err != nil || len(page.Entries) != 0 {
		t.Fatalf("after reject: %+v %v", page, err)
	}
	if got := readsOf(t, c, ten.ID, st.ID); len(got) != 60+11 {
		t.Fatalf("after reject: %d readings, want 71", len(got))
	}

	// Another tenant sees and touches nothing of this one.
	other, err := c.CreateTenant(ctx, "Other Coop")
	if err != nil {
		t.Fatal(err)
	}
	spiky := fiveMinutes(start.Add(10*time.Hour), 3)
	spiky[1].Value = spike
	m.postBatch(t, h, batchOf(st.Key, spiky))
	page, _ = c.Quarantine(ctx, ten.ID, "", "", "", 0)
	if op, err := c.Quarantine(ctx, other.ID, "", "", "", 0); err != nil || len(op.Entries) != 0 || len(page.Entries) != 1 {
		t.Fatalf("other tenant's quarantine: %+v %v", op, err)
	}
	if _, err := c.RejectQuarantine(ctx, other.ID, []int64{page.Entries[0].ID}); err == nil {
		t.Fatal("another tenant rejected this tenant's quarantine")
	}

	// A key roll re-seals the quarantine (and the detector's state) under
	// the new key before the old one is retired: still readable after.
	rj := rollKeys(t, c, api.RollRequest{Subjects: []registry.SubjectID{m.hh.Subject.ID}})
	if rj.Retired != 1 || rj.Unreadable != 0 {
		t.Fatalf("roll: %+v", rj)
	}
	if again, err := c.Quarantine(ctx, ten.ID, st.ID, client.DefaultPurpose, "", 0); err != nil || len(again.Entries) != 1 || again.Entries[0].Readings[0].Value != spike {
		t.Fatalf("quarantine after a key roll: %+v %v", again, err)
	}

	// Erasure: the subject's quarantine is unreadable at once and purged.
	if _, err := c.EraseSubject(ctx, ten.ID, m.hh.Subject.ID); err != nil {
		t.Fatal(err)
	}
	if page, err := c.Quarantine(ctx, ten.ID, "", "", "", 0); err != nil || len(page.Entries) != 0 {
		t.Fatalf("quarantine after erasure: %+v %v", page, err)
	}
	waitPurged(t, c, ten.ID)
	for _, table := range []string{"quarantine", "plausibility_state"} {
		var n int
		sqlOf(h).QueryRow(`SELECT COUNT(*) FROM `+table+` WHERE stream_id = ?`, st.ID).Scan(&n)
		if n != 0 {
			t.Errorf("%d rows of the erased stream left in %s", n, table)
		}
	}
}

func waitPurged(t *testing.T, c *client.Client, ten registry.TenantID) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		es, err := c.Erasures(context.Background(), ten)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) > 0 && !es[0].Purged.IsZero() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("purge not finished: %+v", es)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPlausibilityPolicy: a tenant's policy sets the connection limit and
// switches rules off; another tenant keeps the defaults; a bad policy is
// refused and changes nothing.
func TestPlausibilityPolicy(t *testing.T) {
	h, c := startHub(t, hub.Config{})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Policy Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	m := addMember(t, h, c, ten.ID, "house-p", registry.Profile{Name: "Member P"})
	st := m.hh.Streams[1]
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

	def, err := c.PlausibilityPolicy(ctx, ten.ID)
	if err != nil || def.Disabled || def.MaxPowerW != 0 {
		t.Fatalf("default policy: %+v %v", def, err)
	}
	// 6 kW is plausible by default (43 kW connection)...
	rs := fiveMinutes(start, 4)
	rs[3].Value = 6000
	if res := m.postBatch(t, h, batchOf(st.Key, rs)); res.Quarantined != 0 {
		t.Fatalf("default: %+v", res)
	}
	// ...but not on a 5 kW connection (limit 5.5 kW with tolerance).
	if _, err := c.SetPlausibilityPolicy(ctx, ten.ID, plausibility.Policy{MaxPowerW: 5000}); err != nil {
		t.Fatal(err)
	}
	rs = fiveMinutes(start.Add(time.Hour), 4)
	rs[3].Value = 6000
	if res := m.postBatch(t, h, batchOf(st.Key, rs)); res.Quarantined != 1 {
		t.Fatalf("5 kW connection: %+v", res)
	}
	// Rules switched off no longer quarantine.
	if _, err := c.SetPlausibilityPolicy(ctx, ten.ID, plausibility.Policy{MaxPowerW: 5000, Off: []plausibility.Rule{plausibility.RuleLimit}}); err != nil {
		t.Fatal(err)
	}
	rs = fiveMinutes(start.Add(2*time.Hour), 4)
	rs[3].Value = 6000
	if res := m.postBatch(t, h, batchOf(st.Key, rs)); res.Quarantined != 0 {
		t.Fatalf("limit off: %+v", res)
	}
	// A tight past window quarantines old backfill; the default does not.
	if _, err := c.SetPlausibilityPolicy(ctx, ten.ID, plausibility.Policy{MaxAge: plausibility.Duration(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if res := m.postBatch(t, h, batchOf(st.Key, fiveMinutes(start.Add(3*time.Hour), 2))); time.Since(start) > 24*time.Hour && res.Quarantined != 2 {
		t.Fatalf("max_age 24h: %+v", res)
	}
	// Disabled: everything is stored as received.
	if _, err := c.SetPlausibilityPolicy(ctx, ten.ID, plausibility.Policy{Disabled: true}); err != nil {
		t.Fatal(err)
	}
	rs = fiveMinutes(start.Add(4*time.Hour), 4)
	rs[2].Value = 1e9
	if res := m.postBatch(t, h, batchOf(st.Key, rs)); res.Quarantined != 0 {
		t.Fatalf("disabled: %+v", res)
	}
	// Bad policies are refused and leave the policy as it was.
	for _, bad := range []string{`{"max_power_w": -1}`, `{"max_age": "soon"}`, `{"off": ["nonsense"]}`, `{"lat": 91, "located": true}`, `{"surprise": 1}`} {
		var raw json.RawMessage = []byte(bad)
		if err := c.Do(ctx, "PUT", "/v1/tenants/"+string(ten.ID)+"/plausibility", raw, nil); err == nil {
			t.Errorf("policy %s accepted", bad)
		}
	}
	if p, err := c.PlausibilityPolicy(ctx, ten.ID); err != nil || !p.Disabled {
		t.Fatalf("policy after refused changes: %+v %v", p, err)
	}
}

// TestQuarantineReadsNeedGrants: quarantined readings are personal data,
// opened under the same decision as the stream's readings. An analyst
// without a grant is refused (403) both the readings and the overview; a
// grant on the stream for the purpose opens them; an admin of another
// tenant is refused; an analyst cannot release or reject; each request
// leaves one audit entry, the refused read naming the data subject.
func TestQuarantineReadsNeedGrants(t *testing.T) {
	h, c := startHub(t, hub.Config{})
	ctx := context.Background()
	ten, m, st, _ := spikedMember(t, h, c, "Quarantine Grants Coop", "house-qg", 6, 3)
	status := func(err error) int {
		var ce *client.Error
		if err == nil {
			return 200
		}
		if errors.As(err, &ce) {
			return ce.Status
		}
		t.Fatal(err)
		return 0
	}
	analyst, analystID := tokenClient(t, c, ten.ID, "analyst", access.RoleAnalyst)
	before := h.Audit.Size()
	if _, err := analyst.Quarantine(ctx, ten.ID, st.ID, client.DefaultPurpose, "", 0); status(err) != 403 {
		t.Fatalf("analyst without a grant: %v, want 403", err)
	}
	// One entry, denied, naming the data subject: they see who tried.
	all, err := h.Audit.Entries(ctx, before, h.Audit.Size())
	var es []audit.Entry
	for _, e := range all {
		if strings.HasSuffix(string(e.Action), "/quarantine") {
			es = append(es, e)
		}
	}
	if err != nil || len(es) != 1 || es[0].Outcome != audit.Denied || es[0].Subject != audit.SubjectID(m.hh.Subject.ID) || string(es[0].Principal) != analystID {
		t.Fatalf("audit of the refused read: %+v %v", es, err)
	}
	if _, err := analyst.Quarantine(ctx, ten.ID, "", "", "", 0); status(err) != 403 {
		t.Fatalf("analyst, overview: %v, want 403", err)
	}
	if _, err := analyst.Quarantine(ctx, ten.ID, "", client.DefaultPurpose, "", 0); status(err) != 400 {
		t.Fatalf("purpose without stream: %v, want 400", err)
	}

	if _, err := c.Grant(ctx, ten.ID, api.GrantIn{Principal: analystID, Resource: "stream:" + string(st.ID), Finest: "raw", Purposes: []string{client.DefaultPurpose}}); err != nil {
		t.Fatal(err)
	}
	page, err := analyst.Quarantine(ctx, ten.ID, st.ID, client.DefaultPurpose, "", 0)
	if err != nil || len(page.Entries) != 1 || len(page.Entries[0].Readings) != 1 || page.Entries[0].Readings[0].Value != 1e6 {
		t.Fatalf("analyst with a grant: %+v %v", page, err)
	}
	if _, err := analyst.Quarantine(ctx, ten.ID, st.ID, "marketing", "", 0); status(err) != 403 {
		t.Fatalf("analyst, another purpose: %v, want 403", err)
	}
	// The grant is for reading, not for changing the quarantine.
	if _, err := analyst.ReleaseQuarantine(ctx, ten.ID, []int64{page.Entries[0].ID}); status(err) != 403 {
		t.Fatalf("analyst release: %v, want 403", err)
	}
	if _, err := analyst.RejectQuarantine(ctx, ten.ID, []int64{page.Entries[0].ID}); status(err) != 403 {
		t.Fatalf("analyst reject: %v, want 403", err)
	}

	// Another tenant's admin is refused, whatever they ask.
	other, err := c.CreateTenant(ctx, "Other Grants Coop")
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := tokenClient(t, c, other.ID, "stranger", access.RoleTenantAdmin)
	for _, purpose := range []string{"", client.DefaultPurpose} {
		if _, err := stranger.Quarantine(ctx, ten.ID, st.ID, purpose, "", 0); status(err) != 403 {
			t.Fatalf("another tenant's admin (purpose %q): %v, want 403", purpose, err)
		}
	}
	if _, err := stranger.RejectQuarantine(ctx, ten.ID, []int64{page.Entries[0].ID}); status(err) != 403 {
		t.Fatalf("another tenant's admin rejects: %v, want 403", err)
	}
	// The overview shows reasons, no readings.
	ov, err := c.Quarantine(ctx, ten.ID, "", "", "", 0)
	if err != nil || len(ov.Entries) != 1 || len(ov.Entries[0].Readings) != 0 || len(ov.Entries[0].Reasons) == 0 {
		t.Fatalf("overview: %+v %v", ov, err)
	}
}

// spikedMember creates a tenant (granting the caller "monitoring") with a
// member whose power stream received n five-minute readings from
// 2026-06-01 with a spike at index spike, quarantined on arrival.
func spikedMember(t *testing.T, h *hub.Hub, c *client.Client, coop, house string, n, spike int) (registry.Tenant, member, registry.Stream, []wire.Reading) {
	t.Helper()
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, coop)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil { // declares "monitoring"
		t.Fatal(err)
	}
	m := addMember(t, h, c, ten.ID, house, registry.Profile{Name: "Member of " + house})
	st := m.hh.Streams[1]
	rs := fiveMinutes(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), n)
	rs[spike].Value = 1e6
	if res := m.postBatch(t, h, batchOf(st.Key, rs)); res.Quarantined != 1 {
		t.Fatalf("post: %+v", res)
	}
	return ten, m, st, rs
}
