package hub_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/consent"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/wire"
)

// TestDataMapCoversEveryStore enumerates every table of the migrated
// schema and every entry of the hub's data directory, and fails when one is
// in no store of the data map and not declared free of personal data, or
// when a store lacks its export or erase handler. A new table fails here
// until it is registered in internal/hub/datamap.go.
func TestDataMapCoversEveryStore(t *testing.T) { eachBackend(t, testDataMapCoversEveryStore) }

func testDataMapCoversEveryStore(t *testing.T, cfg hub.Config) {
	cfg.DataDir = t.TempDir()
	h, c := startHub(t, cfg)
	ctx := context.Background()
	// Make every on-disk store exist: an export archive among them.
	ten, _ := c.CreateTenant(ctx, "Map Coop")
	sub, _ := c.CreateSubject(ctx, ten.ID, "M")
	var req rights.Request
	if err := c.Do(ctx, "POST", subjPath(ten.ID, sub.ID)+"/rights", map[string]string{"kind": "access", "requested_by": "subject"}, &req); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "POST", subjPath(ten.ID, sub.ID)+"/rights/"+string(req.ID)+"/fulfil", nil, &req); err != nil {
		t.Fatal(err)
	}
	tables, err := h.Store.Tables(ctx)
	if err != nil || len(tables) < 10 {
		t.Fatalf("tables: %v %v", tables, err)
	}
	ents, err := os.ReadDir(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range ents {
		paths = append(paths, e.Name())
	}
	if !slices.Contains(paths, "exports") {
		t.Fatalf("no exports directory among %v", paths)
	}
	for _, err := range hub.DataMap(h).Check(tables, paths) {
		t.Error(err)
	}
}

func subjPath(t registry.TenantID, s registry.SubjectID) string {
	return "/v1/tenants/" + string(t) + "/subjects/" + string(s)
}

// TestConsentAndRights walks the must-shows on a real hub: purposes,
// consent given and withdrawn with receipts that verify offline, the gate
// honouring withdrawal and objection, an export holding every store's data
// for the subject (checked against the data map) with their access
// entries, an erasure after which nothing of theirs is readable anywhere
// while another subject is untouched, and an audit entry naming the subject
// for every consent change and rights request.
func TestConsentAndRights(t *testing.T) { eachBackend(t, testConsentAndRights) }

func testConsentAndRights(t *testing.T, cfg hub.Config) {
	cfg.DataDir = t.TempDir()
	h, c := startHub(t, cfg)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Rights Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID, "operations"); err != nil {
		t.Fatal(err)
	}
	c.Purpose = "operations"
	a := addMember(t, h, c, ten.ID, "house-a", registry.Profile{Name: "Member A", Email: "a@example.test"})
	b := addMember(t, h, c, ten.ID, "house-b", registry.Profile{Name: "Member B"})
	var rs []wire.Reading
	for i := range 1500 {
		rs = append(rs, wire.Reading{Time: t0.UnixMilli() + int64(i)*1000, Value: float64(i)})
	}
	for _, m := range []member{a, b} {
		m.post(t, h, 0, rs)
	}
	if err := h.Compactor.Once(ctx); err != nil {
		t.Fatal(err)
	}
	extra := []wire.Reading{{Time: t0.UnixMilli() + 2_000_000, Value: 1}, {Time: t0.UnixMilli() + 2_001_000, Value: 2}}
	a.post(t, h, 0, extra) // left in landing
	b.post(t, h, 0, extra)

	// Purposes.
	tp := "/v1/tenants/" + string(ten.ID)
	for _, p := range []consent.Purpose{
		{ID: "monitoring", Basis: consent.BasisConsent, Categories: []registry.Category{"energy.consumption"}, Recipients: []string{"the cooperative"}, RetentionDays: 365, Finest: rollup.Raw, Notice: "Real-time monitoring of your consumption."},
		{ID: "billing", Basis: consent.BasisContract, Categories: []registry.Category{"energy.consumption"}, Recipients: []string{"the cooperative"}, RetentionDays: 3650, Finest: rollup.Min15, Notice: "Billing."},
	} {
		if err := c.Do(ctx, "POST", tp+"/purposes", p, nil); err != nil {
			t.Fatal(err)
		}
	}
	var v2 consent.Purpose
	if err := c.Do(ctx, "POST", tp+"/purposes", consent.Purpose{ID: "monitoring", Basis: consent.BasisConsent, Categories: []registry.Category{"energy.consumption"}, RetentionDays: 365, Finest: rollup.Raw, Notice: "Real-time monitoring, version 2."}, &v2); err != nil || v2.Version != 2 {
		t.Fatalf("new notice version: %+v %v", v2, err)
	}
	if err := c.Do(ctx, "POST", tp+"/purposes", map[string]any{"id": "x", "basis": "because"}, nil); err == nil {
		t.Error("a bad purpose was accepted")
	}

	// Consent with a receipt that verifies offline.
	var key bytes.Buffer
	if _, err := c.Raw(ctx, "GET", "/v1/consent/key", &key); err != nil {
		t.Fatal(err)
	}
	vkey := strings.TrimSpace(key.String())
	for _, m := range []member{a, b} {
		var ans api.ConsentAnswer
		if err := c.Do(ctx, "POST", subjPath(ten.ID, m.hh.Subject.ID)+"/consents", map[string]any{"purpose": "monitoring", "method": "web-form"}, &ans); err != nil {
			t.Fatal(err)
		}
		rc, err := consent.VerifyReceipt([]byte(ans.Receipt), vkey)
		if err != nil || rc.Record != ans.Record || rc.NoticeVersion != 2 || rc.NoticeSHA256 != consent.NoticeHash(v2.Notice) {
			t.Fatalf("receipt: %+v %v", rc, err)
		}
	}
	if err := c.Do(ctx, "POST", subjPath(ten.ID, a.hh.Subject.ID)+"/consents", map[string]any{"purpose": "billing", "method": "web-form"}, nil); err == nil {
		t.Error("consent to a contract-based purpose was accepted")
	}
	gate := consent.Gate{Source: h.Store}
	allowed := func(m member, p consent.PurposeID) bool {
		ok, _, err := gate.Allowed(ctx, ten.ID, m.hh.Subject.ID, p, "energy.consumption", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !allowed(a, "monitoring") || !allowed(b, "monitoring") {
		t.Fatal("consent given but the gate refuses")
	}
	// Withdrawal takes effect at the next question.
	var wd api.ConsentAnswer
	if err := c.Do(ctx, "POST", subjPath(ten.ID, a.hh.Subject.ID)+"/consents/monitoring/withdraw", map[string]any{"method": "app"}, &wd); err != nil {
		t.Fatal(err)
	}
	if rc, err := consent.VerifyReceipt([]byte(wd.Receipt), vkey); err != nil || rc.Event != consent.Withdrawn {
		t.Fatalf("withdrawal receipt: %+v %v", rc, err)
	}
	if allowed(a, "monitoring") || !allowed(b, "monitoring") {
		t.Error("withdrawal not honoured, or honoured for the wrong subject")
	}
	cols, err := gate.Collections(ctx, ten.ID, []consent.PurposeID{"monitoring", "billing"}, []consent.StreamRef{
		{Stream: a.hh.Streams[0].ID, Subject: a.hh.Subject.ID, Category: "energy.consumption"},
		{Stream: b.hh.Streams[0].ID, Subject: b.hh.Subject.ID, Category: "energy.consumption"}}, time.Now())
	if err != nil || cols[0].Finest != rollup.Min15 || cols[1].Finest != rollup.Raw {
		t.Errorf("collection policy after withdrawal: %+v %v", cols, err)
	}
	// Objection stops processing on a contract basis too; data is kept.
	var obj rights.Request
	if err := c.Do(ctx, "POST", subjPath(ten.ID, b.hh.Subject.ID)+"/rights", map[string]any{"kind": "objection", "requested_by": "subject", "purpose": "billing"}, &obj); err != nil || obj.Status != rights.Done {
		t.Fatalf("objection: %+v %v", obj, err)
	}
	if allowed(b, "billing") || !allowed(a, "billing") {
		t.Error("objection not honoured, or honoured for the wrong subject")
	}

	// Export: every store of the data map, and the subject's access entries.
	if _, err := c.AllReadings(ctx, ten.ID, a.hh.Streams[0].ID, 0, 1<<50); err != nil {
		t.Fatal(err)
	}
	files := exportOf(t, c, ten.ID, a)
	exportOf(t, c, ten.ID, b) // b's archive must survive a's erasure
	dm := hub.DataMap(h)
	var man rights.Manifest
	if err := json.Unmarshal(files["manifest.json"], &man); err != nil {
		t.Fatal(err)
	}
	for i, s := range dm.Stores {
		if i >= len(man.Stores) || man.Stores[i].Name != s.Name || len(man.Stores[i].Files) == 0 {
			t.Errorf("store %s missing from the export's manifest", s.Name)
		}
	}
	if rows := csvRows(t, files["readings/"+string(a.hh.Streams[0].ID)+".csv"]); len(rows) != len(rs)+len(extra) {
		t.Errorf("exported %d readings, want %d", len(rows), len(rs)+len(extra))
	}
	if rows := csvRows(t, files["rollups/"+string(a.hh.Streams[0].ID)+"_1h.csv"]); len(rows) == 0 {
		t.Error("no rollups in the export")
	}
	if !bytes.Contains(files["registry/profile.json"], []byte("a@example.test")) {
		t.Error("profile not in the export")
	}
	if rows := csvRows(t, files["consents/history.csv"]); len(rows) != 2 {
		t.Errorf("consent history: %d rows", len(rows))
	}
	acc := string(files["audit-references/accesses.csv"])
	for _, want := range []string{"GET /v1/tenants/{tenant}/streams/{stream}/readings", "POST /v1/tenants/{tenant}/subjects/{subject}/consents/{purpose}/withdraw"} {
		if !strings.Contains(acc, want) {
			t.Errorf("access entries lack %q", want)
		}
	}
	if bytes.Contains(bytes.Join(mapValues(files), nil), []byte("Member B")) {
		t.Error("another subject's data in the export")
	}

	// Erasure across every store, with evidence.
	var er rights.Request
	if err := c.Do(ctx, "POST", subjPath(ten.ID, a.hh.Subject.ID)+"/rights", map[string]any{"kind": "erasure", "requested_by": "dpo"}, &er); err != nil {
		t.Fatal(err)
	}
	if !er.Due.Equal(er.Opened.AddDate(0, 1, 0)) || er.Status != rights.Open {
		t.Errorf("new request: %+v", er)
	}
	if err := c.Do(ctx, "POST", subjPath(ten.ID, a.hh.Subject.ID)+"/rights/"+string(er.ID)+"/fulfil", nil, &er); err != nil {
		t.Fatal(err)
	}
	var ev struct {
		Erased []struct {
			Store string `json:"store"`
			Items int    `json:"items"`
		} `json:"erased"`
	}
	json.Unmarshal(er.Evidence, &ev)
	if er.Status != rights.Done || len(ev.Erased) != len(dm.Stores) {
		t.Fatalf("erasure: %+v", er)
	}
	if bytes.Contains(er.Evidence, []byte("Member A")) || bytes.Contains(er.Evidence, []byte("a@example.test")) {
		t.Error("erasure evidence holds erased data")
	}
	// Sealed rows are unreadable at once and purged in the background.
	waitPurged(t, c, ten.ID)
	db := sqlOf(h)
	for _, table := range []string{"chunks", "landing", "rollups", "subjects", "sites", "consent_events", "restrictions"} {
		col := "subject_id"
		if table == "subjects" {
			col = "id"
		}
		var na, nb int
		db.QueryRow(`SELECT COUNT(*) FROM `+table+` WHERE `+col+` = ?`, a.hh.Subject.ID).Scan(&na)
		db.QueryRow(`SELECT COUNT(*) FROM `+table+` WHERE `+col+` = ?`, b.hh.Subject.ID).Scan(&nb)
		if na != 0 {
			t.Errorf("%d rows of the erased subject left in %s", na, table)
		}
		if nb == 0 && table != "restrictions" && table != "landing" {
			t.Errorf("the other subject lost its rows in %s", table)
		}
	}
	var kinds []string
	rows, _ := db.Query(`SELECT kind FROM rights_requests WHERE subject_id = ?`, a.hh.Subject.ID)
	for rows.Next() {
		var k string
		rows.Scan(&k)
		kinds = append(kinds, k)
	}
	rows.Close()
	if !slices.Equal(kinds, []string{"erasure"}) {
		t.Errorf("rights requests left for the erased subject: %v", kinds)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "exports", string(ten.ID), string(a.hh.Subject.ID))); !os.IsNotExist(err) {
		t.Errorf("the erased subject's export archive is still on disk: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(cfg.DataDir, "exports", string(ten.ID), string(b.hh.Subject.ID))); len(ents) != 1 {
		t.Error("the other subject's export archive is gone")
	}
	if _, err := c.AllReadings(ctx, ten.ID, a.hh.Streams[0].ID, 0, 1<<50); err == nil {
		t.Error("the erased subject's readings are still readable")
	}
	if got, err := c.AllReadings(ctx, ten.ID, b.hh.Streams[0].ID, 0, 1<<50); err != nil || len(got) != len(rs)+len(extra) {
		t.Errorf("other subject's readings: %d, %v", len(got), err)
	}
	if _, err := h.Keys.Open(ctx, a.hh.Subject.ID, []byte("x"), nil); err == nil {
		t.Error("the erased subject's key still opens")
	}
	// Fulfilling again is refused (done is final); the handlers themselves
	// are idempotent.
	if err := c.Do(ctx, "POST", subjPath(ten.ID, a.hh.Subject.ID)+"/rights/"+string(er.ID)+"/fulfil", nil, nil); err == nil {
		t.Error("a done request was fulfilled again")
	}

	// Every consent change and rights request is in the audit log, naming
	// the subject.
	size := h.Audit.Size()
	es, err := h.Audit.Entries(ctx, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range es {
		if e.Subject == audit.SubjectID(a.hh.Subject.ID) && e.Outcome == audit.Allowed {
			count[string(e.Action)]++
		}
	}
	for action, n := range map[string]int{
		"POST /v1/tenants/{tenant}/subjects/{subject}/consents":                    2, // one refused (billing)
		"POST /v1/tenants/{tenant}/subjects/{subject}/consents/{purpose}/withdraw": 1,
		"POST /v1/tenants/{tenant}/subjects/{subject}/rights":                      2,
		"POST /v1/tenants/{tenant}/subjects/{subject}/rights/{request}/fulfil":     3,
	} {
		if count[action] != n {
			t.Errorf("audit entries naming the subject for %s: %d, want %d", action, count[action], n)
		}
	}
}

// exportOf runs an access request for m and returns the archive's files.
func exportOf(t *testing.T, c *client.Client, ten registry.TenantID, m member) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	var req rights.Request
	p := subjPath(ten, m.hh.Subject.ID) + "/rights"
	if err := c.Do(ctx, "POST", p, map[string]string{"kind": "access", "requested_by": "subject"}, &req); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "POST", p+"/"+string(req.ID)+"/fulfil", nil, &req); err != nil || req.Status != rights.Done {
		t.Fatalf("fulfil: %+v %v", req, err)
	}
	var buf bytes.Buffer
	if _, err := c.Raw(ctx, "GET", p+"/"+string(req.ID)+"/archive", &buf); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		out[f.Name], _ = io.ReadAll(rc)
		rc.Close()
	}
	return out
}

func csvRows(t *testing.T, b []byte) [][]string {
	t.Helper()
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil || len(rows) == 0 {
		t.Fatalf("csv: %v (%d bytes)", err, len(b))
	}
	return rows[1:]
}

func mapValues(m map[string][]byte) [][]byte {
	var out [][]byte
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
