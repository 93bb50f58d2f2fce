package identity_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/identity"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/store"
)

// clock is a settable fake clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const (
	tenant = registry.TenantID("ten_1")
	goodPW = "violet tractor moss lantern"
)

var cheap = identity.Params{Memory: 64, Time: 1, Threads: 1}

type env struct {
	svc   *identity.Service
	st    *store.Store
	clock *clock
	alice identity.User
}

func newEnv(t *testing.T, mod func(*identity.Config)) *env {
	t.Helper()
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	st, err := store.Open(ctx, store.Config{Path: filepath.Join(t.TempDir(), "hub.db"), Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateTenant(ctx, registry.Tenant{ID: tenant, Name: "Sunny Coop", Created: c.Now()}); err != nil {
		t.Fatal(err)
	}
	cfg := identity.Config{Store: st, Params: cheap, Now: c.Now}
	if mod != nil {
		mod(&cfg)
	}
	svc, err := identity.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	alice, err := svc.AddUser(ctx, tenant, identity.NewUser{Name: "Alice", Password: goodPW, Roles: []access.Role{access.RoleAnalyst}}, "Sunny Coop")
	if err != nil {
		t.Fatal(err)
	}
	return &env{svc: svc, st: st, clock: c, alice: alice}
}

func (e *env) login(name, pw, addr string) (identity.User, string, error) {
	u, tok, _, err := e.svc.Login(context.Background(), identity.Credentials{Tenant: tenant, Name: name, Password: pw, Address: addr})
	return u, tok, err
}

func TestAddUser(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if e.alice.Name != "alice" || !e.alice.HasPassword || !e.alice.ID.Valid() || e.alice.ID[:4] != "usr_" {
		t.Errorf("alice = %+v", e.alice)
	}
	for _, tc := range []struct {
		name string
		in   identity.NewUser
		kind errs.Kind
	}{
		{"duplicate", identity.NewUser{Name: "ALICE", Password: goodPW}, errs.Exists},
		{"weak password", identity.NewUser{Name: "bob", Password: "short"}, errs.Invalid},
		{"password with login name", identity.NewUser{Name: "bobby", Password: "bobby tables drop everything"}, errs.Invalid},
		{"no credential", identity.NewUser{Name: "bob"}, errs.Invalid},
		{"bad name", identity.NewUser{Name: "bob smith", Password: goodPW}, errs.Invalid},
		{"unknown role", identity.NewUser{Name: "bob", Password: goodPW, Roles: []access.Role{"god"}}, errs.Invalid},
		{"app role", identity.NewUser{Name: "bob", Password: goodPW, Roles: []access.Role{access.RoleApp}}, errs.Invalid},
		{"half an OIDC link", identity.NewUser{Name: "bob", Issuer: "https://idp"}, errs.Invalid},
	} {
		if _, err := e.svc.AddUser(ctx, tenant, tc.in, "Sunny Coop"); !errs.Is(tc.kind, err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.kind)
		}
	}
	if _, err := e.svc.AddUser(ctx, "ten_missing", identity.NewUser{Name: "bob", Password: goodPW}, ""); !errs.Is(errs.NotFound, err) {
		t.Errorf("missing tenant: %v", err)
	}
}

func TestLoginAndSession(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	u, tok, err := e.login(" Alice ", goodPW, "192.0.2.1")
	if err != nil || u.ID != e.alice.ID || len(tok) != 43 {
		t.Fatalf("login = %+v, %q, %v", u, tok, err)
	}
	req := func(tok string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.AddCookie(&http.Cookie{Name: identity.CookieName, Value: tok})
		return r
	}
	p, ok, err := e.svc.Authenticate(ctx, req(tok))
	if err != nil || !ok || p.ID != e.alice.ID || p.Tenant != tenant || !p.Has(access.RoleAnalyst) {
		t.Fatalf("Authenticate = %+v, %v, %v", p, ok, err)
	}
	if _, ok, err := e.svc.Authenticate(ctx, httptest.NewRequest("GET", "/", nil)); ok || err != nil {
		t.Errorf("no cookie: ok %v, err %v; want not mine", ok, err)
	}
	if _, ok, err := e.svc.Authenticate(ctx, req("forged")); !ok || !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("forged cookie: ok %v, err %v", ok, err)
	}
	// Idle timeout: used every 20 minutes the session lives on...
	for range 3 {
		e.clock.Add(20 * time.Minute)
		if _, _, err := e.svc.Authenticate(ctx, req(tok)); err != nil {
			t.Fatalf("session used within the idle timeout: %v", err)
		}
	}
	// ...31 minutes unused, it is gone.
	e.clock.Add(31 * time.Minute)
	if _, _, err := e.svc.Authenticate(ctx, req(tok)); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("idle session: %v", err)
	}
	// Absolute timeout: 12 h after login, however busy.
	_, tok, _ = e.login("alice", goodPW, "192.0.2.1")
	for range 12 * 3 {
		e.clock.Add(20 * time.Minute)
		_, _, err = e.svc.Authenticate(ctx, req(tok))
	}
	if !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("session after 12 h: %v", err)
	}
	// Logout destroys the session.
	_, tok, _ = e.login("alice", goodPW, "192.0.2.1")
	if who, err := e.svc.Logout(ctx, req(tok)); err != nil || who != e.alice.ID {
		t.Fatalf("Logout = %v, %v", who, err)
	}
	if _, _, err := e.svc.Authenticate(ctx, req(tok)); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("after logout: %v", err)
	}
	// Disabling a user ends their sessions and their logins.
	_, tok, _ = e.login("alice", goodPW, "192.0.2.1")
	if _, err := e.svc.Disable(ctx, tenant, e.alice.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.Authenticate(ctx, req(tok)); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("session of a disabled user: %v", err)
	}
	if _, _, err := e.login("alice", goodPW, "192.0.2.1"); err != identity.ErrLogin {
		t.Errorf("login of a disabled user: %v, want ErrLogin", err)
	}
}

func TestPasswordChangeEndsSessions(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	_, tok, _ := e.login("alice", goodPW, "192.0.2.1")
	if err := e.svc.SetPassword(ctx, tenant, e.alice.ID, "password", "Sunny Coop"); !errs.Is(errs.Invalid, err) {
		t.Errorf("weak new password: %v", err)
	}
	if err := e.svc.SetPassword(ctx, tenant, e.alice.ID, "granite otter velvet sunrise", "Sunny Coop"); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: identity.CookieName, Value: tok})
	if _, _, err := e.svc.Authenticate(ctx, r); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("session after password change: %v", err)
	}
	if _, _, err := e.login("alice", goodPW, "192.0.2.1"); err != identity.ErrLogin {
		t.Errorf("old password: %v", err)
	}
	if _, _, err := e.login("alice", "granite otter velvet sunrise", "192.0.2.1"); err != nil {
		t.Errorf("new password: %v", err)
	}
}

// TestNoEnumeration: an unknown login name and a wrong password give the
// same error; both verify one hash (the unknown name a dummy's).
func TestNoEnumeration(t *testing.T) {
	e := newEnv(t, nil)
	_, _, errUnknown := e.login("mallory", goodPW, "192.0.2.1")
	_, _, errWrong := e.login("alice", "wrong but long passphrase", "192.0.2.2")
	if errUnknown != identity.ErrLogin || errWrong != identity.ErrLogin {
		t.Errorf("unknown user: %v; wrong password: %v; want both ErrLogin", errUnknown, errWrong)
	}
	// Throttling does not tell them apart either: the 6th failure of
	// either account waits the same.
	var waits [2]time.Duration
	for i, name := range []string{"mallory", "alice"} {
		for range 4 {
			e.login(name, "wrong but long passphrase", "192.0.2.3")
		}
		_, _, err := e.login(name, "wrong but long passphrase", "192.0.2.3")
		var te *identity.ThrottledError
		if !errors.As(err, &te) {
			t.Fatalf("%s: 6th attempt: %v, want throttled", name, err)
		}
		waits[i] = te.Wait
	}
	if waits[0] != waits[1] {
		t.Errorf("throttle waits differ: unknown %v, known %v", waits[0], waits[1])
	}
}

func TestThrottle(t *testing.T) {
	e := newEnv(t, nil)
	bad := func(name, addr string) error {
		_, _, err := e.login(name, "wrong but long passphrase", addr)
		return err
	}
	throttled := func(err error) time.Duration {
		var te *identity.ThrottledError
		if errors.As(err, &te) {
			return te.Wait
		}
		return 0
	}
	// Per account: 5 free failures, then 1 s, 2 s, 4 s, ... up to 15 min.
	for i := range 5 {
		if err := bad("alice", "192.0.2.1"); err != identity.ErrLogin {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	// From another address too: the account is what is throttled.
	if w := throttled(bad("alice", "198.51.100.7")); w != time.Second {
		t.Fatalf("6th attempt waits %v, want 1s", w)
	}
	// Even the right password is refused while throttled, without a check.
	if _, _, err := e.login("alice", goodPW, "192.0.2.1"); throttled(err) == 0 {
		t.Fatalf("right password while throttled: %v", err)
	}
	want := time.Second
	for range 12 {
		e.clock.Add(want)
		if err := bad("alice", "192.0.2.1"); err != identity.ErrLogin {
			t.Fatalf("after waiting %v: %v", want, err)
		}
		want = min(2*want, 15*time.Minute)
		if w := throttled(bad("alice", "192.0.2.1")); w != want {
			t.Fatalf("wait = %v, want %v", w, want)
		}
	}
	if want != 15*time.Minute {
		t.Fatalf("lockout never reached the 15 min cap: %v", want)
	}
	// Other accounts are not affected...
	if _, _, err := e.login("bob", "wrong but long passphrase", "192.0.2.9"); err != identity.ErrLogin {
		t.Errorf("other account: %v", err)
	}
	// ...and after the lockout the right password works and resets the count.
	e.clock.Add(15 * time.Minute)
	if _, _, err := e.login("alice", goodPW, "192.0.2.1"); err != nil {
		t.Fatalf("after lockout: %v", err)
	}
	for range 5 {
		if err := bad("alice", "192.0.2.77"); err != identity.ErrLogin {
			t.Fatalf("after reset: %v", err)
		}
	}
}

func TestThrottlePerAddress(t *testing.T) {
	e := newEnv(t, nil)
	// One address spraying many accounts: 20 free failures, then it waits,
	// even for an account it never tried.
	for i := range 20 {
		if _, _, err := e.login("user"+string(rune('a'+i)), "wrong but long passphrase", "203.0.113.5"); err != identity.ErrLogin {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	_, _, err := e.login("alice", goodPW, "203.0.113.5")
	var te *identity.ThrottledError
	if !errors.As(err, &te) || te.Wait != time.Second {
		t.Fatalf("21st attempt from the address: %v", err)
	}
	// Alice from her own address is unaffected.
	if _, _, err := e.login("alice", goodPW, "192.0.2.1"); err != nil {
		t.Errorf("alice elsewhere: %v", err)
	}
	// The counter is not reset by a success from the address.
	e.clock.Add(time.Second)
	if _, _, err := e.login("alice", goodPW, "203.0.113.5"); err != nil {
		t.Fatalf("after waiting: %v", err)
	}
	e.clock.Add(time.Second)
	if _, _, err := e.login("userz", "wrong but long passphrase", "203.0.113.5"); err != identity.ErrLogin {
		t.Fatalf("attempt: %v", err)
	}
	if _, _, err := e.login("usery", "wrong but long passphrase", "203.0.113.5"); !errors.As(err, &te) {
		t.Errorf("success from a spraying address reset its count: %v", err)
	}
}

// TestThrottleConcurrent: parallel attempts cannot slip past the count.
func TestThrottleConcurrent(t *testing.T) {
	e := newEnv(t, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	checked := 0
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := e.login("alice", "wrong but long passphrase", "192.0.2.1")
			if err == identity.ErrLogin {
				mu.Lock()
				checked++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if checked != 5 {
		t.Errorf("%d of 30 concurrent attempts checked a password, want 5", checked)
	}
}

func BenchmarkLogin(b *testing.B) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Path: filepath.Join(b.TempDir(), "hub.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	st.CreateTenant(ctx, registry.Tenant{ID: tenant, Name: "Sunny Coop", Created: time.Now()})
	svc, _ := identity.New(identity.Config{Store: st, AccountThrottle: identity.ThrottleConfig{Free: 1 << 30}, AddressThrottle: identity.ThrottleConfig{Free: 1 << 30}})
	svc.AddUser(ctx, tenant, identity.NewUser{Name: "alice", Password: goodPW}, "")
	for b.Loop() {
		if _, _, _, err := svc.Login(ctx, identity.Credentials{Tenant: tenant, Name: "alice", Password: goodPW, Address: "192.0.2.1"}); err != nil {
			b.Fatal(err)
		}
	}
}
