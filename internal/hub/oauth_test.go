package hub_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
	"github.com/custos-iot/custos/internal/identity"
	"github.com/custos-iot/custos/internal/oauth"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/store"
)

// sessionUsers stands in for the web session authenticator (which the
// identity package provides): the cookie "custos_test_user" names a user
// of a tenant as "usr_x@ten_y". What is real in this test: the hub, its
// HTTPS listener, op's endpoints, the store, the audit log, the token
// checks; only the login is this stand-in.
type sessionUsers struct{}

func (sessionUsers) Authenticate(_ context.Context, r *http.Request) (access.Principal, bool, error) {
	c, err := r.Cookie("custos_test_user")
	if err != nil {
		return access.Principal{}, false, nil
	}
	id, t, _ := strings.Cut(c.Value, "@")
	return access.Principal{ID: access.PrincipalID(id), Tenant: registry.TenantID(t), Roles: []access.Role{access.RoleMember}}, true, nil
}

func TestOAuthAppsThroughTheHub(t *testing.T) {
	h, c := hubtest.Start(t, hub.Config{Names: []string{"127.0.0.1", "localhost"}, OAuthUsers: sessionUsers{}})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "coop")
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	octx := context.WithValue(ctx, oauth2.HTTPClient, hc)
	base := h.APIURL() + api.OAuthPrefix

	lastEntry := func() audit.Entry {
		t.Helper()
		n := h.Audit.Size()
		es, err := h.Audit.Entries(ctx, n-1, n)
		if err != nil || len(es) != 1 {
			t.Fatalf("audit entries: %v", err)
		}
		return es[0]
	}

	// Register a service through the operator API; the secret is shown once.
	var created struct {
		App          store.OAuthApp `json:"app"`
		ClientSecret string         `json:"client_secret"`
	}
	if err := c.Do(ctx, "POST", "/v1/tenants/"+string(ten.ID)+"/apps", oauth.NewApp{Name: "dashboard", Kind: oauth.KindService, Scopes: []string{"read:monitoring"}}, &created); err != nil {
		t.Fatal(err)
	}
	var listed []map[string]any
	if err := c.Do(ctx, "GET", "/v1/tenants/"+string(ten.ID)+"/apps", nil, &listed); err != nil || len(listed) != 1 {
		t.Fatalf("list apps: %v %v", listed, err)
	}
	if _, ok := listed[0]["client_secret"]; ok {
		t.Error("the app list shows a secret")
	}

	// Client credentials against the hub's token endpoint; success and
	// failure are both audited.
	cc := clientcredentials.Config{ClientID: string(created.App.ID), ClientSecret: created.ClientSecret, TokenURL: base + "/token"}
	tok, err := cc.Token(octx)
	if err != nil {
		t.Fatalf("client credentials: %v", err)
	}
	if e := lastEntry(); e.Action != "POST /oauth2/token" || e.Outcome != audit.Allowed || e.Principal != audit.PrincipalID(created.App.ID) {
		t.Errorf("token audit entry: %+v", e)
	}
	bad := cc
	bad.ClientSecret = "cas_wrong"
	if _, err := bad.Token(octx); err == nil {
		t.Error("wrong secret accepted")
	}
	if e := lastEntry(); e.Action != "POST /oauth2/token" || e.Outcome != audit.Denied || e.Principal != "anonymous" {
		t.Errorf("refused token audit entry: %+v", e)
	}
	r, _ := http.NewRequest("GET", h.APIURL()+"/v1/x", nil)
	r.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	p, ok, err := h.OAuth.Authenticate(ctx, r)
	if err != nil || !ok || p.ID != created.App.ID || p.Tenant != ten.ID {
		t.Fatalf("Authenticate: %+v %v %v", p, ok, err)
	}

	// Authorization code + PKCE for a user of the tenant.
	created.ClientSecret = ""
	if err := c.Do(ctx, "POST", "/v1/tenants/"+string(ten.ID)+"/apps", oauth.NewApp{Name: "household app", Kind: oauth.KindUser, Public: true, RedirectURIs: []string{"https://app.example/cb"}, Scopes: []string{"read"}}, &created); err != nil {
		t.Fatal(err)
	}
	if created.ClientSecret != "" {
		t.Error("a public app got a secret")
	}
	cfg := &oauth2.Config{ClientID: string(created.App.ID), RedirectURL: "https://app.example/cb", Scopes: []string{"read", "offline_access"},
		Endpoint: oauth2.Endpoint{AuthURL: base + "/authorize", TokenURL: base + "/token", AuthStyle: oauth2.AuthStyleInParams}}
	verifier := oauth2.GenerateVerifier()
	code := authorizeCode(t, hc, cfg, cfg.AuthCodeURL("xyz", oauth2.S256ChallengeOption(verifier)),
		&http.Cookie{Name: "custos_test_user", Value: "usr_alice@" + string(ten.ID)})
	if e := lastEntry(); e.Action != "GET /oauth2/authorize/callback" || e.Outcome != audit.Allowed {
		t.Errorf("callback audit entry: %+v", e)
	}
	utok, err := cfg.Exchange(octx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	r.Header.Set("Authorization", "Bearer "+utok.AccessToken)
	if p, _, err := h.OAuth.Authenticate(ctx, r); err != nil || p.ID != created.App.ID || p.ActingFor != "usr_alice" {
		t.Fatalf("user token: %+v %v", p, err)
	}
	// Revoke the app through the API: its tokens fail on the next request.
	if err := c.Do(ctx, "POST", "/v1/tenants/"+string(ten.ID)+"/apps/"+string(created.App.ID)+"/revoke", map[string]string{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.OAuth.Authenticate(ctx, r); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("token of a revoked app: %v", err)
	}
	if _, err := cfg.TokenSource(octx, &oauth2.Token{RefreshToken: utok.RefreshToken, Expiry: time.Unix(1, 0)}).Token(); err == nil {
		t.Error("refresh token of a revoked app accepted")
	}
	// Discovery is public and names the hub's endpoints.
	resp, err := hc.Get(base + "/.well-known/openid-configuration")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("discovery: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestAppsReadThroughGrants: an app's token reads data only within its
// scopes and its grants; an app acting for a member (who logged in to the
// hub for real, with a password) reads what that member may read — their
// own data — and nothing of a neighbour's.
func TestAppsReadThroughGrants(t *testing.T) {
	h, c := hubtest.Start(t, hub.Config{Names: []string{"127.0.0.1", "localhost"}})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "App Coop")
	if err != nil {
		t.Fatal(err)
	}
	mine, err := c.AddHousehold(ctx, ten.ID, "house-m", "Member M")
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := c.AddHousehold(ctx, ten.ID, "house-n", "Member N")
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	octx := context.WithValue(ctx, oauth2.HTTPClient, hc)
	base := h.APIURL() + api.OAuthPrefix

	// A service app with scope read:monitoring.
	var svc struct {
		App          store.OAuthApp `json:"app"`
		ClientSecret string         `json:"client_secret"`
	}
	if err := c.Do(ctx, "POST", "/v1/tenants/"+string(ten.ID)+"/apps", oauth.NewApp{Name: "dashboard", Kind: oauth.KindService, Scopes: []string{"read:monitoring"}}, &svc); err != nil {
		t.Fatal(err)
	}
	cc := clientcredentials.Config{ClientID: string(svc.App.ID), ClientSecret: svc.ClientSecret, TokenURL: base + "/token", Scopes: []string{"read:monitoring"}}
	tok, err := cc.Token(octx)
	if err != nil {
		t.Fatal(err)
	}
	app := c.WithToken(tok.AccessToken)
	s := mine.Streams[0].ID
	declarePurposes(t, c, ten.ID, "monitoring", "billing")
	wantReads(t, "service app without grant", app, ten.ID, s, "")
	if _, err := c.Grant(ctx, ten.ID, api.GrantIn{Principal: string(svc.App.ID), Resource: "site:" + string(mine.Site.ID), Finest: "1d", Purposes: []string{"monitoring", "billing"}}); err != nil {
		t.Fatal(err)
	}
	wantReads(t, "service app with a daily grant", app, ten.ID, s, "1d", "1d", "1mo")
	app.Purpose = "billing" // granted, but not in the token's scopes
	if st, msg := readAt(t, app, ten.ID, s, "1mo"); st != 403 || !strings.Contains(msg, "no scope") {
		t.Errorf("service app outside its scopes: %d %q, want 403 naming the scope", st, msg)
	}

	// A member logs in with a password; a user app acts for them.
	const pw = "quiet harbour seven kites"
	if err := c.Do(ctx, "POST", "/v1/tenants/"+string(ten.ID)+"/users", identity.NewUser{Name: "mia", Password: pw,
		Roles: []access.Role{access.RoleMember}, MemberOf: mine.Subject.ID}, nil); err != nil {
		t.Fatal(err)
	}
	body := `{"tenant":"` + string(ten.ID) + `","name":"mia","password":"` + pw + `"}`
	resp, err := hc.Post(h.APIURL()+"/v1/login", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == identity.CookieName {
			session = ck
		}
	}
	if session == nil {
		t.Fatalf("login: HTTP %d, no session", resp.StatusCode)
	}
	var ua struct {
		App store.OAuthApp `json:"app"`
	}
	if err := c.Do(ctx, "POST", "/v1/tenants/"+string(ten.ID)+"/apps", oauth.NewApp{Name: "household app", Kind: oauth.KindUser, Public: true,
		RedirectURIs: []string{"https://app.example/cb"}, Scopes: []string{"read"}}, &ua); err != nil {
		t.Fatal(err)
	}
	cfg := &oauth2.Config{ClientID: string(ua.App.ID), RedirectURL: "https://app.example/cb", Scopes: []string{"read"},
		Endpoint: oauth2.Endpoint{AuthURL: base + "/authorize", TokenURL: base + "/token", AuthStyle: oauth2.AuthStyleInParams}}
	verifier := oauth2.GenerateVerifier()
	code := authorizeCode(t, hc, cfg, cfg.AuthCodeURL("st8", oauth2.S256ChallengeOption(verifier)),
		&http.Cookie{Name: session.Name, Value: session.Value})
	utok, err := cfg.Exchange(octx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	forMia := c.WithToken(utok.AccessToken)
	wantReads(t, "app acting for the member, own data", forMia, ten.ID, s, "", resolutions...)
	wantReads(t, "app acting for the member, neighbour's data", forMia, ten.ID, theirs.Streams[0].ID, "")
}

// authorizeCode follows the authorization endpoint's redirects from next,
// as a browser holding the login cookie would, until it reaches the app's
// redirect URI, and returns the code there.
func authorizeCode(t *testing.T, hc *http.Client, cfg *oauth2.Config, next string, login *http.Cookie) string {
	t.Helper()
	for range 5 {
		req, _ := http.NewRequest("GET", next, nil)
		req.AddCookie(login)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("authorization step %s: HTTP %d", req.URL.Path, resp.StatusCode)
		}
		if strings.HasPrefix(loc.String(), cfg.RedirectURL) {
			if code := loc.Query().Get("code"); code != "" {
				return code
			}
			break
		}
		next = loc.String()
	}
	t.Fatal("no code")
	return ""
}
