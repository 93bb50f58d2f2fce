package seal

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/testenv"
)

// clock is an injectable clock that tests advance by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// backend gives the store part of a Config (Path, or DSN and Schema) for a
// fresh, empty key store.
type backend struct {
	name  string
	store func(t testing.TB) Config
}

var backends = []backend{
	{"sqlite", func(t testing.TB) Config {
		return Config{Path: filepath.Join(t.TempDir(), "keys.db")}
	}},
	{"postgres", func(t testing.TB) Config {
		dsn, schema := testenv.Postgres(t)
		return Config{DSN: dsn, Schema: schema}
	}},
}

func newKEK(t testing.TB) *FileKEK {
	t.Helper()
	k, err := LoadOrCreateFileKEK(filepath.Join(t.TempDir(), "kek.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newID(t testing.TB, prefix string) string {
	t.Helper()
	id, err := registry.NewID(rand.Reader, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func subject(t testing.TB) registry.SubjectID { return registry.SubjectID(newID(t, "sub")) }

func open(t testing.TB, cfg Config) *Keys {
	t.Helper()
	k, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// fixture is one key store with a tenant and a clock.
type fixture struct {
	keys   *Keys
	cfg    Config
	clock  *clock
	tenant registry.TenantID
}

func newFixture(t *testing.T, b backend) *fixture {
	cfg := b.store(t)
	c := newClock()
	cfg.KEK = newKEK(t)
	cfg.Now = c.Now
	return &fixture{keys: open(t, cfg), cfg: cfg, clock: c, tenant: registry.TenantID(newID(t, "ten"))}
}

func (f *fixture) subject(t *testing.T) registry.SubjectID {
	t.Helper()
	s := subject(t)
	if err := f.keys.Create(context.Background(), f.tenant, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) seal(t *testing.T, s registry.SubjectID, msg, ad string) []byte {
	t.Helper()
	c, err := f.keys.Seal(context.Background(), s, []byte(msg), []byte(ad))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) wrapped(t *testing.T, s registry.SubjectID) []byte {
	t.Helper()
	r, err := f.keys.readRow(context.Background(), f.keys.db, s)
	if err != nil || r == nil {
		t.Fatalf("read row of %s: %v", s, err)
	}
	return r.wrapped
}

// wantErr checks err against a sentinel (errors.Is) or, if sentinel is nil,
// a kind.
func wantErr(t *testing.T, err error, sentinel error, kind errs.Kind) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("succeeded, want %v", fmt.Sprint(sentinel, kind))
	case sentinel != nil && !errors.Is(err, sentinel):
		t.Errorf("error %v, want %v", err, sentinel)
	case sentinel == nil && errs.KindOf(err) != kind:
		t.Errorf("error %v (kind %v), want kind %v", err, errs.KindOf(err), kind)
	}
}

func TestKeys(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Run("round trip and bad inputs", func(t *testing.T) { testRoundTrip(t, b) })
			t.Run("keyset bound to its subject", func(t *testing.T) { testMovedRow(t, b) })
			t.Run("destroy", func(t *testing.T) { testDestroy(t, b) })
			if b.name == "sqlite" {
				t.Run("destroy leaves no copy in the files", func(t *testing.T) { testDestroyScrubsFiles(t, b) })
			}
			t.Run("rotate KEK online", func(t *testing.T) { testRotateKEK(t, b) })
			t.Run("roll and retire", func(t *testing.T) { testRollRetire(t, b) })
			t.Run("replicas", func(t *testing.T) { testReplicas(t, b) })
			t.Run("status", func(t *testing.T) { testStatus(t, b) })
		})
	}
}

func testRoundTrip(t *testing.T, b backend) {
	ctx := context.Background()
	f := newFixture(t, b)
	a, other := f.subject(t), f.subject(t)
	c := f.seal(t, a, "1.5 kWh", "stream-1|2025-03-01")
	p, err := f.keys.Open(ctx, a, c, []byte("stream-1|2025-03-01"))
	if err != nil || string(p) != "1.5 kWh" {
		t.Fatalf("Open = %q, %v", p, err)
	}
	if id, ok := KeyID(c); !ok || id == 0 {
		t.Errorf("KeyID = %d, %v", id, ok)
	}
	prim, err := f.keys.AEAD(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := prim.Encrypt([]byte("hot"), []byte("ad"))
	if p, err := f.keys.Open(ctx, a, c2, []byte("ad")); err != nil || string(p) != "hot" {
		t.Errorf("Open of AEAD ciphertext = %q, %v", p, err)
	}
	tampered := bytes.Clone(c)
	tampered[len(tampered)-3] ^= 0x40
	unknownKey := bytes.Clone(c)
	unknownKey[2] ^= 0xff

	tests := []struct {
		name     string
		do       func() error
		sentinel error
		kind     errs.Kind
	}{
		{"create twice", func() error { return f.keys.Create(ctx, f.tenant, a) }, nil, errs.Exists},
		{"create malformed subject", func() error { return f.keys.Create(ctx, f.tenant, "bob") }, nil, errs.Invalid},
		{"create without tenant", func() error { return f.keys.Create(ctx, "", subject(t)) }, nil, errs.Invalid},
		{"wrong associated data", func() error { _, err := f.keys.Open(ctx, a, c, []byte("stream-2|2025-03-01")); return err }, nil, errs.Integrity},
		{"tampered ciphertext", func() error { _, err := f.keys.Open(ctx, a, tampered, []byte("stream-1|2025-03-01")); return err }, nil, errs.Integrity},
		{"unknown key ID", func() error { _, err := f.keys.Open(ctx, a, unknownKey, []byte("stream-1|2025-03-01")); return err }, nil, errs.Integrity},
		{"truncated", func() error { _, err := f.keys.Open(ctx, a, c[:4], nil); return err }, nil, errs.Integrity},
		{"another subject's ciphertext", func() error { _, err := f.keys.Open(ctx, other, c, []byte("stream-1|2025-03-01")); return err }, nil, errs.Integrity},
		{"open for unknown subject", func() error { _, err := f.keys.Open(ctx, subject(t), c, nil); return err }, ErrErased, 0},
		{"seal for unknown subject", func() error { _, err := f.keys.Seal(ctx, subject(t), []byte("x"), nil); return err }, ErrNoKey, 0},
		{"seal for malformed subject", func() error { _, err := f.keys.Seal(ctx, "../x", []byte("x"), nil); return err }, nil, errs.Invalid},
		{"roll unknown subject", func() error { _, err := f.keys.Roll(ctx, subject(t)); return err }, ErrNoKey, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantErr(t, tt.do(), tt.sentinel, tt.kind) })
	}
}

// testMovedRow: a wrapped keyset copied onto another subject's row (by
// someone with write access to the key store) does not unwrap there.
func testMovedRow(t *testing.T, b backend) {
	ctx := context.Background()
	f := newFixture(t, b)
	a, victim := f.subject(t), f.subject(t)
	c := f.seal(t, a, "secret", "ad")
	k := f.keys
	_, err := k.db.ExecContext(ctx, k.q(`UPDATE subject_keys SET wrapped = ?, kek_id = ? WHERE subject_id = ?`),
		f.wrapped(t, a), k.kek.ID(), string(victim))
	if err != nil {
		t.Fatal(err)
	}
	k.evict(victim)
	_, err = k.Open(ctx, victim, c, []byte("ad"))
	wantErr(t, err, nil, errs.Integrity)
	_, err = k.Seal(ctx, victim, []byte("x"), nil)
	wantErr(t, err, nil, errs.Integrity)

	// Same subject ID under another tenant: also refused.
	_, err = k.db.ExecContext(ctx, k.q(`UPDATE subject_keys SET tenant_id = ? WHERE subject_id = ?`), newID(t, "ten"), string(a))
	if err != nil {
		t.Fatal(err)
	}
	k.evict(a)
	_, err = k.Open(ctx, a, c, []byte("ad"))
	wantErr(t, err, nil, errs.Integrity)
}

func testDestroy(t *testing.T, b backend) {
	ctx := context.Background()
	f := newFixture(t, b)
	gone, kept := f.subject(t), f.subject(t)
	cg := f.seal(t, gone, "gone", "ad")
	ck := f.seal(t, kept, "kept", "ad")
	// Warm the cache: Destroy must evict it.
	if _, err := f.keys.Open(ctx, gone, cg, []byte("ad")); err != nil {
		t.Fatal(err)
	}
	keyID, _ := KeyID(cg)

	ev, err := f.keys.Destroy(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	want := Evidence{Subject: gone, Tenant: f.tenant, KeyIDs: []uint32{keyID}, KEK: f.keys.kek.ID(), DestroyedAt: f.clock.Now()}
	if fmt.Sprint(ev) != fmt.Sprint(want) {
		t.Errorf("evidence\n got %+v\nwant %+v", ev, want)
	}
	_, err = f.keys.Open(ctx, gone, cg, []byte("ad"))
	wantErr(t, err, ErrErased, 0)
	if !errs.Is(errs.NotFound, err) {
		t.Errorf("ErrErased has kind %v, want NotFound", errs.KindOf(err))
	}
	_, err = f.keys.Seal(ctx, gone, []byte("new"), nil)
	wantErr(t, err, ErrErased, 0)
	_, err = f.keys.AEAD(ctx, gone)
	wantErr(t, err, ErrErased, 0)
	if p, err := f.keys.Open(ctx, kept, ck, []byte("ad")); err != nil || string(p) != "kept" {
		t.Errorf("other subject after destroy: %q, %v", p, err)
	}

	// A retried erasure succeeds with the first evidence.
	f.clock.Advance(time.Hour)
	ev2, err := f.keys.Destroy(ctx, gone)
	if err != nil || fmt.Sprint(ev2) != fmt.Sprint(want) {
		t.Errorf("second Destroy = %+v, %v; want %+v", ev2, err, want)
	}
	_, err = f.keys.Destroy(ctx, subject(t))
	wantErr(t, err, ErrNoKey, 0)

	// A new keyset for the same subject does not bring old data back.
	if err := f.keys.Create(ctx, f.tenant, gone); err != nil {
		t.Fatal(err)
	}
	_, err = f.keys.Open(ctx, gone, cg, []byte("ad"))
	wantErr(t, err, ErrErased, 0)
}

// testDestroyScrubsFiles reads the SQLite files byte by byte: after
// Destroy neither the database nor its WAL holds the wrapped keyset.
func testDestroyScrubsFiles(t *testing.T, b backend) {
	ctx := context.Background()
	f := newFixture(t, b)
	var kept []registry.SubjectID
	for range 20 {
		kept = append(kept, f.subject(t))
	}
	gone := f.subject(t)
	// Leave several versions of the row behind: rolls rewrite it.
	for range 3 {
		if _, err := f.keys.Roll(ctx, gone); err != nil {
			t.Fatal(err)
		}
	}
	wrapped := f.wrapped(t, gone)
	inner := wrappedCiphertext(t, wrapped)

	files := func() []byte {
		var all []byte
		for _, suffix := range []string{"", "-wal"} {
			data, err := os.ReadFile(f.cfg.Path + suffix)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			all = append(all, data...)
		}
		return all
	}
	if before := files(); !bytes.Contains(before, inner) {
		t.Fatal("the wrapped keyset is not found in the files before Destroy; the test would prove nothing")
	}
	if _, err := f.keys.Destroy(ctx, gone); err != nil {
		t.Fatal(err)
	}
	after := files()
	if bytes.Contains(after, wrapped) {
		t.Error("the destroyed wrapped keyset is still in keys.db or keys.db-wal")
	}
	// Any 24-byte window of the encrypted keyset would be a leftover.
	for i := 0; i+24 <= len(inner); i += 8 {
		if bytes.Contains(after, inner[i:i+24]) {
			t.Fatalf("bytes %d..%d of the destroyed encrypted keyset are still in the files", i, i+24)
		}
	}
	var secure int
	if err := f.keys.db.QueryRowContext(ctx, "PRAGMA secure_delete").Scan(&secure); err != nil || secure != 1 {
		t.Errorf("secure_delete = %d, %v; want 1", secure, err)
	}
	for _, s := range kept {
		if !bytes.Contains(after, wrappedCiphertext(t, f.wrapped(t, s))) {
			t.Errorf("kept subject %s's keyset is not in the files: the search is broken", s)
		}
	}
}

func wrappedCiphertext(t *testing.T, wrapped []byte) []byte {
	t.Helper()
	enc, err := readEncrypted(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) < 48 {
		t.Fatalf("encrypted keyset of %d bytes is implausibly short", len(enc))
	}
	return enc
}

func testRotateKEK(t *testing.T, b backend) {
	ctx := context.Background()
	store := b.store(t)
	oldKEK, newKEK := newKEK(t), newKEK(t)
	tenant := registry.TenantID(newID(t, "ten"))

	cfg := store
	cfg.KEK = oldKEK
	k1 := open(t, cfg)
	type sealed struct {
		s registry.SubjectID
		c []byte
	}
	var data []sealed
	for i := range 40 {
		s := subject(t)
		if err := k1.Create(ctx, tenant, s); err != nil {
			t.Fatal(err)
		}
		c, err := k1.Seal(ctx, s, fmt.Appendf(nil, "reading %d", i), []byte("ad"))
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, sealed{s, c})
	}
	k1.Close()

	// Rotate with no cache, so that every operation unwraps, while
	// goroutines seal, open and roll.
	cfg.KEK, cfg.Old, cfg.CacheTTL = newKEK, []KEK{oldKEK}, -1
	k2 := open(t, cfg)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 100)
	for w := range 4 {
		wg.Go(func() {
			for i := w; ; i = (i + 1) % len(data) {
				select {
				case <-stop:
					return
				default:
				}
				d := data[i]
				if _, err := k2.Open(ctx, d.s, d.c, []byte("ad")); err != nil {
					errc <- fmt.Errorf("open during rotation: %w", err)
					return
				}
				c, err := k2.Seal(ctx, d.s, []byte("during"), []byte("ad2"))
				if err != nil {
					errc <- fmt.Errorf("seal during rotation: %w", err)
					return
				}
				if _, err := k2.Open(ctx, d.s, c, []byte("ad2")); err != nil {
					errc <- fmt.Errorf("open fresh seal during rotation: %w", err)
					return
				}
				if w == 0 && i%7 == 0 {
					if _, err := k2.Roll(ctx, d.s); err != nil {
						errc <- fmt.Errorf("roll during rotation: %w", err)
						return
					}
				}
			}
		})
	}
	var calls, lastDone, lastTotal int
	err := k2.RotateKEK(ctx, func(done, total int) { calls++; lastDone, lastTotal = done, total })
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	// A concurrent Roll may rewrap a keyset before the pass counts it or
	// reaches it: fewer calls and a smaller total then, but the last call
	// reports all of its total done (and Status below sees all 40 moved).
	if calls < 1 || calls > 40 || lastDone != lastTotal || lastTotal < 1 || lastTotal > 40 {
		t.Errorf("progress: %d calls, last (%d, %d); want at most 40 calls ending (n, n), n ≤ 40", calls, lastDone, lastTotal)
	}
	st, err := k2.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.ByKEK) != 1 || st.ByKEK[newKEK.ID()] != 40 {
		t.Errorf("after rotation ByKEK = %v, want all 40 under %s", st.ByKEK, newKEK.ID())
	}
	// Run again: nothing to do.
	calls = 0
	if err := k2.RotateKEK(ctx, func(int, int) { calls++ }); err != nil || calls != 0 {
		t.Errorf("second RotateKEK: %d calls, %v", calls, err)
	}
	k2.Close()

	// The old KEK is no longer needed.
	cfg.Old = nil
	k3 := open(t, cfg)
	for _, d := range data {
		if _, err := k3.Open(ctx, d.s, d.c, []byte("ad")); err != nil {
			t.Errorf("open after rotation without the old KEK: %v", err)
		}
	}
	// And a store still under a KEK that is not configured says so.
	cfg.KEK, cfg.Old = oldKEK, nil
	k4 := open(t, cfg)
	_, err = k4.Open(ctx, data[0].s, data[0].c, []byte("ad"))
	wantErr(t, err, nil, errs.Unavailable)
}

func testRollRetire(t *testing.T, b backend) {
	ctx := context.Background()
	f := newFixture(t, b)
	s := f.subject(t)
	old := f.seal(t, s, "old", "ad")
	oldID, _ := KeyID(old)

	newID, err := f.keys.Roll(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if newID == oldID {
		t.Fatal("Roll returned the old key ID")
	}
	fresh := f.seal(t, s, "new", "ad")
	if id, _ := KeyID(fresh); id != newID {
		t.Errorf("seal after Roll used key %d, want the new primary %d", id, newID)
	}
	for _, c := range [][]byte{old, fresh} {
		if _, err := f.keys.Open(ctx, s, c, []byte("ad")); err != nil {
			t.Errorf("open after Roll: %v", err)
		}
	}
	st, _ := f.keys.Status(ctx)
	if st.Rolling != 1 {
		t.Errorf("Rolling = %d during a roll, want 1", st.Rolling)
	}

	// Too early: another replica may still seal under the old key.
	err = f.keys.Retire(ctx, s)
	wantErr(t, err, nil, errs.Conflict)

	f.clock.Advance(2 * time.Second)
	if err := f.keys.Retire(ctx, s); err != nil {
		t.Fatal(err)
	}
	_, err = f.keys.Open(ctx, s, old, []byte("ad"))
	wantErr(t, err, ErrErased, 0)
	if p, err := f.keys.Open(ctx, s, fresh, []byte("ad")); err != nil || string(p) != "new" {
		t.Errorf("open new ciphertext after Retire: %q, %v", p, err)
	}
	if err := f.keys.Retire(ctx, s); err != nil {
		t.Errorf("Retire with a single key: %v", err)
	}
	st, _ = f.keys.Status(ctx)
	if st.Rolling != 0 || st.Retired != 1 {
		t.Errorf("after Retire: Rolling %d, Retired %d; want 0, 1", st.Rolling, st.Retired)
	}
}

// testReplicas runs two Keys on one store, as two hub replicas would.
func testReplicas(t *testing.T, b backend) {
	ctx := context.Background()
	f := newFixture(t, b)
	cfg := f.cfg
	r2 := open(t, cfg)
	s := f.subject(t)
	c := f.seal(t, s, "x", "ad")

	// A key rolled on replica 2 is found by replica 1, whose cache is stale.
	if _, err := f.keys.Open(ctx, s, c, []byte("ad")); err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Roll(ctx, s); err != nil {
		t.Fatal(err)
	}
	c2, err := r2.Seal(ctx, s, []byte("y"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := f.keys.Open(ctx, s, c2, []byte("ad")); err != nil || string(p) != "y" {
		t.Errorf("replica 1 opening a ciphertext under a key rolled on replica 2: %q, %v", p, err)
	}

	// An erasure on replica 2 reaches replica 1 within the cache TTL.
	if _, err := r2.Destroy(ctx, s); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(1001 * time.Millisecond)
	_, err = f.keys.Open(ctx, s, c, []byte("ad"))
	wantErr(t, err, ErrErased, 0)
}

func testStatus(t *testing.T, b backend) {
	ctx := context.Background()
	f := newFixture(t, b)
	var subs []registry.SubjectID
	for range 5 {
		subs = append(subs, f.subject(t))
	}
	if _, err := f.keys.Roll(ctx, subs[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := f.keys.Roll(ctx, subs[1]); err != nil {
		t.Fatal(err)
	}
	for _, s := range subs[3:] {
		if _, err := f.keys.Destroy(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	st, err := f.keys.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := Status{Subjects: 3, ByKEK: map[string]int{f.keys.kek.ID(): 3}, Rolling: 2, Destroyed: 2, Current: f.keys.kek.ID()}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Errorf("Status\n got %+v\nwant %+v", st, want)
	}
}

func TestOpenConfig(t *testing.T) {
	kek := newKEK(t)
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no KEK", Config{Path: filepath.Join(dir, "a.db")}},
		{"duplicate KEK", Config{Path: filepath.Join(dir, "b.db"), KEK: kek, Old: []KEK{kek}}},
		{"nil old KEK", Config{Path: filepath.Join(dir, "c.db"), KEK: kek, Old: []KEK{nil}}},
		{"no path, no DSN", Config{KEK: kek}},
		{"bad schema", Config{DSN: "postgres://x@127.0.0.1/x", Schema: "a;drop", KEK: kek}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Open(context.Background(), tt.cfg)
			if err == nil {
				k.Close()
				t.Fatal("Open succeeded")
			}
			if errs.KindOf(err) != errs.Invalid {
				t.Errorf("error %v (kind %v), want Invalid", err, errs.KindOf(err))
			}
		})
	}
	// The key store file is private.
	k := open(t, Config{Path: filepath.Join(dir, "keys.db"), KEK: kek})
	k.Create(context.Background(), registry.TenantID(newID(t, "ten")), subject(t))
	for _, name := range []string{"keys.db", "keys.db-wal"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", name, st.Mode().Perm())
		}
	}
}

// readEncrypted returns the KEK ciphertext inside a wrapped keyset.
func readEncrypted(wrapped []byte) ([]byte, error) {
	enc, err := keyset.NewBinaryReader(bytes.NewReader(wrapped)).ReadEncrypted()
	if err != nil {
		return nil, err
	}
	return enc.GetEncryptedKeyset(), nil
}
