package store_test

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/store"
	"github.com/custos-iot/custos/internal/testenv"
)

// backends opens an empty store on every supported database. PostgreSQL is
// skipped with a message outside CI when it is not running, and required in CI.
func backends(t *testing.T, clock func() time.Time) map[string]func(t *testing.T) *store.Store {
	return map[string]func(t *testing.T) *store.Store{
		"sqlite": func(t *testing.T) *store.Store {
			s, err := store.Open(context.Background(), store.Config{Path: filepath.Join(t.TempDir(), "hub.db"), Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"postgres": func(t *testing.T) *store.Store {
			dsn, schema := testenv.Postgres(t)
			s, err := store.Open(context.Background(), store.Config{DSN: dsn, Schema: schema, Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

type fixture struct {
	tenant    registry.Tenant
	subject   registry.Subject
	site      registry.Site
	connector registry.Connector
	device    registry.Device
	stream    registry.Stream
}

func seed(t *testing.T, s *store.Store, name string) fixture {
	t.Helper()
	ctx := context.Background()
	now := time.UnixMilli(1_700_000_000_000).UTC()
	f := fixture{}
	f.tenant = registry.Tenant{ID: registry.TenantID("ten_" + name), Name: "Coop " + name, Created: now}
	f.subject = registry.Subject{ID: registry.SubjectID("sub_" + name), Tenant: f.tenant.ID, Name: "Member " + name, Created: now}
	f.site = registry.Site{ID: registry.SiteID("sit_" + name), Tenant: f.tenant.ID, Subject: f.subject.ID, Name: "home", Created: now}
	f.connector = registry.Connector{ID: registry.ConnectorID("con_" + name), Tenant: f.tenant.ID, Name: "gw", Status: registry.ConnectorPending, Created: now}
	f.device = registry.Device{ID: registry.DeviceID("dev_" + name), Tenant: f.tenant.ID, Site: f.site.ID, Connector: f.connector.ID, Name: "meter-" + name, Created: now}
	f.stream = registry.Stream{ID: registry.StreamID("str_" + name), Tenant: f.tenant.ID, Subject: f.subject.ID, Device: f.device.ID, Metric: "import_w", Key: "meter-" + name + "/import_w", Category: "energy.consumption", Unit: "W", Created: now}
	for _, err := range []error{
		s.CreateTenant(ctx, f.tenant),
		s.CreateSubject(ctx, store.SubjectRow{ID: f.subject.ID, Tenant: f.tenant.ID, Profile: []byte("sealed"), Created: now}),
		s.CreateSite(ctx, f.site),
		s.CreateConnector(ctx, f.connector),
		s.CreateDevice(ctx, f.device),
		s.CreateStream(ctx, f.stream),
	} {
		if err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
	}
	return f
}

func TestStore(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000).UTC()
	clock := func() time.Time { return now }
	for name, open := range backends(t, clock) {
		t.Run(name, func(t *testing.T) {
			t.Run("registry", func(t *testing.T) { testRegistry(t, open(t)) })
			t.Run("isolation", func(t *testing.T) { testIsolation(t, open(t)) })
			t.Run("enrol tokens", func(t *testing.T) { testEnrolTokens(t, open(t), &now) })
			t.Run("batches", func(t *testing.T) { testBatches(t, open(t)) })
			t.Run("grants", func(t *testing.T) { testGrants(t, open(t)) })
			t.Run("migrations idempotent", func(t *testing.T) { testReopen(t, name) })
		})
	}
}

func testRegistry(t *testing.T, s *store.Store) {
	ctx := context.Background()
	f := seed(t, s, "a")
	if err := s.CreateTenant(ctx, registry.Tenant{ID: "ten_other", Name: f.tenant.Name}); !errs.Is(errs.Exists, err) {
		t.Errorf("duplicate tenant name: got %v, want Exists", err)
	}
	dup := f.device
	dup.ID = "dev_dup"
	if err := s.CreateDevice(ctx, dup); !errs.Is(errs.Exists, err) {
		t.Errorf("duplicate device name: got %v, want Exists", err)
	}
	got, err := s.StreamByKey(ctx, f.tenant.ID, f.stream.Key)
	if err != nil || got.ID != f.stream.ID || got.Category != f.stream.Category {
		t.Fatalf("StreamByKey = %+v, %v", got, err)
	}
	cs, err := s.ConnectorStreams(ctx, f.connector.ID)
	if err != nil || len(cs) != 1 || cs[0].ID != f.stream.ID {
		t.Fatalf("ConnectorStreams = %+v, %v", cs, err)
	}
	// Meter replacements: recorded in time order, seen by the connector's
	// device list.
	at := time.UnixMilli(1_700_000_600_000).UTC()
	d, err := s.ReplaceMeter(ctx, f.tenant.ID, f.device.ID, "NEW-1", at)
	if err != nil || d.MeterSerial != "NEW-1" || !d.MeterReplaced.Equal(at) {
		t.Fatalf("ReplaceMeter = %+v, %v", d, err)
	}
	if d.PreviousMeterSerial != f.device.MeterSerial {
		t.Errorf("previous serial %q, want %q", d.PreviousMeterSerial, f.device.MeterSerial)
	}
	d, err = s.ReplaceMeter(ctx, f.tenant.ID, f.device.ID, "NEW-2", at.Add(time.Second))
	if err != nil || d.PreviousMeterSerial != "NEW-1" {
		t.Fatalf("second replacement = %+v, %v", d, err)
	}
	if d, err = s.ReplaceMeter(ctx, f.tenant.ID, f.device.ID, "NEW-2", at.Add(time.Second)); err != nil || d.PreviousMeterSerial != "NEW-1" {
		t.Fatalf("a retried replacement = %+v, %v; the previous serial must stay NEW-1", d, err)
	}
	if _, err := s.ReplaceMeter(ctx, f.tenant.ID, f.device.ID, "OLD", at.Add(-time.Second)); !errs.Is(errs.Conflict, err) {
		t.Errorf("replacement before the latest: got %v, want Conflict", err)
	}
	ds, err := s.ConnectorDevices(ctx, f.connector.ID)
	if err != nil || len(ds) != 1 || ds[0].MeterSerial != "NEW-2" || !ds[0].MeterReplaced.Equal(at.Add(time.Second)) || ds[0].PreviousMeterSerial != "NEW-1" {
		t.Fatalf("ConnectorDevices after a replacement = %+v, %v", ds, err)
	}
	if err := s.RevokeConnector(ctx, f.tenant.ID, f.connector.ID); err != nil {
		t.Fatal(err)
	}
	c, err := s.Connector(ctx, f.tenant.ID, f.connector.ID)
	if err != nil || c.Status != registry.ConnectorRevoked {
		t.Fatalf("after revoke: %+v, %v", c, err)
	}
	if err := s.RecordCertificate(ctx, f.connector.ID, "01", time.Now().Add(time.Hour), "renew"); !errs.Is(errs.Forbidden, err) {
		t.Errorf("certificate for a revoked connector: got %v, want Forbidden", err)
	}
}

// testIsolation checks that no lookup crosses tenants: every query is
// scoped by the tenant the caller names.
func testIsolation(t *testing.T, s *store.Store) {
	ctx := context.Background()
	a, b := seed(t, s, "a"), seed(t, s, "b")
	if _, err := s.Stream(ctx, a.tenant.ID, b.stream.ID); !errs.Is(errs.NotFound, err) {
		t.Errorf("stream of b through tenant a: got %v, want NotFound", err)
	}
	if _, err := s.StreamByKey(ctx, a.tenant.ID, b.stream.Key); !errs.Is(errs.NotFound, err) {
		t.Errorf("stream key of b through tenant a: got %v, want NotFound", err)
	}
	if _, err := s.Connector(ctx, a.tenant.ID, b.connector.ID); !errs.Is(errs.NotFound, err) {
		t.Errorf("connector of b through tenant a: got %v", err)
	}
	if err := s.RevokeConnector(ctx, a.tenant.ID, b.connector.ID); !errs.Is(errs.NotFound, err) {
		t.Errorf("revoke b's connector through tenant a: got %v", err)
	}
	if _, err := s.ReplaceMeter(ctx, a.tenant.ID, b.device.ID, "X", time.Now()); !errs.Is(errs.NotFound, err) {
		t.Errorf("replace b's meter through tenant a: got %v, want NotFound", err)
	}
	bad := registry.Device{ID: "dev_x", Tenant: a.tenant.ID, Site: b.site.ID, Connector: a.connector.ID, Name: "x"}
	if err := s.CreateDevice(ctx, bad); !errs.Is(errs.NotFound, err) {
		t.Errorf("device on another tenant's site: got %v", err)
	}
	badSite := registry.Site{ID: "sit_x", Tenant: a.tenant.ID, Subject: b.subject.ID, Name: "x"}
	if err := s.CreateSite(ctx, badSite); !errs.Is(errs.NotFound, err) {
		t.Errorf("site for another tenant's subject: got %v", err)
	}
	writeChunk(t, s, b, [16]byte{1}, 1000, 2000)
	n := 0
	err := s.StreamChunks(ctx, a.tenant.ID, b.stream.ID, 0, 1<<50, func(*series.Chunk) (bool, error) { n++; return true, nil })
	if err != nil || n != 0 {
		t.Errorf("chunks of b through tenant a: %d, %v", n, err)
	}
}

func testEnrolTokens(t *testing.T, s *store.Store, now *time.Time) {
	ctx := context.Background()
	f := seed(t, s, "a")
	live, expired := sha256.Sum256([]byte("live")), sha256.Sum256([]byte("expired"))
	if err := s.CreateEnrolToken(ctx, live, f.connector.ID, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateEnrolToken(ctx, expired, f.connector.ID, now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	// Two enrolments race for one token: exactly one wins.
	var wg sync.WaitGroup
	wins := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.ConsumeEnrolToken(ctx, live)
			wins <- err
		}()
	}
	wg.Wait()
	close(wins)
	ok := 0
	for err := range wins {
		if err == nil {
			ok++
		} else if !errs.Is(errs.Unauthenticated, err) {
			t.Errorf("racing consume: unexpected error %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("token consumed %d times, want exactly once", ok)
	}
	for _, tc := range []struct {
		name string
		hash [32]byte
		want string
	}{
		{"reused", live, "enrolment token already used; ask the operator for a new one"},
		{"expired", expired, "enrolment token expired; ask the operator for a new one"},
		{"unknown", sha256.Sum256([]byte("nope")), "unknown enrolment token"},
	} {
		_, err := s.ConsumeEnrolToken(ctx, tc.hash)
		if !errs.Is(errs.Unauthenticated, err) || err.Error() != tc.want {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

func writeChunk(t *testing.T, s *store.Store, f fixture, id [16]byte, minT, maxT int64) bool {
	t.Helper()
	dup, err := s.WriteBatches(context.Background(), 1, []series.Batch{{
		Connector: f.connector.ID, ID: id, Readings: 2,
		Chunks: []series.Chunk{{Tenant: f.tenant.ID, Subject: f.subject.ID, Stream: f.stream.ID, MinTime: minT, MaxTime: maxT, Count: 2, Data: []byte{1, 2, 3}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return dup[0]
}

func testBatches(t *testing.T, s *store.Store) {
	ctx := context.Background()
	f := seed(t, s, "a")
	if writeChunk(t, s, f, [16]byte{1}, 1000, 2000) {
		t.Fatal("first write reported duplicate")
	}
	if !writeChunk(t, s, f, [16]byte{1}, 1000, 2000) {
		t.Fatal("replayed batch ID not reported duplicate")
	}
	// A group holding the same batch twice stores it once.
	bw := series.Batch{Connector: f.connector.ID, ID: [16]byte{2}, Readings: 2,
		Chunks: []series.Chunk{{Tenant: f.tenant.ID, Subject: f.subject.ID, Stream: f.stream.ID, MinTime: 5000, MaxTime: 6000, Count: 2, Data: []byte{9}}}}
	dup, err := s.WriteBatches(ctx, 1, []series.Batch{bw, bw})
	if err != nil || dup[0] || !dup[1] {
		t.Fatalf("same batch twice in a group: dup=%v err=%v", dup, err)
	}
	n, err := s.ReadingCount(ctx, f.tenant.ID, f.stream.ID)
	if err != nil || n != 4 {
		t.Fatalf("ReadingCount = %d, %v; want 4", n, err)
	}
	// Range: [1500, 5000) overlaps the first chunk only; [2001, 5001) the second only.
	for _, tc := range []struct {
		from, to int64
		want     []int64
	}{
		{1500, 5000, []int64{1000}},
		{2001, 5001, []int64{5000}},
		{0, 1 << 50, []int64{1000, 5000}},
		{6001, 1 << 50, nil},
	} {
		var got []int64
		err := s.StreamChunks(ctx, f.tenant.ID, f.stream.ID, tc.from, tc.to, func(c *series.Chunk) (bool, error) {
			got = append(got, c.MinTime)
			return true, nil
		})
		if err != nil || len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
			t.Errorf("StreamChunks[%d,%d) = %v, %v; want %v", tc.from, tc.to, got, err, tc.want)
		}
	}
	// A failing batch write leaves nothing behind: a cancelled context aborts the group.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.WriteBatches(cctx, 1, []series.Batch{{Connector: f.connector.ID, ID: [16]byte{3}}}); err == nil {
		t.Fatal("write with cancelled context succeeded")
	}
	if writeChunk(t, s, f, [16]byte{3}, 7000, 7000) {
		t.Fatal("batch of an aborted group is marked as stored")
	}
}

func testReopen(t *testing.T, backend string) {
	if backend != "sqlite" {
		t.Skip("covered by the SQLite file reopen; PostgreSQL schemas are per test")
	}
	path := filepath.Join(t.TempDir(), "hub.db")
	for range 2 {
		s, err := store.Open(context.Background(), store.Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

// TestPostgresReplicasStartTogether: replicas starting at the same moment
// on an empty schema migrate it once, without errors.
func TestPostgresReplicasStartTogether(t *testing.T) {
	dsn, schema := testenv.Postgres(t)
	errc := make(chan error, 3)
	for range 3 {
		go func() {
			s, err := store.Open(context.Background(), store.Config{DSN: dsn, Schema: schema})
			if err == nil {
				s.Close()
			}
			errc <- err
		}()
	}
	for range 3 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// testGrants: grants round-trip, every change raises the tenant's version
// (what replicas compare to reload), and tenants stay apart.
func testGrants(t *testing.T, s *store.Store) {
	ctx := context.Background()
	a, b := seed(t, s, "ga"), seed(t, s, "gb")
	now := time.UnixMilli(1_700_000_000_000).UTC()
	g := access.Grant{ID: "grt_1", Tenant: a.tenant.ID, Principal: "usr_1", Resource: access.SiteResource(a.site.ID),
		Finest: rollup.Day, Purposes: []access.Purpose{"billing", "monitoring"}, NotAfter: now.Add(time.Hour)}
	if v, err := s.GrantVersion(ctx, a.tenant.ID); err != nil || v != 0 {
		t.Fatalf("version before any grant: %d, %v", v, err)
	}
	if err := s.AddGrant(ctx, g, now); err != nil {
		t.Fatal(err)
	}
	if err := s.AddGrant(ctx, g, now); !errs.Is(errs.Exists, err) {
		t.Errorf("same grant twice: %v, want Exists", err)
	}
	bad := g
	bad.ID, bad.Purposes = "grt_2", nil
	if err := s.AddGrant(ctx, bad, now); !errs.Is(errs.Invalid, err) {
		t.Errorf("grant without purpose: %v, want Invalid", err)
	}
	gs, v, err := s.Grants(ctx, a.tenant.ID)
	if err != nil || v != 1 || len(gs) != 1 {
		t.Fatalf("Grants: %v, version %d, %v", gs, v, err)
	}
	if got := gs[0]; got.ID != g.ID || got.Principal != g.Principal || got.Resource != g.Resource || got.Finest != g.Finest ||
		len(got.Purposes) != 2 || !got.NotAfter.Equal(g.NotAfter) || !got.NotBefore.IsZero() {
		t.Errorf("round trip: %+v, want %+v", got, g)
	}
	if gs, _, _ := s.Grants(ctx, b.tenant.ID); len(gs) != 0 {
		t.Errorf("tenant B sees A's grants: %v", gs)
	}
	if err := s.RevokeGrant(ctx, b.tenant.ID, g.ID); !errs.Is(errs.NotFound, err) {
		t.Errorf("revoking A's grant through B: %v, want NotFound", err)
	}
	if err := s.RevokeGrant(ctx, a.tenant.ID, g.ID); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.GrantVersion(ctx, a.tenant.ID); v != 2 {
		t.Errorf("version after add and revoke: %d, want 2", v)
	}
	if v, _ := s.GrantVersion(ctx, b.tenant.ID); v != 0 {
		t.Errorf("B's version moved: %d", v)
	}
}
