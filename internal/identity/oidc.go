package identity

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// FlowCookieName binds an OIDC login flow to the browser that started it:
// it holds the flow's state, which the callback must present twice (in the
// cookie and in the query). SameSite=Lax, because the callback is a
// top-level navigation from the provider's site.
const FlowCookieName = "__Host-custos_oidc"

// flowTTL is how long a user has to log in at the provider.
const flowTTL = 10 * time.Minute

// NewProvider is what an administrator gives to configure a provider.
type NewProvider struct {
	Issuer       string        `json:"issuer"`
	ClientID     string        `json:"client_id"`
	ClientSecret string        `json:"client_secret"`
	RedirectURL  string        `json:"redirect_url"`
	AutoCreate   bool          `json:"auto_create"`
	DefaultRoles []access.Role `json:"default_roles"`
}

// AddProvider configures an OpenID Connect provider for tenant t. The
// provider is not contacted until the first login. The redirect URL must
// be https (http only for 127.0.0.1 and localhost, for tests) and the
// issuer https (the same exception).
func (s *Service) AddProvider(ctx context.Context, t registry.TenantID, in NewProvider) (Provider, error) {
	const op errs.Op = "identity.AddProvider"
	if err := checkURL("issuer", in.Issuer); err != nil {
		return Provider{}, errs.E(op, err)
	}
	if err := checkURL("redirect_url", in.RedirectURL); err != nil {
		return Provider{}, errs.E(op, err)
	}
	if in.ClientID == "" || len(in.ClientID) > 255 || len(in.ClientSecret) > 1024 {
		return Provider{}, errs.E(op, errs.Invalid, "client_id must be 1-255 bytes, client_secret at most 1024")
	}
	if in.DefaultRoles == nil {
		in.DefaultRoles = []access.Role{}
	}
	if err := CheckRoles(in.DefaultRoles); err != nil {
		return Provider{}, errs.E(op, err)
	}
	id, err := registry.NewID(s.cfg.Rand, "idp")
	if err != nil {
		return Provider{}, err
	}
	p := Provider{ID: id, Tenant: t, Issuer: in.Issuer, ClientID: in.ClientID, ClientSecret: in.ClientSecret, RedirectURL: in.RedirectURL,
		AutoCreate: in.AutoCreate, DefaultRoles: in.DefaultRoles, Created: s.cfg.Now().UTC()}
	if err := s.cfg.Store.CreateProvider(ctx, p); err != nil {
		return Provider{}, errs.E(op, err)
	}
	return p, nil
}

// Providers lists a tenant's OIDC providers (without their secrets).
func (s *Service) Providers(ctx context.Context, t registry.TenantID) ([]Provider, error) {
	return s.cfg.Store.Providers(ctx, t)
}

func checkURL(field, v string) error {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || len(v) > 512 || u.User != nil || u.Fragment != "" {
		return errs.E(errs.Invalid, field+" must be an absolute URL")
	}
	host := u.Hostname()
	local := host == "127.0.0.1" || host == "localhost" || host == "::1"
	if u.Scheme != "https" && !(u.Scheme == "http" && local) {
		return errs.E(errs.Invalid, field+" must use https")
	}
	return nil
}

// oidcCache keeps each provider's discovery document and key set, fetched
// at the first login and again after an hour.
type oidcCache struct {
	mu sync.Mutex
	m  map[string]cachedProvider
}

type cachedProvider struct {
	p       *oidc.Provider
	fetched time.Time
}

func (s *Service) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, s.cfg.HTTPClient)
}

func (s *Service) discover(ctx context.Context, p Provider) (*oidc.Provider, error) {
	key := string(p.Tenant) + "\x00" + p.ID + "\x00" + p.Issuer
	now := s.cfg.Now()
	s.oidc.mu.Lock()
	c, ok := s.oidc.m[key]
	s.oidc.mu.Unlock()
	if ok && now.Sub(c.fetched) < time.Hour {
		return c.p, nil
	}
	op, err := oidc.NewProvider(s.ctx(ctx), p.Issuer)
	if err != nil {
		return nil, errs.E(errs.Unavailable, fmt.Errorf("OIDC discovery at %s: %w", p.Issuer, err))
	}
	s.oidc.mu.Lock()
	if s.oidc.m == nil {
		s.oidc.m = map[string]cachedProvider{}
	}
	s.oidc.m[key] = cachedProvider{op, now}
	s.oidc.mu.Unlock()
	return op, nil
}

func oauthConfig(p Provider, op *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{ClientID: p.ClientID, ClientSecret: p.ClientSecret, RedirectURL: p.RedirectURL,
		Endpoint: op.Endpoint(), Scopes: []string{oidc.ScopeOpenID}}
}

func (s *Service) random() (string, error) {
	var b [32]byte
	if _, err := io.ReadFull(s.cfg.Rand, b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// BeginOIDC starts an authorization code flow with PKCE (S256), a state
// and a nonce, each 256 random bits. It returns the provider's
// authorization URL to redirect the browser to, and the state for the
// flow cookie (SetFlowCookie).
func (s *Service) BeginOIDC(ctx context.Context, t registry.TenantID, providerID string) (authURL, state string, err error) {
	const op errs.Op = "identity.BeginOIDC"
	p, err := s.cfg.Store.Provider(ctx, t, providerID)
	if err != nil {
		return "", "", errs.E(op, err)
	}
	rp, err := s.discover(ctx, p)
	if err != nil {
		return "", "", errs.E(op, err)
	}
	var nonce, verifier string
	for _, v := range []*string{&state, &nonce, &verifier} {
		if *v, err = s.random(); err != nil {
			return "", "", err
		}
	}
	f := Flow{StateHash: sha256.Sum256([]byte(state)), Tenant: t, Provider: p.ID, Nonce: nonce, Verifier: verifier, Expires: s.cfg.Now().Add(flowTTL).UTC()}
	if err := s.cfg.Store.CreateFlow(ctx, f); err != nil {
		return "", "", errs.E(op, err)
	}
	return oauthConfig(p, rp).AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), state, nil
}

// SetFlowCookie hands the flow's state to the browser for the callback.
func (s *Service) SetFlowCookie(w http.ResponseWriter, state string) {
	http.SetCookie(w, &http.Cookie{Name: FlowCookieName, Value: state, Path: "/", MaxAge: int(flowTTL / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// ClearFlowCookie drops the flow cookie.
func ClearFlowCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: FlowCookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// errOIDC is the answer to a failed OIDC callback; reason says which
// check failed, in words that carry nothing of the token.
func errOIDC(reason string, cause error) error {
	return errs.E(errs.Unauthenticated, &oidcError{reason, cause})
}

type oidcError struct {
	reason string
	cause  error
}

func (e *oidcError) Error() string { return "OpenID Connect login refused: " + e.reason }
func (e *oidcError) Unwrap() error { return e.cause }

// CompleteOIDC finishes a flow at the callback: the state in the query
// must equal the one in the flow cookie and name a flow of this tenant and
// provider that has not expired (each state is used once); the code is
// exchanged with the PKCE verifier; the ID token's signature (against the
// provider's published keys), issuer, audience (our client ID) and expiry
// are verified by go-oidc, and its nonce must be the flow's. The token's
// (issuer, subject) then names the user: a pre-provisioned one, or, with
// the provider's AutoCreate, one made now with its DefaultRoles. A
// disabled user is refused. On success a new session starts.
func (s *Service) CompleteOIDC(ctx context.Context, t registry.TenantID, providerID string, r *http.Request) (User, string, Session, error) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		return User{}, "", Session{}, errOIDC("the provider answered with an error", nil)
	}
	state := q.Get("state")
	c, err := r.Cookie(FlowCookieName)
	if err != nil || state == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) != 1 {
		return User{}, "", Session{}, errOIDC("state does not match this browser's login", nil)
	}
	f, err := s.cfg.Store.TakeFlow(ctx, sha256.Sum256([]byte(state)))
	if errs.Is(errs.NotFound, err) {
		return User{}, "", Session{}, errOIDC("unknown or already used state", nil)
	}
	if err != nil {
		return User{}, "", Session{}, err
	}
	if f.Tenant != t || f.Provider != providerID || !s.cfg.Now().Before(f.Expires) {
		return User{}, "", Session{}, errOIDC("login flow expired or for another provider", nil)
	}
	p, err := s.cfg.Store.Provider(ctx, t, providerID)
	if err != nil {
		return User{}, "", Session{}, err
	}
	rp, err := s.discover(ctx, p)
	if err != nil {
		return User{}, "", Session{}, err
	}
	tok, err := oauthConfig(p, rp).Exchange(s.ctx(ctx), q.Get("code"), oauth2.VerifierOption(f.Verifier))
	if err != nil {
		return User{}, "", Session{}, errOIDC("the code exchange failed", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return User{}, "", Session{}, errOIDC("no ID token in the token response", nil)
	}
	idt, err := s.VerifyIDToken(ctx, p, rp, raw)
	if err != nil {
		return User{}, "", Session{}, err
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.Nonce)) != 1 {
		return User{}, "", Session{}, errOIDC("nonce does not match", nil)
	}
	u, err := s.oidcUser(ctx, p, idt.Issuer, idt.Subject)
	if err != nil {
		return User{}, "", Session{}, err
	}
	tokStr, sess, err := s.startSession(ctx, u)
	return u, tokStr, sess, err
}

// VerifyIDToken checks a raw ID token's signature, issuer, audience and
// expiry for provider p and says which check failed.
func (s *Service) VerifyIDToken(ctx context.Context, p Provider, rp *oidc.Provider, raw string) (*oidc.IDToken, error) {
	v := rp.Verifier(&oidc.Config{ClientID: p.ClientID, Now: s.cfg.Now})
	idt, err := v.Verify(s.ctx(ctx), raw)
	if err == nil {
		return idt, nil
	}
	var exp *oidc.TokenExpiredError
	m := err.Error()
	reason := "malformed ID token"
	switch {
	case errors.As(err, &exp):
		reason = "ID token expired"
	case strings.Contains(m, "audience"):
		reason = "ID token for another audience"
	case strings.Contains(m, "issuer"), strings.Contains(m, "different provider"):
		reason = "ID token from another issuer"
	case strings.Contains(m, "signature"):
		reason = "ID token signature invalid"
	}
	return nil, errOIDC(reason, err)
}

// oidcUser maps a provider account to a user of the tenant.
func (s *Service) oidcUser(ctx context.Context, p Provider, issuer, sub string) (User, error) {
	u, err := s.cfg.Store.UserByExternal(ctx, p.Tenant, issuer, sub)
	switch {
	case err == nil && !u.Disabled.IsZero():
		return User{}, errOIDC("user disabled", nil)
	case err == nil:
		return u, nil
	case !errs.Is(errs.NotFound, err):
		return User{}, err
	case !p.AutoCreate:
		return User{}, errOIDC("no user of this tenant is linked to that account; ask a tenant admin", nil)
	}
	// Just in time: a pseudonymous login name derived from the account,
	// so no claim with personal data (e-mail, name) is stored.
	h := sha256.Sum256([]byte(issuer + "\x00" + sub))
	id, err := registry.NewID(s.cfg.Rand, "usr")
	if err != nil {
		return User{}, err
	}
	u = User{ID: access.PrincipalID(id), Tenant: p.Tenant, Name: "oidc." + hex.EncodeToString(h[:8]),
		Roles: append([]access.Role{}, p.DefaultRoles...), Issuer: issuer, ExternalID: sub, Created: s.cfg.Now().UTC()}
	if err := s.cfg.Store.CreateUser(ctx, u); err != nil {
		if errs.Is(errs.Exists, err) { // a concurrent first login won
			return s.cfg.Store.UserByExternal(ctx, p.Tenant, issuer, sub)
		}
		return User{}, err
	}
	return u, nil
}
