package api

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/store"
)

// scope checks what a credential may do at all, before any grant: a
// platform token (no tenant) may use every route; a tenant-scoped token
// only its own tenant's routes (and who-am-I and its tenant's tokens), with
// what its roles allow. Reads of personal data are then decided by grants
// for everyone (dataRead), so scope lets any role through to them.
func scope(r *http.Request, p access.Principal, dataRead bool) error {
	if p.Tenant == "" {
		return nil
	}
	forbid := func(msg string) error { return errs.E("api.scope", errs.Forbidden, msg) }
	pat := r.Pattern
	switch {
	case pat == "GET /v1/whoami":
		return nil
	case strings.HasPrefix(pat, "POST /v1/tokens"), strings.HasPrefix(pat, "GET /v1/tokens"):
		if !p.Has(access.RoleTenantAdmin) {
			return forbid("only a tenant admin manages the tenant's tokens")
		}
		return nil // the handlers keep the tenant's tokens to the tenant
	}
	t := r.PathValue("tenant")
	if t == "" {
		return forbid("this route is for platform operators; the token is scoped to a tenant")
	}
	if registry.TenantID(t) != p.Tenant {
		return forbid("the token is scoped to another tenant")
	}
	switch {
	case dataRead:
		return nil
	case strings.Contains(pat, "/grants"), strings.Contains(pat, "/access/"):
		if p.Has(access.RoleTenantAdmin) {
			return nil
		}
		return forbid("only a tenant admin manages and explains grants")
	case strings.Contains(pat, "/users"), strings.Contains(pat, "/oidc-providers"), strings.Contains(pat, "/apps"):
		if p.Has(access.RoleTenantAdmin) {
			return nil
		}
		return forbid("only the hub operator and the tenant's admins manage its users and apps")
	case r.Method != http.MethodGet:
		if p.Has(access.RoleTenantAdmin) || p.Has(access.RoleOperator) {
			return nil
		}
		return forbid("changes need the tenant-admin or operator role")
	default:
		if p.Has(access.RoleTenantAdmin) || p.Has(access.RoleOperator) || p.Has(access.RoleAuditor) {
			return nil
		}
		return forbid("the registry is visible to tenant admins, operators and auditors")
	}
}

// TokenIn is the body of POST /v1/tokens.
type TokenIn struct {
	Name string `json:"name"`
	// Tenant scopes the token to one tenant, where it holds Roles.
	Tenant registry.TenantID `json:"tenant,omitempty"`
	Roles  []access.Role     `json:"roles,omitempty"`
	// ExpiresIn is the lifetime, e.g. "720h"; default 90 days.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// TokenOut describes a token; Secret is set only in the answer that
// created it, and is never stored or shown again.
type TokenOut struct {
	ID      string            `json:"id"`
	Name    string            `json:"name"`
	Tenant  registry.TenantID `json:"tenant,omitempty"`
	Roles   []access.Role     `json:"roles"`
	Created time.Time         `json:"created"`
	Expires time.Time         `json:"expires,omitzero"`
	Revoked time.Time         `json:"revoked,omitzero"`
	Secret  string            `json:"secret,omitempty"`
}

func tokenOut(t store.OperatorToken) TokenOut {
	return TokenOut{ID: t.ID, Name: t.Name, Tenant: t.Tenant, Roles: nonNil(t.Roles), Created: t.Created, Expires: t.Expires, Revoked: t.Revoked}
}

// DefaultTokenLifetime is how long a new operator token lives unless asked.
const DefaultTokenLifetime = 90 * 24 * time.Hour

func (a *API) createToken(w http.ResponseWriter, r *http.Request) error {
	p, _ := principalOf(r)
	var in TokenIn
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := registry.CheckDisplayName("token", in.Name); err != nil {
		return err
	}
	if p.Tenant != "" && in.Tenant != p.Tenant {
		return errs.E(errs.Forbidden, "a tenant admin creates tokens of their own tenant only")
	}
	if in.Tenant == "" && len(in.Roles) > 0 {
		return errs.E(errs.Invalid, "roles need a tenant: a platform token holds no tenant roles")
	}
	if in.Tenant != "" {
		if _, err := a.cfg.Store.Tenant(r.Context(), in.Tenant); err != nil {
			return err
		}
		if len(in.Roles) == 0 {
			return errs.E(errs.Invalid, "a tenant token needs at least one role")
		}
	}
	for _, ro := range in.Roles {
		if !ro.Valid() {
			return errs.E(errs.Invalid, "unknown role; use tenant-admin, operator, analyst, member, auditor or app")
		}
		if ro == access.RoleMember {
			return errs.E(errs.Invalid, "members sign in as users, not with operator tokens")
		}
	}
	slices.Sort(in.Roles)
	in.Roles = slices.Compact(in.Roles)
	life := DefaultTokenLifetime
	if in.ExpiresIn != "" {
		d, err := time.ParseDuration(in.ExpiresIn)
		if err != nil || d <= 0 || d > 5*365*24*time.Hour {
			return errs.E(errs.Invalid, "expires_in must be a positive duration of at most 5 years, e.g. 720h")
		}
		life = d
	}
	id, err := a.newID("tok")
	if err != nil {
		return err
	}
	raw := make([]byte, 32)
	if _, err := io.ReadFull(a.cfg.Rand, raw); err != nil {
		return err
	}
	secret := "cst_" + base64.RawURLEncoding.EncodeToString(raw)
	now := a.cfg.Now().UTC()
	t := store.OperatorToken{ID: id, Name: in.Name, Tenant: in.Tenant, Roles: in.Roles, Created: now, Expires: now.Add(life)}
	if err := a.cfg.Store.CreateOperatorToken(r.Context(), t, sha256.Sum256([]byte(secret))); err != nil {
		return err
	}
	out := tokenOut(t)
	out.Secret = secret
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request) error {
	p, _ := principalOf(r)
	ts, err := a.cfg.Store.OperatorTokens(r.Context())
	if err != nil {
		return err
	}
	out := []TokenOut{}
	for _, t := range ts {
		if p.Tenant == "" || t.Tenant == p.Tenant {
			out = append(out, tokenOut(t))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) revokeToken(w http.ResponseWriter, r *http.Request) error {
	p, _ := principalOf(r)
	id := r.PathValue("token")
	if p.Tenant != "" {
		ts, err := a.cfg.Store.OperatorTokens(r.Context())
		if err != nil {
			return err
		}
		i := slices.IndexFunc(ts, func(t store.OperatorToken) bool { return t.ID == id })
		if i < 0 || ts[i].Tenant != p.Tenant {
			return errs.E(errs.NotFound, "no such token, or already revoked")
		}
	}
	if err := a.cfg.Store.RevokeOperatorToken(r.Context(), id, a.cfg.Now()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
