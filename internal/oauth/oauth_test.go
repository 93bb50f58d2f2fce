package oauth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/oauth"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/store"
	"github.com/custos-iot/custos/internal/testenv"
)

// clock is a settable clock, near real time (op stamps JWTs from the
// system clock).
type clock struct {
	mu sync.Mutex
	d  time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.d)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.d += d
	c.mu.Unlock()
}

// users is the test's login: the user named by the X-Test-User header
// ("usr_x@ten_y"), standing in for the web session authenticator.
type users struct{}

func (users) Authenticate(_ context.Context, r *http.Request) (access.Principal, bool, error) {
	v := r.Header.Get("X-Test-User")
	if v == "" {
		return access.Principal{}, false, nil
	}
	id, t, _ := strings.Cut(v, "@")
	return access.Principal{ID: access.PrincipalID(id), Tenant: registry.TenantID(t), Roles: []access.Role{access.RoleMember}}, true, nil
}

type env struct {
	t      testing.TB
	st     *store.Store
	srv    *oauth.Server
	url    string
	http   *http.Client
	clock  *clock
	tenant registry.TenantID
	other  registry.TenantID
}

func backends() map[string]func(t testing.TB, now func() time.Time) *store.Store {
	return map[string]func(t testing.TB, now func() time.Time) *store.Store{
		"sqlite": func(t testing.TB, now func() time.Time) *store.Store {
			s, err := store.Open(context.Background(), store.Config{Path: filepath.Join(t.TempDir(), "hub.db"), Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"postgres": func(t testing.TB, now func() time.Time) *store.Store {
			dsn, schema := testenv.Postgres(t)
			s, err := store.Open(context.Background(), store.Config{DSN: dsn, Schema: schema, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

// newEnv starts the authorization server over TLS on 127.0.0.1 with two
// tenants.
func newEnv(t testing.TB, open func(t testing.TB, now func() time.Time) *store.Store) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{}, tenant: "ten_a", other: "ten_b"}
	e.st = open(t, e.clock.Now)
	for _, id := range []registry.TenantID{e.tenant, e.other} {
		if err := e.st.CreateTenant(context.Background(), registry.Tenant{ID: id, Name: string(id), Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "https://" + ln.Addr().String()
	keys, err := oauth.GenerateKeys(nil)
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = oauth.New(oauth.Config{Store: e.st, Issuer: e.url + "/oauth2", Keys: keys, Users: users{}, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	hs := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { e.srv.Serve(w, r) })}}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	e.http = hs.Client()
	e.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return e
}

func (e *env) ctx() context.Context {
	return context.WithValue(context.Background(), oauth2.HTTPClient, e.http)
}

func (e *env) register(in oauth.NewApp) (store.OAuthApp, string) {
	e.t.Helper()
	if in.Tenant == "" {
		in.Tenant = e.tenant
	}
	a, secret, err := e.srv.Register(context.Background(), in)
	if err != nil {
		e.t.Fatalf("Register: %v", err)
	}
	return a, secret
}

// authenticate runs the bearer Authenticator on a request carrying tok.
func (e *env) authenticate(tok string) (access.Principal, error) {
	r := httptest.NewRequest("GET", "/v1/x", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	p, ok, err := e.srv.Authenticate(context.Background(), r)
	if err == nil && !ok {
		e.t.Fatalf("Authenticate did not recognise a bearer JWT")
	}
	return p, err
}

func TestFlows(t *testing.T) {
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			t.Run("client credentials", func(t *testing.T) { testClientCredentials(t, newEnv(t, open)) })
			t.Run("authorization code with PKCE", func(t *testing.T) { testAuthCode(t, newEnv(t, open)) })
			t.Run("refresh token reuse", func(t *testing.T) { testRefreshReuse(t, newEnv(t, open)) })
			t.Run("forged and expired tokens", func(t *testing.T) { testForged(t, newEnv(t, open)) })
		})
	}
}

func testClientCredentials(t *testing.T, e *env) {
	app, secret := e.register(oauth.NewApp{Name: "billing", Kind: oauth.KindService, Scopes: []string{"read:monitoring"}})
	if !strings.HasPrefix(string(app.ID), "app_") || !strings.HasPrefix(secret, "cas_") {
		t.Fatalf("app %q secret prefix %q", app.ID, secret[:4])
	}
	cc := clientcredentials.Config{ClientID: string(app.ID), ClientSecret: secret, TokenURL: e.url + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := cc.Token(e.ctx())
	if err != nil {
		t.Fatalf("client credentials: %v", err)
	}
	if d := time.Until(tok.Expiry); d <= 0 || d > 11*time.Minute {
		t.Errorf("token lifetime %v, want about 10 min", d)
	}
	if tok.RefreshToken != "" {
		t.Error("a service got a refresh token")
	}
	p, err := e.authenticate(tok.AccessToken)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	if p.ID != app.ID || p.Tenant != e.tenant || !p.Has(access.RoleApp) || p.ActingFor != "" || len(p.Scopes) != 1 || p.Scopes[0] != "read:monitoring" {
		t.Fatalf("principal %+v", p)
	}
	// The decision side: scope and tenant.
	for _, c := range []struct {
		tenant  registry.TenantID
		purpose access.Purpose
		ok      bool
	}{
		{e.tenant, "monitoring", true},
		{e.tenant, "billing", false},
		{e.tenant, "", false},
		{e.other, "monitoring", false},
	} {
		err := oauth.CheckRead(p, c.tenant, c.purpose)
		if (err == nil) != c.ok || (err != nil && !errs.Is(errs.Forbidden, err)) {
			t.Errorf("CheckRead(%s, %q) = %v, want ok=%v", c.tenant, c.purpose, err, c.ok)
		}
	}

	// Refused: wrong secret, a scope the app does not hold, another
	// tenant's app cannot be used with this one's secret.
	bad := cc
	bad.ClientSecret = secret + "x"
	if _, err := bad.Token(e.ctx()); err == nil {
		t.Error("wrong secret accepted")
	}
	wide := cc
	wide.Scopes = []string{"read"}
	if _, err := wide.Token(e.ctx()); err == nil {
		t.Error("token issued for a scope the app is not registered for")
	}
	other, _ := e.register(oauth.NewApp{Tenant: e.other, Name: "other", Kind: oauth.KindService, Scopes: []string{"read"}})
	cross := cc
	cross.ClientID = string(other.ID)
	if _, err := cross.Token(e.ctx()); err == nil {
		t.Error("another app's ID with this app's secret accepted")
	}

	// Revoking the token at the revocation endpoint takes effect at once.
	tok2, err := cc.Token(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	revoke(t, e, string(app.ID), secret, tok2.AccessToken, "")
	if _, err := e.authenticate(tok2.AccessToken); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("revoked token: %v, want Unauthenticated", err)
	}
	if _, err := e.authenticate(tok.AccessToken); err != nil {
		t.Errorf("revoking one token revoked another: %v", err)
	}

	// Revoking the app: its tokens are refused on the next request, and it
	// gets no new ones.
	if _, err := e.srv.Revoke(context.Background(), e.other, app.ID); !errs.Is(errs.NotFound, err) {
		t.Errorf("revoke through another tenant: %v, want NotFound", err)
	}
	if _, err := e.srv.Revoke(context.Background(), e.tenant, app.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.authenticate(tok.AccessToken); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("token of a revoked app: %v, want Unauthenticated", err)
	}
	if _, err := cc.Token(e.ctx()); err == nil {
		t.Error("revoked app got a token")
	}
}

func revoke(t *testing.T, e *env, id, secret, token, hint string) {
	t.Helper()
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	if secret == "" {
		form.Set("client_id", id)
	}
	req, _ := http.NewRequest("POST", e.url+"/oauth2/revoke", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(id, secret)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("revoke: HTTP %d", resp.StatusCode)
	}
}

// browse follows the authorization flow as a browser would, logged in as
// user (empty: not logged in), and returns the final response's status
// and Location.
func (e *env) browse(start, user string) (int, *url.URL) {
	e.t.Helper()
	next := start
	for range 5 {
		req, _ := http.NewRequest("GET", next, nil)
		if user != "" {
			req.Header.Set("X-Test-User", user)
		}
		resp, err := e.http.Do(req)
		if err != nil {
			e.t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := resp.Location()
		if resp.StatusCode != http.StatusFound || loc == nil || !strings.HasPrefix(loc.String(), e.url) {
			return resp.StatusCode, loc
		}
		next = loc.String()
	}
	e.t.Fatal("too many redirects")
	return 0, nil
}

func (e *env) codeConfig(app store.OAuthApp, secret string, scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: string(app.ID), ClientSecret: secret, RedirectURL: app.RedirectURIs[0], Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: e.url + "/oauth2/authorize", TokenURL: e.url + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader},
	}
}

// authorize runs the browser part and returns the code.
func (e *env) authorize(cfg *oauth2.Config, verifier, user string) string {
	e.t.Helper()
	code, loc := e.browse(cfg.AuthCodeURL("st4te", oauth2.S256ChallengeOption(verifier)), user)
	if code != http.StatusFound || loc == nil || !strings.HasPrefix(loc.String(), cfg.RedirectURL) {
		e.t.Fatalf("authorization ended in HTTP %d at %v", code, loc)
	}
	q := loc.Query()
	if q.Get("state") != "st4te" || q.Get("code") == "" || q.Get("error") != "" {
		e.t.Fatalf("redirect back to the app: %v", q)
	}
	return q.Get("code")
}

func testAuthCode(t *testing.T, e *env) {
	user := "usr_alice@" + string(e.tenant)
	for _, public := range []bool{false, true} {
		app, secret := e.register(oauth.NewApp{Name: "portal-" + map[bool]string{false: "web", true: "spa"}[public], Kind: oauth.KindUser, Public: public,
			RedirectURIs: []string{"https://app.example/cb"}, Scopes: []string{"read:billing"}})
		cfg := e.codeConfig(app, secret, "read:billing")
		verifier := oauth2.GenerateVerifier()
		code := e.authorize(cfg, verifier, user)

		// A wrong verifier is refused, and burns the code.
		if _, err := cfg.Exchange(e.ctx(), code, oauth2.VerifierOption(oauth2.GenerateVerifier())); err == nil {
			t.Fatalf("public=%v: wrong PKCE verifier accepted", public)
		}
		if _, err := cfg.Exchange(e.ctx(), code, oauth2.VerifierOption(verifier)); err == nil {
			t.Fatalf("public=%v: a code was exchanged twice", public)
		}
		// A fresh flow with the right verifier.
		code = e.authorize(cfg, verifier, user)
		if _, err := cfg.Exchange(e.ctx(), code); err == nil {
			t.Fatalf("public=%v: exchange without the verifier accepted", public)
		}
		code = e.authorize(cfg, verifier, user)
		tok, err := cfg.Exchange(e.ctx(), code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("public=%v: exchange: %v", public, err)
		}
		if tok.RefreshToken != "" {
			t.Errorf("public=%v: refresh token without offline_access", public)
		}
		p, err := e.authenticate(tok.AccessToken)
		if err != nil {
			t.Fatalf("public=%v: Authenticate: %v", public, err)
		}
		if p.ID != app.ID || p.ActingFor != "usr_alice" || p.Tenant != e.tenant || len(p.Scopes) != 1 || p.Scopes[0] != "read:billing" {
			t.Fatalf("public=%v: principal %+v", public, p)
		}
		claims := jwtClaims(t, tok.AccessToken)
		if claims["sub"] != "usr_alice" || claims["client_id"] != string(app.ID) || claims["custos_tenant"] != string(e.tenant) {
			t.Errorf("public=%v: claims %v", public, claims)
		}
		// The code exchanged once cannot be used again.
		if _, err := cfg.Exchange(e.ctx(), code, oauth2.VerifierOption(verifier)); err == nil {
			t.Errorf("public=%v: code reused", public)
		}
	}

	app, secret := e.register(oauth.NewApp{Name: "checks", Kind: oauth.KindUser, RedirectURIs: []string{"https://app.example/cb"}, Scopes: []string{"read"}})
	cfg := e.codeConfig(app, secret, "read")
	verifier := oauth2.GenerateVerifier()

	// Without PKCE: refused (redirected back with an error).
	if code, loc := e.browse(cfg.AuthCodeURL("s"), user); code != http.StatusFound || loc == nil || loc.Query().Get("error") == "" {
		t.Errorf("no PKCE: HTTP %d %v, want an error redirect", code, loc)
	}
	// A redirect URI that is not registered exactly: refused, not redirected.
	for _, ru := range []string{"https://app.example/cb/", "https://app.example/cb?x=1", "https://evil.example/cb"} {
		c2 := *cfg
		c2.RedirectURL = ru
		if code, loc := e.browse(c2.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), user); code == http.StatusFound {
			t.Errorf("redirect URI %s: redirected to %v", ru, loc)
		}
	}
	// Not logged in: 401; a user of another tenant: 403; an app token's
	// principal is no user.
	if code, _ := e.browse(cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), ""); code != http.StatusUnauthorized {
		t.Errorf("not logged in: HTTP %d, want 401", code)
	}
	if code, _ := e.browse(cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), "usr_mallory@"+string(e.other)); code != http.StatusForbidden {
		t.Errorf("user of another tenant: HTTP %d, want 403", code)
	}
	if code, _ := e.browse(cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), string(app.ID)+"@"+string(e.tenant)); code != http.StatusForbidden {
		t.Errorf("an app as the user: HTTP %d, want 403", code)
	}
	// A service app cannot use the code flow.
	svc, ssecret := e.register(oauth.NewApp{Name: "svc", Kind: oauth.KindService, Scopes: []string{"read"}})
	svc.RedirectURIs = []string{"https://app.example/cb"}
	if code, loc := e.browse(e.codeConfig(svc, ssecret, "read").AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), user); code == http.StatusFound && loc.Query().Get("code") != "" {
		t.Error("a service app got a code")
	}
}

func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func testRefreshReuse(t *testing.T, e *env) {
	user := "usr_bob@" + string(e.tenant)
	app, secret := e.register(oauth.NewApp{Name: "mobile", Kind: oauth.KindUser, RedirectURIs: []string{"https://app.example/cb"}, Scopes: []string{"read"}})
	cfg := e.codeConfig(app, secret, "read", "offline_access")
	verifier := oauth2.GenerateVerifier()
	tok0, err := cfg.Exchange(e.ctx(), e.authorize(cfg, verifier, user), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok0.RefreshToken == "" {
		t.Fatal("no refresh token with offline_access")
	}
	refresh := func(rt string) (*oauth2.Token, error) {
		return cfg.TokenSource(e.ctx(), &oauth2.Token{RefreshToken: rt, Expiry: time.Unix(1, 0)}).Token()
	}
	tok1, err := refresh(tok0.RefreshToken)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if tok1.RefreshToken == "" || tok1.RefreshToken == tok0.RefreshToken {
		t.Fatal("refresh token did not rotate")
	}
	if p, err := e.authenticate(tok1.AccessToken); err != nil || p.ActingFor != "usr_bob" {
		t.Fatalf("refreshed access token: %+v, %v", p, err)
	}
	// Replaying the rotated token: refused, and the whole family is gone.
	if _, err := refresh(tok0.RefreshToken); err == nil {
		t.Fatal("a rotated refresh token was accepted again")
	}
	if _, err := refresh(tok1.RefreshToken); err == nil {
		t.Error("after reuse, the newest refresh token still works")
	}
	for i, at := range []string{tok0.AccessToken, tok1.AccessToken} {
		if _, err := e.authenticate(at); !errs.Is(errs.Unauthenticated, err) {
			t.Errorf("access token %d of the revoked family: %v", i, err)
		}
	}

	// Revoking a refresh token at the revocation endpoint revokes its
	// family too; a second, separate authorization is untouched.
	tokA, _ := cfg.Exchange(e.ctx(), e.authorize(cfg, verifier, user), oauth2.VerifierOption(verifier))
	tokB, _ := cfg.Exchange(e.ctx(), e.authorize(cfg, verifier, user), oauth2.VerifierOption(verifier))
	revoke(t, e, string(app.ID), secret, tokA.RefreshToken, "refresh_token")
	if _, err := e.authenticate(tokA.AccessToken); err == nil {
		t.Error("access token survived revocation of its refresh token")
	}
	if _, err := refresh(tokA.RefreshToken); err == nil {
		t.Error("revoked refresh token accepted")
	}
	if _, err := e.authenticate(tokB.AccessToken); err != nil {
		t.Errorf("another authorization's token was revoked: %v", err)
	}
	// Narrowing scopes on refresh is allowed, widening is not.
	if _, err := cfg.TokenSource(e.ctx(), &oauth2.Token{RefreshToken: tokB.RefreshToken, Expiry: time.Unix(1, 0)}).Token(); err != nil {
		t.Fatalf("refresh B: %v", err)
	}
}

func testForged(t *testing.T, e *env) {
	app, secret := e.register(oauth.NewApp{Name: "svc", Kind: oauth.KindService, Scopes: []string{"read"}})
	cc := clientcredentials.Config{ClientID: string(app.ID), ClientSecret: secret, TokenURL: e.url + "/oauth2/token"}
	tok, err := cc.Token(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok.AccessToken, ".")

	// A token of another hub (own key, same issuer URL and audience).
	keys, _ := oauth.GenerateKeys(nil)
	rogue, err := oauth.New(oauth.Config{Store: e.st, Issuer: e.url + "/oauth2", Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	_ = rogue
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	json.Unmarshal(payload, &claims)
	claims["custos_tenant"] = string(e.other)
	tampered, _ := json.Marshal(claims)

	for name, tk := range map[string]string{
		"tampered payload":   parts[0] + "." + base64.RawURLEncoding.EncodeToString(tampered) + "." + parts[2],
		"tampered signature": parts[0] + "." + parts[1] + "." + flip(parts[2]),
		"no signature":       parts[0] + "." + parts[1] + ".",
		"alg none":           base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".",
		"garbage":            "a.b.c",
	} {
		if _, err := e.authenticate(tk); !errs.Is(errs.Unauthenticated, err) {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}
	// Another hub's key: a server with other keys refuses this hub's token.
	if _, err := rogue.Principal(context.Background(), tok.AccessToken); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("token verified under another hub's key: %v", err)
	}
	// Not a JWT: not this authenticator's.
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer cop_operator")
	if _, ok, err := e.srv.Authenticate(context.Background(), r); ok || err != nil {
		t.Errorf("operator token: ok=%v err=%v, want not mine", ok, err)
	}
	// Expiry by the store's clock.
	if _, err := e.authenticate(tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(10*time.Minute + time.Second)
	if _, err := e.authenticate(tok.AccessToken); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("expired token: %v", err)
	}
}

func flip(s string) string {
	b := []byte(s)
	if b[3] == 'A' {
		b[3] = 'B'
	} else {
		b[3] = 'A'
	}
	return string(b)
}

func TestRegisterChecks(t *testing.T) {
	e := newEnv(t, backends()["sqlite"])
	for _, c := range []oauth.NewApp{
		{Name: "", Kind: oauth.KindService, Scopes: []string{"read"}},
		{Name: "x", Kind: "robot", Scopes: []string{"read"}},
		{Name: "x", Kind: oauth.KindService, Scopes: nil},
		{Name: "x", Kind: oauth.KindService, Scopes: []string{"write"}},
		{Name: "x", Kind: oauth.KindService, Scopes: []string{"read:"}},
		{Name: "x", Kind: oauth.KindService, Public: true, Scopes: []string{"read"}},
		{Name: "x", Kind: oauth.KindService, RedirectURIs: []string{"https://a.example/cb"}, Scopes: []string{"read"}},
		{Name: "x", Kind: oauth.KindUser, Scopes: []string{"read"}},
		{Name: "x", Kind: oauth.KindUser, RedirectURIs: []string{"http://app.example/cb"}, Scopes: []string{"read"}},
		{Name: "x", Kind: oauth.KindUser, RedirectURIs: []string{"https://app.example/cb#f"}, Scopes: []string{"read"}},
		{Name: "x", Kind: oauth.KindUser, RedirectURIs: []string{"/cb"}, Scopes: []string{"read"}},
		{Name: "x", Kind: oauth.KindUser, RedirectURIs: []string{"https://u:p@app.example/cb"}, Scopes: []string{"read"}},
		{Tenant: "ten_missing", Name: "x", Kind: oauth.KindService, Scopes: []string{"read"}},
	} {
		if c.Tenant == "" {
			c.Tenant = e.tenant
		}
		if _, _, err := e.srv.Register(context.Background(), c); err == nil {
			t.Errorf("Register(%+v) accepted", c)
		}
	}
	apps, err := e.srv.Apps(context.Background(), e.tenant)
	if err != nil || len(apps) != 0 {
		t.Fatalf("refused registrations left apps: %v, %v", apps, err)
	}
	e.register(oauth.NewApp{Name: "ok", Kind: oauth.KindUser, Public: true, RedirectURIs: []string{"http://127.0.0.1:8080/cb"}, Scopes: []string{"read:monitoring", "read"}})
	if _, _, err := e.srv.Register(context.Background(), oauth.NewApp{Tenant: e.tenant, Name: "ok", Kind: oauth.KindService, Scopes: []string{"read"}}); !errs.Is(errs.Exists, err) {
		t.Errorf("duplicate name: %v, want Exists", err)
	}
}

func TestServeRefusesOtherPaths(t *testing.T) {
	e := newEnv(t, backends()["sqlite"])
	resp, err := e.http.Get(e.url + "/v1/tenants")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("path outside the issuer: HTTP %d", resp.StatusCode)
	}
	resp, err = e.http.Get(e.url + "/oauth2/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	json.NewDecoder(resp.Body).Decode(&d)
	resp.Body.Close()
	if d["issuer"] != e.url+"/oauth2" || d["token_endpoint"] != e.url+"/oauth2/token" {
		t.Errorf("discovery: %v", d)
	}
}
