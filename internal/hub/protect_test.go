package hub_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/store"
	"github.com/custos-iot/custos/internal/testenv"
	"github.com/custos-iot/custos/internal/uplink"
	"github.com/custos-iot/custos/internal/wire"
)

// The tests in this file prove the trustee promise of the protected store:
// nothing personal is stored in plaintext, erasing a subject makes their
// data unreadable everywhere at once (old backups included), tampering is
// detected, and aggregates equal the raw data they summarise.

// member is a provisioned data subject with an enrolled device.
type member struct {
	hh     client.Household
	device *http.Client
}

func addMember(t testing.TB, h *hub.Hub, c *client.Client, ten registry.TenantID, house string, p registry.Profile) member {
	t.Helper()
	ctx := context.Background()
	sub, err := c.CreateSubjectProfile(ctx, ten, p)
	if err != nil {
		t.Fatal(err)
	}
	site, err := c.CreateSite(ctx, ten, sub.ID, house)
	if err != nil {
		t.Fatal(err)
	}
	offer, err := c.CreateConnector(ctx, ten, house+"-gw")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := c.CreateDevice(ctx, ten, site.ID, offer.Connector.ID, house+"-meter")
	if err != nil {
		t.Fatal(err)
	}
	m := member{hh: client.Household{Subject: sub, Site: site, Connector: offer.Connector}}
	for _, metric := range []string{"import_energy_wh", "import_power_w"} {
		st, err := c.CreateStream(ctx, ten, dev.ID, metric, "energy.consumption", "W")
		if err != nil {
			t.Fatal(err)
		}
		m.hh.Streams = append(m.hh.Streams, st)
	}
	creds, err := uplink.Enrol(ctx, t.TempDir(), h.APIURL(), offer.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.device = deviceClient(t, creds.TLSConfig(""))
	return m
}

// post stores readings for one stream of the member.
func (m member) post(t testing.TB, h *hub.Hub, stream int, rs []wire.Reading) {
	t.Helper()
	b := &wire.Batch{Series: []wire.Series{{Key: m.hh.Streams[stream].Key, Readings: rs}}}
	if _, err := rand.Read(b.ID[:]); err != nil {
		t.Fatal(err)
	}
	r := send(t, m.device, h.DeviceURL()+"/v1/batches", api.BatchContentType, bytes.NewReader(encode(t, b)))
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("post: %d %s %v", r.status, r.body, r.err)
	}
}

// Canary values: unique enough that finding one in a file means it leaked.
var (
	canaryName    = "Zyxwvut Kanariepietersen"
	canaryEmail   = "canary.x7q2@example.test"
	canaryAddress = "Kanariestraat 4711, 9999 Nergensdorp"
	canaryValue   = 8765432.125
)

func canaryPatterns() map[string][]byte {
	bits := make([]byte, 8)
	binary.LittleEndian.PutUint64(bits, math.Float64bits(canaryValue))
	bitsBE := make([]byte, 8)
	binary.BigEndian.PutUint64(bitsBE, math.Float64bits(canaryValue))
	return map[string][]byte{
		"name":               []byte(canaryName),
		"name (lower case)":  []byte(strings.ToLower(canaryName)),
		"surname":            []byte("Kanariepietersen"),
		"e-mail":             []byte(canaryEmail),
		"address":            []byte("Kanariestraat"),
		"value (text)":       []byte(strconv.FormatFloat(canaryValue, 'f', -1, 64)),
		"value (float64 LE)": bits,
		"value (float64 BE)": bitsBE,
	}
}

// TestCanary stores a subject with marker values in every personal field
// and readings with a marker number, reads them back (so they are really
// there), and then searches every file under the hub's data directory —
// databases, WAL files, the key store, the log — for the markers. On
// PostgreSQL it searches every text and bytea column of the hub's schemas.
func TestCanary(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			logFile, err := os.Create(filepath.Join(dir, "hub.log"))
			if err != nil {
				t.Fatal(err)
			}
			defer logFile.Close()
			// PlausibilityOff: the canary readings are a periodic pattern,
			// re-sent, which the plausibility checks would quarantine.
			cfg := hub.Config{DataDir: dir, Log: slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})), PlausibilityOff: true}
			var dsn, schema string
			if backend == "postgres" {
				dsn, schema = testenv.Postgres(t)
				cfg.PostgresDSN, cfg.PostgresSchema = dsn, schema
				t.Cleanup(func() { dropSchema(dsn, schema+"_keys") })
			}
			h, c := startHub(t, cfg)
			ctx := context.Background()
			ten, err := c.CreateTenant(ctx, "Canary Coop")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
				t.Fatal(err)
			}
			m := addMember(t, h, c, ten.ID, "house-canary", registry.Profile{Name: canaryName, Email: canaryEmail, Address: canaryAddress})
			var rs []wire.Reading
			for i := range 600 {
				v := float64(100 + i%37)
				if i%50 == 0 {
					v = canaryValue
				}
				rs = append(rs, wire.Reading{Time: t0.UnixMilli() + int64(i)*1000, Value: v})
			}
			m.post(t, h, 1, rs)
			if err := h.Compactor.Once(ctx); err != nil {
				t.Fatal(err)
			}
			m.post(t, h, 1, rs[:10]) // also some landed, not yet compacted

			// The markers are really stored: the API gives them back.
			subs, err := c.Subjects(ctx, ten.ID)
			if err != nil || len(subs) != 1 || subs[0].Name != canaryName || subs[0].Email != canaryEmail || subs[0].Address != canaryAddress {
				t.Fatalf("subjects: %+v %v", subs, err)
			}
			got, err := c.AllReadings(ctx, ten.ID, m.hh.Streams[1].ID, 0, 1<<50)
			if err != nil || len(got) != 610 || got[0].Value != canaryValue {
				t.Fatalf("readings: %d %v", len(got), err)
			}
			agg, err := c.Aggregates(ctx, ten.ID, m.hh.Streams[1].ID, "1h", 0, 1<<50)
			if err != nil || len(agg.Buckets) != 1 || agg.Buckets[0].Max != canaryValue {
				t.Fatalf("aggregates: %+v %v", agg, err)
			}

			if backend == "postgres" {
				for _, sch := range []string{schema, schema + "_keys"} {
					for what, p := range canaryPatterns() {
						if where := pgSearch(t, h, sch, p); where != "" {
							t.Errorf("%s found in plaintext in PostgreSQL: %s", what, where)
						}
					}
				}
			}
			// Search the files while the hub still runs (WAL not yet
			// checkpointed), and again after it stopped.
			searchFiles(t, dir)
		})
	}
}

func searchFiles(t *testing.T, dir string) {
	t.Helper()
	files := 0
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("read %s: %v", path, err)
			return nil
		}
		files++
		for what, p := range canaryPatterns() {
			if bytes.Contains(data, p) {
				t.Errorf("%s found in plaintext in %s", what, strings.TrimPrefix(path, dir))
			}
		}
		return nil
	})
	if files < 4 {
		t.Fatalf("searched only %d files; the canary would prove nothing", files)
	}
}

// pgSearch looks for p in every text and bytea column of a schema.
func pgSearch(t *testing.T, h *hub.Hub, schema string, p []byte) string {
	t.Helper()
	db := h.Store.DB()
	rows, err := db.Query(`SELECT table_name, column_name, data_type FROM information_schema.columns
		WHERE table_schema = $1 AND data_type IN ('text', 'bytea', 'character varying')`, schema)
	if err != nil {
		t.Fatal(err)
	}
	type col struct{ table, column, typ string }
	var cols []col
	for rows.Next() {
		var c col
		rows.Scan(&c.table, &c.column, &c.typ)
		cols = append(cols, c)
	}
	rows.Close()
	if len(cols) == 0 {
		t.Fatalf("no columns found in schema %s", schema)
	}
	for _, c := range cols {
		expr := `convert_to("` + c.column + `", 'UTF8')`
		if c.typ == "bytea" {
			expr = `"` + c.column + `"`
		}
		var n int
		q := `SELECT COUNT(*) FROM "` + schema + `"."` + c.table + `" WHERE position($1::bytea in ` + expr + `) > 0`
		if err := db.QueryRow(q, p).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if n > 0 {
			return schema + "." + c.table + "." + c.column
		}
	}
	return ""
}

func dropSchema(dsn, schema string) {
	s, err := store.Open(context.Background(), store.Config{DSN: dsn, Schema: "custos_test_cleanup"})
	if err != nil {
		return
	}
	s.DB().Exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE")
	s.DB().Exec("DROP SCHEMA IF EXISTS custos_test_cleanup CASCADE")
	s.Close()
}

// TestBackupAfterErasure: a copy of the data store taken before a subject
// is erased, together with the key store as it is after, cannot decrypt
// that subject's data, while every other subject's data in the same copy
// still decrypts.
func TestBackupAfterErasure(t *testing.T) { eachBackend(t, testBackupAfterErasure) }

func testBackupAfterErasure(t *testing.T, cfg hub.Config) {
	h, c := startHub(t, cfg)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Backup Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	a := addMember(t, h, c, ten.ID, "house-a", registry.Profile{Name: "Member A"})
	b := addMember(t, h, c, ten.ID, "house-b", registry.Profile{Name: "Member B"})
	var rs []wire.Reading
	for i := range 300 {
		rs = append(rs, wire.Reading{Time: t0.UnixMilli() + int64(i)*1000, Value: float64(i)})
	}
	for _, m := range []member{a, b} {
		m.post(t, h, 0, rs)
	}
	if err := h.Compactor.Once(ctx); err != nil {
		t.Fatal(err)
	}
	a.post(t, h, 0, rs[:5]) // landed, not compacted: in the copy too

	oldCfg := backupData(t, h, cfg)
	if _, err := c.EraseSubject(ctx, ten.ID, a.hh.Subject.ID); err != nil {
		t.Fatal(err)
	}

	old, err := store.Open(ctx, oldCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	read := func(m member) (series.Page, error) {
		return series.Read(ctx, old, series.Query{Tenant: ten.ID, Stream: m.hh.Streams[0].ID, From: 0, To: 1 << 50, Limit: 10_000, Sealer: h.Keys})
	}
	if p, err := read(a); !errs.Is(errs.NotFound, err) {
		t.Fatalf("erased subject's readings from the old copy: %d readings, err %v; want the erased-key error", len(p.Readings), err)
	}
	_, err = series.ReadRollups(ctx, old, series.RollupQuery{Tenant: ten.ID, Stream: a.hh.Streams[0].ID, Res: rollup.Day, From: 0, To: 1 << 50, Sealer: h.Keys})
	if !errs.Is(errs.NotFound, err) {
		t.Fatalf("erased subject's rollups from the old copy: %v", err)
	}
	row, err := old.Subject(ctx, ten.ID, a.hh.Subject.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Keys.Open(ctx, a.hh.Subject.ID, row.Profile, registry.ProfileAD(ten.ID, a.hh.Subject.ID)); !errs.Is(errs.NotFound, err) {
		t.Fatalf("erased subject's profile from the old copy: %v", err)
	}
	p, err := read(b)
	if err != nil || len(p.Readings) != len(rs) {
		t.Fatalf("other subject from the old copy: %d readings, %v", len(p.Readings), err)
	}
	for i, r := range p.Readings {
		if r.Time != rs[i].Time || r.Value != rs[i].Value {
			t.Fatalf("other subject's reading %d from the old copy: %+v, want %+v", i, r, rs[i])
		}
	}
}

// TestTamperDetected: a flipped byte in a sealed chunk or rollup, or a
// chunk moved to another stream or hour, is an integrity error — never
// silently wrong numbers.
func TestTamperDetected(t *testing.T) { eachBackend(t, testTamperDetected) }

func testTamperDetected(t *testing.T, cfg hub.Config) {
	cfg.PlausibilityOff = true // a periodic pattern (i % 100), which the replay rule would quarantine
	h, c := startHub(t, cfg)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Tamper Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	m := addMember(t, h, c, ten.ID, "house-t", registry.Profile{Name: "Member T"})
	var rs []wire.Reading
	for i := range 7200 { // two hour buckets
		rs = append(rs, wire.Reading{Time: t0.UnixMilli() + int64(i)*1000, Value: float64(i % 100)})
	}
	for s := range 2 {
		m.post(t, h, s, rs)
	}
	if err := h.Compactor.Once(ctx); err != nil {
		t.Fatal(err)
	}
	db := sqlOf(h)
	type chunkRow struct {
		id     int64
		stream string
		min    int64
		data   []byte
	}
	rows, err := db.Query(`SELECT id, stream_id, min_ms, data FROM chunks ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []chunkRow
	for rows.Next() {
		var r chunkRow
		rows.Scan(&r.id, &r.stream, &r.min, &r.data)
		chunks = append(chunks, r)
	}
	rows.Close()
	if len(chunks) != 4 {
		t.Fatalf("%d chunks, want 4 (2 streams x 2 hours)", len(chunks))
	}
	restore := func() {
		for _, r := range chunks {
			db.Exec(`UPDATE chunks SET data = ? WHERE id = ?`, r.data, r.id)
		}
	}
	wantIntegrity := func(what string, stream registry.StreamID) {
		t.Helper()
		_, err := c.AllReadings(ctx, ten.ID, stream, 0, 1<<50)
		var ce *client.Error
		if !asClientError(err, &ce) || ce.Status != 500 || !strings.Contains(ce.Message, "does not authenticate") {
			t.Errorf("%s: got %v, want an integrity error", what, err)
		}
	}
	if _, err := c.AllReadings(ctx, ten.ID, m.hh.Streams[0].ID, 0, 1<<50); err != nil {
		t.Fatalf("untampered read: %v", err)
	}
	// Flip one byte at several places of a chunk.
	for _, at := range []int{0, 5, len(chunks[0].data) / 2, len(chunks[0].data) - 1} {
		bad := bytes.Clone(chunks[0].data)
		bad[at] ^= 0x01
		db.Exec(`UPDATE chunks SET data = ? WHERE id = ?`, bad, chunks[0].id)
		wantIntegrity("flipped byte "+strconv.Itoa(at), registry.StreamID(chunks[0].stream))
		restore()
	}
	// Swap two chunks of the same stream (other hour) and of two streams.
	for _, pair := range [][2]int{{0, 1}, {0, 2}} {
		x, y := chunks[pair[0]], chunks[pair[1]]
		if x.stream == y.stream && x.min == y.min {
			t.Fatal("test setup: the pair must differ in stream or hour")
		}
		db.Exec(`UPDATE chunks SET data = ? WHERE id = ?`, y.data, x.id)
		db.Exec(`UPDATE chunks SET data = ? WHERE id = ?`, x.data, y.id)
		wantIntegrity("swapped chunks", registry.StreamID(x.stream))
		restore()
	}
	// A tampered rollup.
	var data []byte
	var period int64
	if err := db.QueryRow(`SELECT data, period_ms FROM rollups WHERE stream_id = ? AND res = '1d'`, m.hh.Streams[0].ID).Scan(&data, &period); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 0x80
	db.Exec(`UPDATE rollups SET data = ? WHERE stream_id = ? AND res = '1d'`, bad, m.hh.Streams[0].ID)
	if _, err := c.Aggregates(ctx, ten.ID, m.hh.Streams[0].ID, "1d", 0, 1<<50); err == nil || !strings.Contains(err.Error(), "does not authenticate") {
		t.Errorf("tampered rollup: got %v, want an integrity error", err)
	}
	// The rollup moved to another period fails too.
	db.Exec(`UPDATE rollups SET data = ?, period_ms = ? WHERE stream_id = ? AND res = '1d'`, data, period+86400_000*365, m.hh.Streams[0].ID)
	if _, err := c.Aggregates(ctx, ten.ID, m.hh.Streams[0].ID, "1d", 0, 1<<50); err == nil || !strings.Contains(err.Error(), "does not authenticate") {
		t.Errorf("moved rollup: got %v, want an integrity error", err)
	}
}

func asClientError(err error, target **client.Error) bool {
	ce, ok := err.(*client.Error)
	if ok {
		*target = ce
	}
	return ok
}

// TestErasure: erasing a subject destroys their key first, removes them
// from the registry with evidence, refuses further writes to their
// streams, purges their sealed rows in the background, and leaves every
// other subject untouched.
func TestErasure(t *testing.T) { eachBackend(t, testErasure) }

func testErasure(t *testing.T, cfg hub.Config) {
	h, c := startHub(t, cfg)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Erasure Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	a := addMember(t, h, c, ten.ID, "house-a", registry.Profile{Name: "Member A", Email: "a@example.test"})
	b := addMember(t, h, c, ten.ID, "house-b", registry.Profile{Name: "Member B"})
	var rs []wire.Reading
	for i := range 2000 {
		rs = append(rs, wire.Reading{Time: t0.UnixMilli() + int64(i)*1000, Value: float64(i)})
	}
	for _, m := range []member{a, b} {
		m.post(t, h, 0, rs)
		m.post(t, h, 1, rs)
	}
	if err := h.Compactor.Once(ctx); err != nil {
		t.Fatal(err)
	}
	a.post(t, h, 0, rs[:3])

	e, err := c.EraseSubject(ctx, ten.ID, a.hh.Subject.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Streams) != 2 || e.KeyDestroyed.IsZero() || !bytes.Contains(e.Evidence, []byte("key")) {
		t.Fatalf("evidence: %+v %s", e, e.Evidence)
	}
	if bytes.Contains(e.Evidence, []byte("Member A")) || bytes.Contains(e.Evidence, []byte("a@example.test")) {
		t.Fatalf("evidence holds erased data: %s", e.Evidence)
	}
	if _, err := c.AllReadings(ctx, ten.ID, a.hh.Streams[0].ID, 0, 1<<50); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("read of an erased subject's stream: %v", err)
	}
	subs, err := c.Subjects(ctx, ten.ID)
	if err != nil || len(subs) != 1 || subs[0].ID != b.hh.Subject.ID {
		t.Errorf("subjects after erasure: %+v %v", subs, err)
	}
	b2 := &wire.Batch{Series: []wire.Series{{Key: a.hh.Streams[0].Key, Readings: rs[:1]}}}
	rand.Read(b2.ID[:])
	if r := send(t, a.device, h.DeviceURL()+"/v1/batches", api.BatchContentType, bytes.NewReader(encode(t, b2))); r.status != http.StatusForbidden {
		t.Errorf("write to an erased subject's stream: %d %s", r.status, r.body)
	}
	if _, err := c.EraseSubject(ctx, ten.ID, a.hh.Subject.ID); err == nil {
		t.Error("erasing twice succeeded")
	}
	// The purge finishes and leaves no row of the erased streams.
	deadline := time.Now().Add(20 * time.Second)
	for {
		es, err := c.Erasures(ctx, ten.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 1 && !es[0].Purged.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("purge not finished: %+v", es)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, table := range []string{"chunks", "landing", "rollups", "quarantine", "plausibility_state"} {
		var n int
		sqlOf(h).QueryRow(`SELECT COUNT(*) FROM `+table+` WHERE stream_id IN (?, ?)`, a.hh.Streams[0].ID, a.hh.Streams[1].ID).Scan(&n)
		if n != 0 {
			t.Errorf("%d rows of the erased streams left in %s", n, table)
		}
	}
	for _, st := range b.hh.Streams {
		got, err := c.AllReadings(ctx, ten.ID, st.ID, 0, 1<<50)
		if err != nil || len(got) != len(rs) {
			t.Errorf("other subject's stream %s: %d readings, %v", st.Key, len(got), err)
		}
	}
}

// TestAggregatesMatchRaw: the API's aggregates at every resolution equal a
// naive recomputation from the raw readings, with late and out-of-order
// batches compacted in between.
func TestAggregatesMatchRaw(t *testing.T) { eachBackend(t, testAggregatesMatchRaw) }

func testAggregatesMatchRaw(t *testing.T, cfg hub.Config) {
	cfg.PlausibilityOff = true // late, out-of-order batches on purpose, which the plausibility checks would quarantine
	h, c := startHub(t, cfg)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Rollup Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	m := addMember(t, h, c, ten.ID, "house-r", registry.Profile{Name: "Member R"})
	var all []wire.Reading
	start := time.Date(2026, 1, 30, 22, 0, 0, 0, time.UTC).UnixMilli()
	for batch := range 12 {
		var rs []wire.Reading
		// Every other batch reaches back hours: late, out-of-order data.
		base := start + int64(batch)*6*3600_000
		if batch%2 == 1 {
			base -= 9 * 3600_000
		}
		for i := range 400 {
			rs = append(rs, wire.Reading{Time: base + int64(i)*47_000, Value: float64((batch*7919 + i*31) % 5000)})
		}
		m.post(t, h, 1, rs)
		all = append(all, rs...)
		if batch%3 == 2 {
			if err := h.Compactor.Once(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := h.Compactor.Once(ctx); err != nil {
		t.Fatal(err)
	}
	for _, res := range rollup.Aggregated {
		want := map[int64]*rollup.Agg{}
		for _, r := range all {
			b := res.Bucket(r.Time)
			if want[b] == nil {
				want[b] = &rollup.Agg{}
			}
			want[b].Add(r)
		}
		got, err := c.Aggregates(ctx, ten.ID, m.hh.Streams[1].ID, string(res), 0, 1<<50)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Buckets) != len(want) {
			t.Fatalf("%s: %d buckets, want %d", res, len(got.Buckets), len(want))
		}
		for _, b := range got.Buckets {
			w := want[b.T]
			if w == nil || b.Count != w.Count || b.Min != w.Min || b.Max != w.Max || math.Abs(b.Sum-w.Sum) > 1e-6*math.Abs(w.Sum) {
				t.Errorf("%s bucket %d: got %+v, want %+v", res, b.T, b, w)
			}
		}
	}
}

// eachBackend runs a protected-store test on SQLite and on PostgreSQL
// (required in CI, skipped with a message elsewhere).
func eachBackend(t *testing.T, test func(*testing.T, hub.Config)) {
	t.Run("sqlite", func(t *testing.T) { test(t, hub.Config{}) })
	t.Run("postgres", func(t *testing.T) {
		dsn, schema := testenv.Postgres(t)
		t.Cleanup(func() { dropSchema(dsn, schema+"_keys") })
		test(t, hub.Config{PostgresDSN: dsn, PostgresSchema: schema})
	})
}

// rebound runs test SQL written with '?' placeholders on either database.
type rebound struct {
	db *sql.DB
	pg bool
}

func sqlOf(h *hub.Hub) rebound { return rebound{h.Store.DB(), h.Store.Dialect() == store.Postgres} }

func (r rebound) q(query string) string {
	if !r.pg {
		return query
	}
	n := 0
	return regexp.MustCompile(`\?`).ReplaceAllStringFunc(query, func(string) string { n++; return "$" + strconv.Itoa(n) })
}

func (r rebound) Query(q string, args ...any) (*sql.Rows, error) { return r.db.Query(r.q(q), args...) }
func (r rebound) QueryRow(q string, args ...any) *sql.Row        { return r.db.QueryRow(r.q(q), args...) }
func (r rebound) Exec(q string, args ...any) (sql.Result, error) { return r.db.Exec(r.q(q), args...) }

// backupData copies the data store as a backup would (not the key store)
// and returns how to open the copy: a SQLite file (VACUUM INTO), or a copy
// of every table of the hub's PostgreSQL schema into another schema.
func backupData(t *testing.T, h *hub.Hub, cfg hub.Config) store.Config {
	t.Helper()
	db := h.Store.DB()
	if cfg.PostgresDSN == "" {
		path := filepath.Join(t.TempDir(), "backup.db")
		if _, err := db.Exec("VACUUM INTO ?", path); err != nil {
			t.Fatal(err)
		}
		return store.Config{Path: path}
	}
	bk := cfg.PostgresSchema + "_bk"
	t.Cleanup(func() { dropSchema(cfg.PostgresDSN, bk) })
	if _, err := db.Exec("CREATE SCHEMA " + bk); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'`, cfg.PostgresSchema)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	for _, tb := range tables {
		src, dst := cfg.PostgresSchema+"."+tb, bk+"."+tb
		if _, err := db.Exec("CREATE TABLE " + dst + " (LIKE " + src + " INCLUDING ALL)"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec("INSERT INTO " + dst + " OVERRIDING SYSTEM VALUE SELECT * FROM " + src); err != nil {
			t.Fatal(err)
		}
	}
	return store.Config{DSN: cfg.PostgresDSN, Schema: bk}
}
