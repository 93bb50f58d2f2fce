package store_test

import (
	"context"
	"crypto/sha256"
	"sync"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/identity"
	"github.com/custos-iot/custos/internal/store"
)

func TestIdentityStore(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000).UTC()
	clock := func() time.Time { return now }
	for name, open := range backends(t, clock) {
		t.Run(name, func(t *testing.T) {
			t.Run("users", func(t *testing.T) { testUsers(t, open(t), now) })
			t.Run("sessions", func(t *testing.T) { testSessions(t, open(t), now) })
			t.Run("providers and flows", func(t *testing.T) { testProviders(t, open(t), now) })
		})
	}
}

func testUsers(t *testing.T, s *store.Store, now time.Time) {
	ctx := context.Background()
	a, b := seed(t, s, "a"), seed(t, s, "b")
	u := identity.User{ID: "usr_1", Tenant: a.tenant.ID, Name: "alice", Roles: []access.Role{access.RoleAnalyst, access.RoleMember},
		MemberOf: a.subject.ID, PasswordHash: "$argon2id$x", Created: now}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	dup := u
	dup.ID = "usr_2"
	if err := s.CreateUser(ctx, dup); !errs.Is(errs.Exists, err) {
		t.Errorf("duplicate login name: %v, want Exists", err)
	}
	// The same name in another tenant is another user.
	other := dup
	other.Tenant = b.tenant.ID
	if err := s.CreateUser(ctx, other); err != nil {
		t.Fatalf("same name, other tenant: %v", err)
	}
	if err := s.CreateUser(ctx, identity.User{ID: "usr_3", Tenant: "ten_missing", Name: "x", Created: now}); !errs.Is(errs.NotFound, err) {
		t.Errorf("user of a missing tenant: %v, want NotFound", err)
	}
	ext := identity.User{ID: "usr_4", Tenant: a.tenant.ID, Name: "bob", Issuer: "https://idp", ExternalID: "sub-1", Roles: []access.Role{}, Created: now}
	if err := s.CreateUser(ctx, ext); err != nil {
		t.Fatal(err)
	}
	ext2 := ext
	ext2.ID, ext2.Name = "usr_5", "bob2"
	if err := s.CreateUser(ctx, ext2); !errs.Is(errs.Exists, err) {
		t.Errorf("duplicate OIDC account: %v, want Exists", err)
	}
	got, err := s.UserByName(ctx, a.tenant.ID, "alice")
	if err != nil || got.ID != u.ID || len(got.Roles) != 2 || got.Roles[1] != access.RoleMember || got.MemberOf != a.subject.ID || !got.HasPassword || !got.Created.Equal(now) {
		t.Fatalf("UserByName = %+v, %v", got, err)
	}
	if _, err := s.User(ctx, b.tenant.ID, u.ID); !errs.Is(errs.NotFound, err) {
		t.Errorf("user read through another tenant: %v, want NotFound", err)
	}
	if got, err := s.UserByExternal(ctx, a.tenant.ID, "https://idp", "sub-1"); err != nil || got.ID != ext.ID {
		t.Errorf("UserByExternal = %+v, %v", got, err)
	}
	if _, err := s.UserByExternal(ctx, b.tenant.ID, "https://idp", "sub-1"); !errs.Is(errs.NotFound, err) {
		t.Errorf("OIDC account through another tenant: %v, want NotFound", err)
	}
	if _, err := s.UserByExternal(ctx, a.tenant.ID, "", ""); !errs.Is(errs.NotFound, err) {
		t.Errorf("empty OIDC account: %v, want NotFound", err)
	}
	us, err := s.Users(ctx, a.tenant.ID)
	if err != nil || len(us) != 2 {
		t.Fatalf("Users = %+v, %v", us, err)
	}
	if err := s.SetUserPassword(ctx, a.tenant.ID, u.ID, "$argon2id$y"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUserPassword(ctx, b.tenant.ID, ext.ID, "$argon2id$y"); !errs.Is(errs.NotFound, err) {
		t.Errorf("password change through another tenant: %v, want NotFound", err)
	}
	if err := s.DisableUser(ctx, a.tenant.ID, u.ID, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	s.DisableUser(ctx, a.tenant.ID, u.ID, now.Add(2*time.Hour))
	got, _ = s.User(ctx, a.tenant.ID, u.ID)
	if got.PasswordHash != "$argon2id$y" || !got.Disabled.Equal(now.Add(time.Hour)) {
		t.Errorf("after change and disable: %+v", got)
	}
}

func testSessions(t *testing.T, s *store.Store, now time.Time) {
	ctx := context.Background()
	a := seed(t, s, "a")
	u := identity.User{ID: "usr_1", Tenant: a.tenant.ID, Name: "alice", Created: now}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	h1, h2, old := sha256.Sum256([]byte("1")), sha256.Sum256([]byte("2")), sha256.Sum256([]byte("old"))
	mk := func(h [32]byte, created time.Time) identity.Session {
		return identity.Session{Hash: h, Tenant: a.tenant.ID, User: u.ID, Created: created, Seen: created, Expires: created.Add(time.Hour)}
	}
	if err := s.CreateSession(ctx, mk(old, now.Add(-2*time.Hour))); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, mk(h1, now)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, old); !errs.Is(errs.NotFound, err) {
		t.Errorf("expired session not cleaned up: %v", err)
	}
	if err := s.CreateSession(ctx, mk(h2, now)); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchSession(ctx, h1, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	s.TouchSession(ctx, h1, now) // never moves back
	got, err := s.Session(ctx, h1)
	if err != nil || got.User != u.ID || got.Tenant != a.tenant.ID || !got.Seen.Equal(now.Add(time.Minute)) || !got.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("Session = %+v, %v", got, err)
	}
	if err := s.DeleteSession(ctx, h1); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSession(ctx, h1); err != nil {
		t.Errorf("second delete: %v", err)
	}
	if _, err := s.Session(ctx, h1); !errs.Is(errs.NotFound, err) {
		t.Errorf("deleted session: %v", err)
	}
	// A password change ends every session of the user.
	if err := s.SetUserPassword(ctx, a.tenant.ID, u.ID, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, h2); !errs.Is(errs.NotFound, err) {
		t.Errorf("session after password change: %v", err)
	}
}

func testProviders(t *testing.T, s *store.Store, now time.Time) {
	ctx := context.Background()
	a, b := seed(t, s, "a"), seed(t, s, "b")
	p := identity.Provider{ID: "idp_1", Tenant: a.tenant.ID, Issuer: "https://idp.example", ClientID: "custos", ClientSecret: "s3cret",
		RedirectURL: "https://hub/cb", AutoCreate: true, DefaultRoles: []access.Role{access.RoleAnalyst}, Created: now}
	if err := s.CreateProvider(ctx, p); err != nil {
		t.Fatal(err)
	}
	dup := p
	dup.ID = "idp_2"
	if err := s.CreateProvider(ctx, dup); !errs.Is(errs.Exists, err) {
		t.Errorf("duplicate issuer: %v", err)
	}
	got, err := s.Provider(ctx, a.tenant.ID, p.ID)
	if err != nil || got.ClientSecret != "s3cret" || !got.AutoCreate || len(got.DefaultRoles) != 1 || got.RedirectURL != p.RedirectURL {
		t.Fatalf("Provider = %+v, %v", got, err)
	}
	if _, err := s.Provider(ctx, b.tenant.ID, p.ID); !errs.Is(errs.NotFound, err) {
		t.Errorf("provider through another tenant: %v", err)
	}
	if ps, err := s.Providers(ctx, a.tenant.ID); err != nil || len(ps) != 1 {
		t.Errorf("Providers = %+v, %v", ps, err)
	}
	h := sha256.Sum256([]byte("state"))
	f := identity.Flow{StateHash: h, Tenant: a.tenant.ID, Provider: p.ID, Nonce: "n", Verifier: "v", Expires: now.Add(10 * time.Minute)}
	if err := s.CreateFlow(ctx, f); err != nil {
		t.Fatal(err)
	}
	// Two callbacks race for one state: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.TakeFlow(ctx, h)
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
				if got.Nonce != "n" || got.Verifier != "v" || got.Provider != p.ID {
					t.Errorf("TakeFlow = %+v", got)
				}
			} else if !errs.Is(errs.NotFound, err) {
				t.Errorf("TakeFlow: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d callbacks took the same flow, want 1", wins)
	}
	expired := identity.Flow{StateHash: sha256.Sum256([]byte("old")), Tenant: a.tenant.ID, Provider: p.ID, Expires: now.Add(-time.Second)}
	s.CreateFlow(ctx, expired)
	s.CreateFlow(ctx, f)
	if _, err := s.TakeFlow(ctx, expired.StateHash); !errs.Is(errs.NotFound, err) {
		t.Errorf("expired flow not cleaned up: %v", err)
	}
}
