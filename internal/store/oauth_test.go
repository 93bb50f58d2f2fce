package store_test

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/store"
)

func TestOAuth(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000).UTC()
	clock := func() time.Time { return now }
	for name, open := range backends(t, clock) {
		t.Run(name, func(t *testing.T) { testOAuth(t, open(t), &now) })
	}
}

func testOAuth(t *testing.T, s *store.Store, now *time.Time) {
	ctx := context.Background()
	a := seed(t, s, "a")
	b := seed(t, s, "b")
	app := store.OAuthApp{ID: "app_1", Tenant: a.tenant.ID, Name: "portal", Kind: "user", Public: true, RedirectURIs: []string{"https://x.example/cb"}, Scopes: []string{"read", "read:billing"}, Created: *now}
	if err := s.CreateOAuthApp(ctx, app, nil); err != nil {
		t.Fatal(err)
	}
	dup := app
	dup.ID = "app_2"
	if err := s.CreateOAuthApp(ctx, dup, nil); !errs.Is(errs.Exists, err) {
		t.Errorf("duplicate app name: %v, want Exists", err)
	}
	dup.Tenant = b.tenant.ID
	if err := s.CreateOAuthApp(ctx, dup, []byte("h")); err != nil {
		t.Errorf("same name in another tenant: %v", err)
	}
	got, hash, err := s.OAuthApp(ctx, app.ID)
	if err != nil || !got.Public || len(got.RedirectURIs) != 1 || len(got.Scopes) != 2 || len(hash) != 0 {
		t.Fatalf("OAuthApp = %+v %x, %v", got, hash, err)
	}
	if apps, err := s.OAuthApps(ctx, a.tenant.ID); err != nil || len(apps) != 1 {
		t.Fatalf("OAuthApps(a) = %v, %v", apps, err)
	}

	// Authorization request: complete once, one code, claimed once.
	req := store.OAuthAuthRequest{ID: "oar_1", App: app.ID, Params: []byte(`{}`), Created: *now, Expires: now.Add(10 * time.Minute)}
	if err := s.CreateOAuthAuthRequest(ctx, req); err != nil {
		t.Fatal(err)
	}
	code := sha256.Sum256([]byte("code"))
	if err := s.SaveOAuthCode(ctx, req.ID, code); !errs.Is(errs.NotFound, err) {
		t.Errorf("code before login: %v, want NotFound", err)
	}
	if err := s.CompleteOAuthAuthRequest(ctx, req.ID, "usr_a", *now); err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteOAuthAuthRequest(ctx, req.ID, "usr_b", *now); !errs.Is(errs.NotFound, err) {
		t.Errorf("second login: %v, want NotFound", err)
	}
	if err := s.SaveOAuthCode(ctx, req.ID, code); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OAuthAuthRequestByID(ctx, req.ID); !errs.Is(errs.NotFound, err) {
		t.Errorf("request after its code was issued: %v, want NotFound", err)
	}
	r, err := s.ClaimOAuthCode(ctx, code)
	if err != nil || r.User != "usr_a" {
		t.Fatalf("ClaimOAuthCode = %+v, %v", r, err)
	}
	if _, err := s.ClaimOAuthCode(ctx, code); !errs.Is(errs.Unauthenticated, err) {
		t.Errorf("second claim: %v, want Unauthenticated", err)
	}

	// A family: rotation once; a second rotation of the same token is a
	// conflict; revoking the family revokes its access tokens.
	f := store.OAuthFamily{ID: "otf_1", App: app.ID, Tenant: a.tenant.ID, User: "usr_a", Scopes: []string{"read"}, AuthTime: *now, Created: *now}
	rt0 := store.OAuthRefreshToken{ID: "ort_0", Family: f.ID, Scopes: f.Scopes, Created: *now, Expires: now.Add(time.Hour)}
	at0 := store.OAuthAccessToken{ID: "oat_0", App: app.ID, Tenant: a.tenant.ID, User: "usr_a", Family: f.ID, Scopes: f.Scopes, Created: *now, Expires: now.Add(10 * time.Minute)}
	h0, h1, h2 := sha256.Sum256([]byte("rt0")), sha256.Sum256([]byte("rt1")), sha256.Sum256([]byte("rt2"))
	if err := s.CreateOAuthFamily(ctx, f, rt0, h0, at0); err != nil {
		t.Fatal(err)
	}
	rt1, at1 := rt0, at0
	rt1.ID, at1.ID = "ort_1", "oat_1"
	if err := s.RotateOAuthRefreshToken(ctx, h0, rt1, h1, at1); err != nil {
		t.Fatal(err)
	}
	rt2, at2 := rt0, at0
	rt2.ID, at2.ID = "ort_2", "oat_2"
	if err := s.RotateOAuthRefreshToken(ctx, h0, rt2, h2, at2); !errs.Is(errs.Conflict, err) {
		t.Fatalf("second rotation of one token: %v, want Conflict", err)
	}
	if _, err := s.OAuthAccessTokenByID(ctx, "oat_2"); !errs.Is(errs.NotFound, err) {
		t.Errorf("a refused rotation stored its access token: %v", err)
	}
	used, _, err := s.OAuthRefreshTokenByHash(ctx, h0)
	if err != nil || used.Used.IsZero() {
		t.Fatalf("rotated token: %+v, %v", used, err)
	}
	if err := s.RevokeOAuthFamily(ctx, f.ID, "refresh token reused"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"oat_0", "oat_1"} {
		if tok, err := s.OAuthAccessTokenByID(ctx, id); err != nil || tok.Revoked.IsZero() {
			t.Errorf("%s after family revocation: %+v, %v", id, tok, err)
		}
	}
	if _, fam, err := s.OAuthRefreshTokenByHash(ctx, h1); err != nil || fam.Revoked.IsZero() {
		t.Errorf("family of rt1: %+v, %v", fam, err)
	}

	// Revoking the app through another tenant: not found; through its own:
	// every token of the app is revoked.
	svc := store.OAuthApp{ID: "app_3", Tenant: a.tenant.ID, Name: "svc", Kind: "service", Scopes: []string{"read"}, Created: *now}
	if err := s.CreateOAuthApp(ctx, svc, []byte("hash")); err != nil {
		t.Fatal(err)
	}
	at3 := store.OAuthAccessToken{ID: "oat_3", App: svc.ID, Tenant: a.tenant.ID, Scopes: []string{"read"}, Created: *now, Expires: now.Add(time.Minute)}
	if err := s.CreateOAuthAccessToken(ctx, at3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeOAuthApp(ctx, b.tenant.ID, svc.ID); !errs.Is(errs.NotFound, err) {
		t.Errorf("revoke through another tenant: %v, want NotFound", err)
	}
	if tok, _ := s.OAuthAccessTokenByID(ctx, "oat_3"); !tok.Revoked.IsZero() {
		t.Error("token revoked by another tenant's request")
	}
	if _, err := s.RevokeOAuthApp(ctx, a.tenant.ID, svc.ID); err != nil {
		t.Fatal(err)
	}
	if tok, _ := s.OAuthAccessTokenByID(ctx, "oat_3"); tok.Revoked.IsZero() {
		t.Error("token of a revoked app not revoked")
	}
	if err := s.RevokeOAuthAccessToken(ctx, "oat_3", "app_1"); !errs.Is(errs.NotFound, err) {
		t.Errorf("revoking another app's token: %v, want NotFound", err)
	}

	// Pruning removes what expired.
	*now = now.Add(2 * time.Hour)
	if n, err := s.PruneOAuth(ctx, *now); err != nil || n == 0 {
		t.Errorf("PruneOAuth = %d, %v", n, err)
	}
	if _, err := s.OAuthAccessTokenByID(ctx, "oat_0"); !errs.Is(errs.NotFound, err) {
		t.Errorf("expired token after prune: %v", err)
	}
}
