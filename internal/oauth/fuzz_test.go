package oauth_test

import (
	"context"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/custos-iot/custos/internal/oauth"
)

// FuzzCheckRedirectURI: an accepted redirect URI is absolute https (or
// http on loopback), without fragment or user information.
func FuzzCheckRedirectURI(f *testing.F) {
	for _, s := range []string{"https://app.example/cb", "http://127.0.0.1:8080/cb", "http://[::1]/x", "http://evil.example/cb",
		"https://a.example/cb#frag", "https://u:p@a.example/", "/relative", "custom:callback", "https://a.example/cb?x=1", "https:///nohost", "HTTPS://A.EXAMPLE/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if oauth.CheckRedirectURI(s) != nil {
			return
		}
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || u.Fragment != "" || strings.Contains(s, "#") || u.User != nil {
			t.Fatalf("accepted %q", s)
		}
		if u.Scheme != "https" && u.Scheme != "http" {
			t.Fatalf("accepted scheme of %q", s)
		}
	})
}

// FuzzCheckScope: an accepted scope is "read" or "read:<purpose>" with a
// safe purpose.
func FuzzCheckScope(f *testing.F) {
	for _, s := range []string{"read", "read:monitoring", "read:", "write", "read:Billing", "read:a b", "read:x\x00", "read:" + strings.Repeat("a", 70)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if oauth.CheckScope(s) != nil {
			return
		}
		if s != "read" && (!strings.HasPrefix(s, "read:") || len(s) > 5+64 || strings.ContainsAny(s, " \t\n\x00\"") || strings.ToLower(s) != s) {
			t.Fatalf("accepted %q", s)
		}
	})
}

// BenchmarkAuthenticate: the per-request cost of an app's bearer token
// (JWT verification plus one store lookup) on SQLite.
func BenchmarkAuthenticate(b *testing.B) {
	e := newEnv(b, backends()["sqlite"])
	app, secret, err := e.srv.Register(context.Background(), oauth.NewApp{Tenant: e.tenant, Name: "svc", Kind: oauth.KindService, Scopes: []string{"read"}})
	if err != nil {
		b.Fatal(err)
	}
	cc := clientcredentials.Config{ClientID: string(app.ID), ClientSecret: secret, TokenURL: e.url + "/oauth2/token"}
	tok, err := cc.Token(e.ctx())
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/v1/x", nil)
	r.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := e.srv.Authenticate(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}
