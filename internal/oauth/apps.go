package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/store"
)

// The kinds of app.
const (
	// KindService is a service acting as itself (client credentials).
	KindService = "service"
	// KindUser is an app acting for users (authorization code + PKCE).
	KindUser = "user"
)

// NewApp describes an app to register.
type NewApp struct {
	Tenant registry.TenantID `json:"-"`
	Name   string            `json:"name"`
	// Kind is KindService or KindUser.
	Kind string `json:"kind"`
	// Public registers a user app without a secret (a native or browser
	// app). Services are always confidential.
	Public bool `json:"public"`
	// RedirectURIs are the exact URIs a user app may receive codes at:
	// https, or http on a loopback address. Required for user apps,
	// refused for services.
	RedirectURIs []string `json:"redirect_uris"`
	// Scopes the app may ask for: "read" (any purpose) or
	// "read:<purpose>". At least one.
	Scopes []string `json:"scopes"`
}

const maxRedirectURIs = 10

var purposeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// ScopeRead is the scope of reading for any purpose; "read:<purpose>"
// reads for one purpose.
const ScopeRead = "read"

// CheckScope reports whether s is a scope an app can be registered with.
func CheckScope(s string) error {
	if s == ScopeRead {
		return nil
	}
	p, ok := strings.CutPrefix(s, ScopeRead+":")
	if !ok || !purposeRE.MatchString(p) {
		return errs.E(errs.Invalid, fmt.Sprintf("scope %q: want %q or %q followed by a purpose (lower-case letters, digits, '_', '.', '-')", truncate(s), ScopeRead, ScopeRead+":"))
	}
	return nil
}

// CheckRedirectURI reports whether u may be registered as a redirect URI:
// absolute https (or http on a loopback address), without a fragment or
// user information.
func CheckRedirectURI(u string) error {
	bad := func(why string) error {
		return errs.E(errs.Invalid, fmt.Sprintf("redirect URI %q: %s", truncate(u), why))
	}
	if len(u) > 2000 {
		return bad("longer than 2000 bytes")
	}
	p, err := url.Parse(u)
	if err != nil {
		return bad("not a URL")
	}
	switch {
	case p.Host == "" || p.Opaque != "":
		return bad("must be absolute")
	case p.Fragment != "" || strings.Contains(u, "#"):
		return bad("must not hold a fragment")
	case p.User != nil:
		return bad("must not hold user information")
	case p.Scheme == "https":
		return nil
	case p.Scheme == "http" && isLoopback(p.Hostname()):
		return nil
	}
	return bad("must use https (http only on a loopback address)")
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// check validates a registration; it changes nothing.
func (a NewApp) check() error {
	if err := registry.CheckDisplayName("app", a.Name); err != nil {
		return err
	}
	switch a.Kind {
	case KindService:
		if a.Public {
			return errs.E(errs.Invalid, "a service app cannot be public: it authenticates with its secret")
		}
		if len(a.RedirectURIs) > 0 {
			return errs.E(errs.Invalid, "a service app has no redirect URIs")
		}
	case KindUser:
		if len(a.RedirectURIs) == 0 {
			return errs.E(errs.Invalid, "a user app needs at least one redirect URI")
		}
	default:
		return errs.E(errs.Invalid, fmt.Sprintf("kind must be %q or %q", KindService, KindUser))
	}
	if len(a.RedirectURIs) > maxRedirectURIs {
		return errs.E(errs.Invalid, fmt.Sprintf("at most %d redirect URIs", maxRedirectURIs))
	}
	for _, u := range a.RedirectURIs {
		if err := CheckRedirectURI(u); err != nil {
			return err
		}
	}
	if len(a.Scopes) == 0 {
		return errs.E(errs.Invalid, "at least one scope, e.g. \"read\" or \"read:monitoring\"")
	}
	if len(a.Scopes) > 32 {
		return errs.E(errs.Invalid, "at most 32 scopes")
	}
	for _, s := range a.Scopes {
		if err := CheckScope(s); err != nil {
			return err
		}
	}
	return nil
}

// Register adds an app to its tenant and returns it with its client
// secret (empty for public apps). The secret is shown this once: only its
// hash is stored.
func (s *Server) Register(ctx context.Context, in NewApp) (store.OAuthApp, string, error) {
	const op errs.Op = "oauth.Register"
	if err := in.check(); err != nil {
		return store.OAuthApp{}, "", errs.E(op, err)
	}
	if _, err := s.cfg.Store.Tenant(ctx, in.Tenant); err != nil {
		return store.OAuthApp{}, "", errs.E(op, err)
	}
	id, err := registry.NewID(s.cfg.Rand, "app")
	if err != nil {
		return store.OAuthApp{}, "", err
	}
	scopes := slices.Clone(in.Scopes)
	slices.Sort(scopes)
	a := store.OAuthApp{
		ID: access.PrincipalID(id), Tenant: in.Tenant, Name: in.Name, Kind: in.Kind, Public: in.Public,
		RedirectURIs: slices.Clone(in.RedirectURIs), Scopes: slices.Compact(scopes), Created: s.cfg.Now().UTC(),
	}
	var secret string
	var hash []byte
	if !a.Public {
		if secret, err = randomToken(s.cfg.Rand, "cas_"); err != nil {
			return a, "", err
		}
		h := sha256.Sum256([]byte(secret))
		hash = h[:]
	}
	if err := s.cfg.Store.CreateOAuthApp(ctx, a, hash); err != nil {
		return a, "", errs.E(op, err)
	}
	return a, secret, nil
}

// Apps lists a tenant's apps, revoked ones included.
func (s *Server) Apps(ctx context.Context, t registry.TenantID) ([]store.OAuthApp, error) {
	return s.cfg.Store.OAuthApps(ctx, t)
}

// Revoke revokes an app of tenant t with every token it holds; its tokens
// are refused from the next request on.
func (s *Server) Revoke(ctx context.Context, t registry.TenantID, id access.PrincipalID) (store.OAuthApp, error) {
	return s.cfg.Store.RevokeOAuthApp(ctx, t, id)
}

// randomToken returns prefix and 256 random bits in base64url.
func randomToken(r io.Reader, prefix string) (string, error) {
	var b [32]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("oauth: randomness: %w", err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// checkSecret compares a presented secret with the stored hash in
// constant time.
func checkSecret(hash []byte, secret string) bool {
	h := sha256.Sum256([]byte(secret))
	return len(hash) == len(h) && subtle.ConstantTimeCompare(hash, h[:]) == 1
}

// CheckRead is the part of a read decision that belongs to app tokens: p
// must be of tenant t, and an app's scopes must allow reading for purpose.
// A principal that is not an app passes (its roles and grants decide).
// Grants are decided separately, by the access package.
func CheckRead(p access.Principal, t registry.TenantID, purpose access.Purpose) error {
	if p.Tenant != t {
		return errs.E(errs.Forbidden, "the credential belongs to another tenant")
	}
	if !p.Has(access.RoleApp) {
		return nil
	}
	for _, s := range p.Scopes {
		if s == ScopeRead || (purpose != "" && s == ScopeRead+":"+string(purpose)) {
			return nil
		}
	}
	return errs.E(errs.Forbidden, fmt.Sprintf("the app's token has no scope to read for purpose %q (needs %q or %q)", truncate(string(purpose)), ScopeRead, ScopeRead+":"+truncate(string(purpose))))
}
