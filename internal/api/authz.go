package api

import (
	"context"
	"net/http"
	"slices"
	"sync"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/consent"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/oauth"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// grantStore is what the authorizer needs of the store.
type grantStore interface {
	GrantVersion(ctx context.Context, t registry.TenantID) (uint64, error)
	Grants(ctx context.Context, t registry.TenantID) ([]access.Grant, uint64, error)
}

// authorizer is the one decision point of every read of personal data. It
// keeps the grants in an access.Decider and, before each decision, asks
// the database for the tenant's grant version (one indexed row): if
// another request or another replica changed the tenant's grants, it
// reloads them first. So a revocation takes effect on the very next
// request on every replica, and a decision costs one small query plus
// the in-memory evaluation. Any failure denies.
type authorizer struct {
	d  *access.Decider
	st grantStore

	mu     sync.Mutex // serialises reloads
	loaded sync.Map   // registry.TenantID → uint64, the version held
}

func newAuthorizer(st grantStore) *authorizer {
	return &authorizer{d: access.NewDecider(), st: st}
}

// fresh makes the decider hold t's current grants.
func (z *authorizer) fresh(ctx context.Context, t registry.TenantID) error {
	v, err := z.st.GrantVersion(ctx, t)
	if err != nil {
		return errs.E(errs.Unavailable, err)
	}
	if held, ok := z.loaded.Load(t); ok && held.(uint64) == v {
		return nil
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if held, ok := z.loaded.Load(t); ok && held.(uint64) >= v {
		return nil
	}
	grants, v, err := z.st.Grants(ctx, t)
	if err != nil {
		return errs.E(errs.Unavailable, err)
	}
	if err := z.d.ReplaceTenant(t, grants); err != nil {
		// A stored grant the decider refuses: deny rather than guess.
		return errs.E(errs.Integrity, err)
	}
	z.loaded.Store(t, v)
	return nil
}

// decide answers req with the tenant's current grants.
func (z *authorizer) decide(ctx context.Context, req access.Request) (access.Decision, error) {
	if err := z.fresh(ctx, req.Tenant); err != nil {
		return access.Decision{}, err
	}
	return z.d.Decide(req)
}

// explain says why req is or is not allowed, with current grants.
func (z *authorizer) explain(ctx context.Context, req access.Request) (access.Explanation, error) {
	if err := z.fresh(ctx, req.Tenant); err != nil {
		return access.Explanation{}, err
	}
	return z.d.Explain(req), nil
}

// principalKey carries the authenticated principal in a request's context.
type principalKey struct{}

func withPrincipal(r *http.Request, p access.Principal) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
}

// principalOf returns the request's authenticated principal.
func principalOf(r *http.Request) (access.Principal, bool) {
	p, ok := r.Context().Value(principalKey{}).(access.Principal)
	return p, ok
}

// streamPath locates a stream in its tenant for an access decision.
func (a *API) streamPath(ctx context.Context, t registry.TenantID, st registry.Stream) (access.Path, error) {
	dev, err := a.cfg.Store.Device(ctx, t, st.Device)
	if err != nil {
		return access.Path{}, err
	}
	site, err := a.cfg.Store.Site(ctx, t, dev.Site)
	if err != nil {
		return access.Path{}, err
	}
	return access.Path{Subject: site.Subject, Site: site.ID, Device: dev.ID, Stream: st.ID}, nil
}

// authorizeRead decides whether the request's principal may read stream st
// at res for the request's purpose. A denial is an error of kind
// errs.Forbidden that names the finest resolution granted, if any.
func (a *API) authorizeRead(r *http.Request, st registry.Stream, res rollup.Resolution) (access.Decision, error) {
	const op errs.Op = "api.authorizeRead"
	p, ok := principalOf(r)
	if !ok {
		return access.Decision{}, errs.E(op, errs.Unauthenticated, "no principal")
	}
	purpose := r.URL.Query().Get("purpose")
	if purpose == "" {
		return access.Decision{}, errs.E(op, errs.Invalid, "purpose is required: say why the data is read, e.g. purpose=monitoring")
	}
	t := pathTenant(r)
	if p.Tenant != "" && p.Tenant != t {
		return access.Decision{}, errs.E(op, errs.Forbidden, "no access to this resource for this purpose")
	}
	path, err := a.streamPath(r.Context(), t, st)
	if err != nil {
		return access.Decision{}, err
	}
	if a.cfg.AuthzOff {
		return access.Decision{Allow: true, Finest: rollup.Raw, Reason: "authorization off (benchmark)"}, nil
	}
	req := access.Request{
		Tenant: t, Principal: p.ID, Roles: p.Roles, MemberOf: p.MemberOf,
		Resource: path, Resolution: res, Purpose: access.Purpose(purpose), Now: a.cfg.Now(),
	}
	if p.Has(access.RoleApp) {
		// An app's token must carry a scope for the purpose, and then the
		// app's grants decide — or, for an app acting for a user, that
		// user's grants and membership: the app sees no more than its user.
		if err := oauth.CheckRead(p, t, req.Purpose); err != nil {
			return access.Decision{}, err
		}
		if p.ActingFor != "" {
			u, err := a.cfg.Store.User(r.Context(), t, p.ActingFor)
			if err != nil || !u.Disabled.IsZero() {
				return access.Decision{}, errs.E(op, errs.Forbidden, "the user the app acts for has no access")
			}
			req.Principal, req.Roles, req.MemberOf = u.ID, u.Roles, u.MemberOf
		}
	}
	d, err := a.authz.decide(r.Context(), req)
	if err != nil {
		return d, err
	}
	if err := d.Err(op); err != nil {
		return d, err
	}
	// A member reading their own data processes it for no one else: the
	// purpose gate is for everybody else, together with the grant.
	if req.MemberOf != "" && req.MemberOf == path.Subject && slices.Contains(req.Roles, access.RoleMember) {
		return d, nil
	}
	ok, why, err := consent.Gate{Source: a.cfg.Store}.Allowed(r.Context(), t, path.Subject, consent.PurposeID(purpose), st.Category, req.Now)
	if err != nil {
		return access.Decision{}, errs.E(op, errs.Unavailable, err)
	}
	if !ok {
		return access.Decision{Finest: d.Finest, Reason: why}, errs.E(op, errs.Forbidden, "no lawful basis to process this data for this purpose: "+why)
	}
	return d, nil
}
