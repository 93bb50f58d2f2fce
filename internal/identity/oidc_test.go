package identity_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/identity"
)

const redirectURL = "http://127.0.0.1:1/v1/oidc/callback"

// idp is a real OpenID Connect provider (zitadel/oidc's provider side with
// its example storage and login page) on 127.0.0.1.
type idp struct {
	issuer string
	srv    *httptest.Server
}

func startIdP(t *testing.T) *idp {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String()
	users := storage.NewUserStore(issuer)
	st := storage.NewStorageWithClients(users, map[string]*storage.Client{
		"custos": storage.WebClient("custos", "custos-secret", redirectURL),
	})
	srv.Config.Handler = exampleop.SetupServer(issuer, st, nil, false)
	srv.Start()
	t.Cleanup(srv.Close)
	return &idp{issuer: issuer, srv: srv}
}

// interceptor sits between Custos and the provider: it can rewrite the ID
// token in the token response and add a test key to the provider's JWKS.
type interceptor struct {
	mu      sync.Mutex
	rewrite func(t *testing.T, raw string) string
	testKey *rsa.PrivateKey
	t       *testing.T
}

func (ic *interceptor) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	ic.mu.Lock()
	rewrite, key := ic.rewrite, ic.testKey
	ic.mu.Unlock()
	switch {
	case strings.HasSuffix(r.URL.Path, "/oauth/token") && rewrite != nil:
		var body map[string]any
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &body); err != nil {
			ic.t.Errorf("token response: %v", err)
			break
		}
		body["id_token"] = rewrite(ic.t, body["id_token"].(string))
		b, _ = json.Marshal(body)
		resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		resp.Header.Del("Content-Length")
	case strings.HasSuffix(r.URL.Path, "/keys") && key != nil:
		var set jose.JSONWebKeySet
		b, _ := io.ReadAll(resp.Body)
		json.Unmarshal(b, &set)
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &key.PublicKey, KeyID: "test-key", Algorithm: "RS256", Use: "sig"})
		b, _ = json.Marshal(set)
		resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		resp.Header.Del("Content-Length")
	}
	return resp, nil
}

// resign returns a rewrite that changes the ID token's claims and signs it
// with the test key (which the interceptor serves in the provider's JWKS):
// only the changed claim can make verification fail.
func (ic *interceptor) resign(change func(claims map[string]any)) func(*testing.T, string) string {
	return func(t *testing.T, raw string) string {
		jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
		if err != nil {
			t.Fatalf("parse ID token: %v", err)
		}
		var claims map[string]any
		json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims)
		change(claims)
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: ic.testKey}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "test-key"))
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(claims)
		out, err := signer.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := out.CompactSerialize()
		return s
	}
}

type oidcEnv struct {
	*env
	idp      *idp
	ic       *interceptor
	provider identity.Provider
}

func newOIDCEnv(t *testing.T, autoCreate bool) *oidcEnv {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ic := &interceptor{testKey: key, t: t}
	e := newEnv(t, func(c *identity.Config) {
		c.HTTPClient = &http.Client{Transport: ic, Timeout: 30 * time.Second}
		c.Now = time.Now // the provider issues tokens on the real clock
	})
	p := startIdP(t)
	prov, err := e.svc.AddProvider(context.Background(), tenant, identity.NewProvider{
		Issuer: p.issuer, ClientID: "custos", ClientSecret: "custos-secret", RedirectURL: redirectURL,
		AutoCreate: autoCreate, DefaultRoles: []access.Role{access.RoleAnalyst},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &oidcEnv{env: e, idp: p, ic: ic, provider: prov}
}

// browse plays the browser: it starts the flow, logs in at the provider's
// login page and returns the callback request (with the flow cookie) that
// the provider redirected to.
func (o *oidcEnv) browse(t *testing.T) *http.Request {
	t.Helper()
	ctx := context.Background()
	authURL, state, err := o.svc.BeginOIDC(ctx, tenant, o.provider.ID)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(authURL)
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") != state {
		t.Fatalf("authorization URL lacks PKCE, nonce or state: %s", authURL)
	}
	jar, _ := cookiejar.New(nil)
	var callback *url.URL
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(r.URL.String(), redirectURL) {
			callback = r.URL
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := browser.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Request.URL.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("provider did not show its login page: %s", resp.Request.URL)
	}
	host := strings.TrimPrefix(o.idp.issuer, "http://")
	resp, err = browser.PostForm(o.idp.issuer+"/login/username", url.Values{"id": {id}, "username": {"test-user@" + strings.Split(host, ":")[0]}, "password": {"verysecure"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if callback == nil {
		t.Fatalf("provider did not redirect to the callback (status %d)", resp.StatusCode)
	}
	r := httptest.NewRequest("GET", callback.String(), nil)
	r.AddCookie(&http.Cookie{Name: identity.FlowCookieName, Value: state})
	return r
}

func (o *oidcEnv) complete(r *http.Request) (identity.User, string, error) {
	u, tok, _, err := o.svc.CompleteOIDC(context.Background(), tenant, o.provider.ID, r)
	return u, tok, err
}

func TestOIDCLogin(t *testing.T) {
	o := newOIDCEnv(t, true)
	ctx := context.Background()
	u, tok, err := o.complete(o.browse(t))
	if err != nil {
		t.Fatalf("OIDC login: %v", err)
	}
	if u.Issuer != o.idp.issuer || u.ExternalID != "id1" || !strings.HasPrefix(u.Name, "oidc.") || len(u.Roles) != 1 || u.Roles[0] != access.RoleAnalyst || u.HasPassword {
		t.Errorf("just-in-time user = %+v", u)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: identity.CookieName, Value: tok})
	if p, ok, err := o.svc.Authenticate(ctx, r); err != nil || !ok || p.ID != u.ID || p.Tenant != tenant {
		t.Errorf("session after OIDC login: %+v, %v, %v", p, ok, err)
	}
	// The second login finds the same user.
	u2, _, err := o.complete(o.browse(t))
	if err != nil || u2.ID != u.ID {
		t.Errorf("second login: %+v, %v", u2, err)
	}
	// A state is used once.
	cb := o.browse(t)
	if _, _, err := o.complete(cb); err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.complete(cb); !errs.Is(errs.Unauthenticated, err) || !strings.Contains(err.Error(), "state") {
		t.Errorf("replayed callback: %v", err)
	}
	// The state must come back in this browser's flow cookie.
	cb = o.browse(t)
	forged := httptest.NewRequest("GET", cb.URL.String(), nil)
	forged.AddCookie(&http.Cookie{Name: identity.FlowCookieName, Value: "someone-elses-state"})
	if _, _, err := o.complete(forged); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("callback without the flow cookie: %v", err)
	}
	// A disabled user cannot log in through the provider either.
	if _, err := o.svc.Disable(ctx, tenant, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.complete(o.browse(t)); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("disabled user: %v", err)
	}
}

func TestOIDCPreProvisioned(t *testing.T) {
	o := newOIDCEnv(t, false)
	if _, _, err := o.complete(o.browse(t)); !errs.Is(errs.Unauthenticated, err) {
		t.Fatalf("unknown account without AutoCreate: %v", err)
	}
	pre, err := o.svc.AddUser(context.Background(), tenant, identity.NewUser{Name: "test-user", Issuer: o.idp.issuer, ExternalID: "id1", Roles: []access.Role{access.RoleAuditor}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if u, _, err := o.complete(o.browse(t)); err != nil || u.ID != pre.ID {
		t.Errorf("pre-provisioned user: %+v, %v", u, err)
	}
}

// TestOIDCRefusesBadIDTokens: the ID token is changed between the provider
// and Custos; each change alone must make the login fail.
func TestOIDCRefusesBadIDTokens(t *testing.T) {
	o := newOIDCEnv(t, true)
	for _, tc := range []struct {
		name    string
		rewrite func(*testing.T, string) string
		reason  string // "" for success
	}{
		{"control: re-signed with the test key, unchanged", o.ic.resign(func(map[string]any) {}), ""},
		{"tampered payload", func(t *testing.T, raw string) string {
			p := strings.Split(raw, ".")
			var claims map[string]any
			b, _ := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
			json.Unmarshal(b.UnsafePayloadWithoutVerification(), &claims)
			claims["sub"] = "admin"
			nb, _ := json.Marshal(claims)
			p[1] = strings.TrimRight(b64url(nb), "=")
			return strings.Join(p, ".")
		}, "signature"},
		{"tampered signature", func(t *testing.T, raw string) string {
			p := strings.Split(raw, ".")
			sig, err := base64URL.DecodeString(p[2])
			if err != nil {
				t.Fatal(err)
			}
			sig[10] ^= 1
			p[2] = b64url(sig)
			return strings.Join(p, ".")
		}, "signature"},
		{"wrong audience", o.ic.resign(func(c map[string]any) { c["aud"] = []string{"another-client"} }), "audience"},
		{"expired", o.ic.resign(func(c map[string]any) {
			c["iat"] = time.Now().Add(-2 * time.Hour).Unix()
			c["exp"] = time.Now().Add(-time.Hour).Unix()
		}), "expired"},
		{"wrong issuer", o.ic.resign(func(c map[string]any) { c["iss"] = "https://evil.example" }), "issuer"},
		{"wrong nonce", o.ic.resign(func(c map[string]any) { c["nonce"] = "replayed" }), "nonce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o.ic.mu.Lock()
			o.ic.rewrite = tc.rewrite
			o.ic.mu.Unlock()
			defer func() { o.ic.mu.Lock(); o.ic.rewrite = nil; o.ic.mu.Unlock() }()
			_, _, err := o.complete(o.browse(t))
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("control login failed, so the negative cases prove nothing: %v", err)
				}
				return
			}
			if !errs.Is(errs.Unauthenticated, err) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("got %v (%v), want a refusal naming %q", err, errors.Unwrap(errors.Unwrap(err)), tc.reason)
			}
		})
	}
}

func b64url(b []byte) string {
	return strings.TrimRight(base64URL.EncodeToString(b), "=")
}

var base64URL = base64.RawURLEncoding
