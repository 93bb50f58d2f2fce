package oauth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/rs/cors"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/store"
)

// Config configures the authorization server.
type Config struct {
	// Store keeps apps, authorization requests and tokens. Must be non-nil.
	Store *store.Store
	// Issuer is the absolute URL the server is reached at, its path the
	// prefix its endpoints are served under, e.g.
	// "https://hub.example:8443/oauth2". Must be set; https unless
	// AllowInsecure.
	Issuer string
	// Audience is the hub's name in access tokens' aud; the Authenticator
	// refuses tokens without it. Default: Issuer.
	Audience string
	// Keys sign tokens and encrypt codes. Must be set; every replica needs
	// the same (see LoadOrCreateKeys).
	Keys Keys
	// Users names the user logged in on a request (e.g. by the web session
	// cookie), for the authorization-code flow. Without it that flow
	// refuses every login.
	Users access.Authenticator
	// LoginPage, if set, is where a browser without a logged-in user is
	// sent, with return_to set to the URL to come back to. Without it such
	// a request is answered 401.
	LoginPage string
	// AccessTTL is the lifetime of access and ID tokens. Default 10 min.
	AccessTTL time.Duration
	// RefreshTTL is the lifetime of a refresh token (each rotation starts
	// a new one). Default 30 days.
	RefreshTTL time.Duration
	// AuthRequestTTL is how long a user has to log in, and a code to be
	// exchanged. Default 10 min.
	AuthRequestTTL time.Duration
	// AllowInsecure accepts an http Issuer. Tests only.
	AllowInsecure bool
	// Now is the clock of the store-side checks. Default time.Now. (The op
	// library stamps iat/exp in JWTs from the system clock.)
	Now func() time.Time
	// Rand is the source of secrets, tokens and IDs. Default crypto/rand.
	Rand io.Reader
	// Log receives warnings (IDs only). Default slog.Default().
	Log *slog.Logger
}

// Server is the OAuth2 authorization server. It is safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	provider *op.Provider
	st       *storage
	verifier *op.AccessTokenVerifier
	prefix   string
}

const loginPath = "/login"

// New returns a server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Keys.Signing == nil {
		return nil, errors.New("oauth: Store and Keys must be set")
	}
	u, err := url.Parse(cfg.Issuer)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || (u.Scheme != "https" && !(cfg.AllowInsecure && u.Scheme == "http")) {
		return nil, fmt.Errorf("oauth: issuer %q must be an absolute https URL without query or fragment", cfg.Issuer)
	}
	cfg.Issuer = strings.TrimRight(cfg.Issuer, "/")
	if cfg.Audience == "" {
		cfg.Audience = cfg.Issuer
	}
	if cfg.AccessTTL == 0 {
		cfg.AccessTTL = 10 * time.Minute
	}
	if cfg.RefreshTTL == 0 {
		cfg.RefreshTTL = 30 * 24 * time.Hour
	}
	if cfg.AuthRequestTTL == 0 {
		cfg.AuthRequestTTL = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Log, prefix: strings.TrimRight(u.Path, "/")}
	key, err := newSigningKey(cfg.Keys.Signing)
	if err != nil {
		return nil, err
	}
	s.st = &storage{s: s, key: key}
	opts := []op.Option{
		op.WithCustomTokenEndpoint(op.NewEndpoint("token")),
		op.WithCustomIntrospectionEndpoint(op.NewEndpoint("introspect")),
		// Browsers may call the token endpoint (public apps) but never
		// with the hub's cookies.
		op.WithCORSOptions(&cors.Options{
			AllowOriginFunc: func(string) bool { return true },
			AllowedMethods:  []string{http.MethodGet, http.MethodPost},
			AllowedHeaders:  []string{"Authorization", "Content-Type"},
		}),
	}
	if cfg.AllowInsecure {
		opts = append(opts, op.WithAllowInsecure())
	}
	s.provider, err = op.NewProvider(&op.Config{
		CryptoKey:             cfg.Keys.Crypto,
		CodeMethodS256:        true,
		GrantTypeRefreshToken: true,
		SupportedScopes:       []string{oidc.ScopeOpenID, oidc.ScopeOfflineAccess, ScopeRead},
	}, s.st, op.StaticIssuer(cfg.Issuer), opts...)
	if err != nil {
		return nil, fmt.Errorf("oauth: %w", err)
	}
	s.verifier = op.NewAccessTokenVerifier(cfg.Issuer, keySet{key}, op.WithSupportedAccessTokenSigningAlgorithms(string(jose256)))
	return s, nil
}

const jose256 = "ES256"

// Endpoints are the paths under the issuer that Serve answers, by method.
// The discovery document and the keys are public; the rest must be
// audited by the caller.
var Endpoints = []struct {
	Method, Path string
	Public       bool
}{
	{http.MethodGet, "/.well-known/openid-configuration", true},
	{http.MethodGet, "/keys", true},
	{http.MethodGet, "/authorize", false},
	{http.MethodPost, "/authorize", false},
	{http.MethodGet, "/authorize/callback", false},
	{http.MethodGet, loginPath, false},
	{http.MethodPost, "/token", false},
	{http.MethodPost, "/revoke", false},
	{http.MethodPost, "/introspect", false},
}

// Prefix is the path the endpoints are served under (the Issuer's path).
func (s *Server) Prefix() string { return s.prefix }

// Outcome is what Serve did, for the audit log.
type Outcome struct {
	// Principal is who acted, as verified: the app that got (or revoked,
	// or introspected) a token, or the user who logged in. Empty if nobody
	// was authenticated.
	Principal access.PrincipalID
	// OK is false if the request was refused.
	OK bool
}

// Serve answers a request to one of Endpoints and reports its outcome.
// Bodies are limited to 64 KiB.
func (s *Server) Serve(w http.ResponseWriter, r *http.Request) Outcome {
	rest, ok := strings.CutPrefix(r.URL.Path, s.prefix)
	if !ok {
		http.NotFound(w, r)
		return Outcome{}
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	}
	if rest == loginPath {
		return s.login(w, r)
	}
	// Parse the form here, so that the client ID is at hand afterwards;
	// op sees the parsed form.
	if err := r.ParseForm(); err != nil {
		http.Error(w, "cannot parse the form", http.StatusBadRequest)
		return Outcome{}
	}
	rec := &statusWriter{ResponseWriter: w}
	r2 := r.Clone(r.Context())
	r2.URL.Path = rest
	r2.URL.RawPath = ""
	s.provider.ServeHTTP(rec, r2)
	out := Outcome{OK: rec.status < 400 && !errorRedirect(rec.Header().Get("Location"))}
	if out.OK && (rest == "/token" || rest == "/revoke" || rest == "/introspect") {
		out.Principal = clientID(r)
	}
	return out
}

// clientID is the client a token request authenticated as (trusted only
// after op accepted the request).
func clientID(r *http.Request) access.PrincipalID {
	if id, _, ok := r.BasicAuth(); ok {
		if u, err := url.QueryUnescape(id); err == nil {
			return access.PrincipalID(u)
		}
	}
	return access.PrincipalID(r.PostForm.Get("client_id"))
}

// errorRedirect reports whether an authorization response redirects an
// error to the app.
func errorRedirect(loc string) bool {
	if loc == "" {
		return false
	}
	u, err := url.Parse(loc)
	if err != nil {
		return true
	}
	if u.Query().Has("error") {
		return true
	}
	f, _ := url.ParseQuery(u.Fragment)
	return f.Has("error")
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// login binds the logged-in user to a pending authorization request and
// sends the browser back to op, which issues the code.
func (s *Server) login(w http.ResponseWriter, r *http.Request) Outcome {
	fail := func(code int, msg string) Outcome {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		fmt.Fprintln(w, msg)
		return Outcome{}
	}
	ctx := r.Context()
	id := r.URL.Query().Get("id")
	row, err := s.cfg.Store.OAuthAuthRequestByID(ctx, id)
	if errs.Is(errs.NotFound, err) {
		return fail(http.StatusBadRequest, "unknown or expired authorization request; start again from the app")
	}
	if err != nil {
		s.log.Error("oauth: loading an authorization request failed", "err", err)
		return fail(http.StatusServiceUnavailable, "try again later")
	}
	if row.User != "" {
		return fail(http.StatusBadRequest, "authorization request already completed; start again from the app")
	}
	if s.cfg.Users == nil {
		return fail(http.StatusUnauthorized, "this hub has no user login")
	}
	p, ok, err := s.cfg.Users.Authenticate(ctx, r)
	if err != nil {
		return fail(http.StatusUnauthorized, "login refused: "+userMessage(err))
	}
	if !ok {
		if s.cfg.LoginPage != "" {
			back := s.cfg.Issuer + loginPath + "?id=" + url.QueryEscape(id)
			http.Redirect(w, r, s.cfg.LoginPage+"?return_to="+url.QueryEscape(back), http.StatusFound)
			return Outcome{OK: true}
		}
		return fail(http.StatusUnauthorized, "log in to the hub first")
	}
	if !strings.HasPrefix(string(p.ID), "usr_") || !p.ID.Valid() {
		return fail(http.StatusForbidden, "only a user can authorize an app")
	}
	a, _, err := s.st.app(ctx, string(row.App))
	if err != nil {
		return fail(http.StatusForbidden, "the app is unknown or revoked")
	}
	if p.Tenant != a.Tenant {
		return Outcome{Principal: p.ID, OK: false}.write(w, http.StatusForbidden, "the app belongs to another tenant")
	}
	if !p.Expires.IsZero() && !s.cfg.Now().Before(p.Expires) {
		return fail(http.StatusUnauthorized, "the login has expired")
	}
	if err := s.cfg.Store.CompleteOAuthAuthRequest(ctx, id, p.ID, s.cfg.Now().UTC()); err != nil {
		if errs.Is(errs.NotFound, err) {
			return fail(http.StatusBadRequest, "authorization request already completed or expired; start again from the app")
		}
		s.log.Error("oauth: completing an authorization request failed", "err", err)
		return fail(http.StatusServiceUnavailable, "try again later")
	}
	http.Redirect(w, r, s.cfg.Issuer+"/authorize/callback?id="+url.QueryEscape(id), http.StatusFound)
	return Outcome{Principal: p.ID, OK: true}
}

func (o Outcome) write(w http.ResponseWriter, code int, msg string) Outcome {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
	return o
}

func userMessage(err error) string {
	var e *errs.Error
	if errors.As(err, &e) && e.Kind != errs.Other {
		return e.Kind.String()
	}
	return "invalid credential"
}

// Authenticate implements access.Authenticator for an app's bearer access
// token: the JWT's signature, issuer, expiry and audience are verified,
// then the token is looked up in the store, which must know it, not mark
// it (or its family or app) revoked, and not see it expired. The principal
// is built from the stored row. A request without a bearer JWT is not
// this authenticator's (ok false).
func (s *Server) Authenticate(ctx context.Context, r *http.Request) (access.Principal, bool, error) {
	const op errs.Op = "oauth.Authenticate"
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.Count(tok, ".") != 2 {
		return access.Principal{}, false, nil
	}
	p, err := s.Principal(ctx, tok)
	if err != nil {
		return access.Principal{}, true, errs.E(op, err)
	}
	return p, true, nil
}

// Principal verifies an access token and returns whom it speaks for.
func (s *Server) Principal(ctx context.Context, token string) (access.Principal, error) {
	deny := func(msg string) (access.Principal, error) {
		return access.Principal{}, errs.E(errs.Unauthenticated, msg)
	}
	claims, err := op.VerifyAccessToken[*oidc.AccessTokenClaims](ctx, token, s.verifier)
	if err != nil {
		return deny("invalid access token")
	}
	if !slices.Contains(claims.Audience, s.cfg.Audience) {
		return deny("access token is not for this hub")
	}
	t, err := s.cfg.Store.OAuthAccessTokenByID(ctx, claims.JWTID)
	if errs.Is(errs.NotFound, err) {
		return deny("unknown access token")
	}
	if err != nil {
		return access.Principal{}, errs.E(errs.Unavailable, err)
	}
	switch {
	case string(t.App) != claims.ClientID:
		return deny("invalid access token")
	case !t.Revoked.IsZero():
		return deny("access token revoked")
	case !s.cfg.Now().Before(t.Expires):
		return deny("access token expired")
	}
	return access.Principal{
		ID: t.App, Tenant: t.Tenant, Roles: []access.Role{access.RoleApp},
		Scopes: t.Scopes, Expires: t.Expires, ActingFor: t.User,
	}, nil
}

// Prune deletes expired tokens and authorization requests.
func (s *Server) Prune(ctx context.Context) (int64, error) {
	return s.cfg.Store.PruneOAuth(ctx, s.cfg.Now().Add(-time.Hour))
}

var _ access.Authenticator = (*Server)(nil)
