package api

import (
	"net/http"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// GrantIn is the body of POST /v1/tenants/{tenant}/grants. Resource is
// "kind:id" (tenant, subject, site, device, stream or group); exactly one of
// Principal and Role is set.
type GrantIn struct {
	ID        string    `json:"id,omitempty"`
	Principal string    `json:"principal,omitempty"`
	Role      string    `json:"role,omitempty"`
	Resource  string    `json:"resource"`
	Finest    string    `json:"finest"`
	Purposes  []string  `json:"purposes"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
}

// GrantOut is a stored grant as the API shows it.
type GrantOut struct {
	ID        string    `json:"id"`
	Principal string    `json:"principal,omitempty"`
	Role      string    `json:"role,omitempty"`
	Resource  string    `json:"resource"`
	Finest    string    `json:"finest"`
	Purposes  []string  `json:"purposes"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
}

func grantOut(g access.Grant) GrantOut {
	ps := make([]string, len(g.Purposes))
	for i, p := range g.Purposes {
		ps[i] = string(p)
	}
	return GrantOut{ID: g.ID, Principal: string(g.Principal), Role: string(g.Role), Resource: g.Resource.String(),
		Finest: string(g.Finest), Purposes: ps, NotBefore: g.NotBefore, NotAfter: g.NotAfter}
}

// ParseResource parses "kind:id", e.g. "stream:str_123".
func ParseResource(s string) (access.Resource, error) {
	kind, id, ok := strings.Cut(s, ":")
	if !ok || id == "" {
		return access.Resource{}, errs.E(errs.Invalid, "resource must be kind:id, e.g. stream:str_... or tenant:ten_...")
	}
	return access.Resource{Kind: access.Kind(kind), ID: id}, nil
}

func (a *API) createGrant(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var in GrantIn
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	res, err := ParseResource(in.Resource)
	if err != nil {
		return err
	}
	if in.ID == "" {
		if in.ID, err = a.newID("grt"); err != nil {
			return err
		}
	}
	finest, err := rollup.ParseResolution(in.Finest)
	if err != nil {
		return err
	}
	g := access.Grant{ID: in.ID, Tenant: t, Principal: access.PrincipalID(in.Principal), Role: access.Role(in.Role),
		Resource: res, Finest: finest, NotBefore: in.NotBefore, NotAfter: in.NotAfter}
	for _, p := range in.Purposes {
		g.Purposes = append(g.Purposes, access.Purpose(p))
	}
	if err := a.cfg.Store.AddGrant(r.Context(), g, a.cfg.Now()); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, grantOut(g))
	return nil
}

func (a *API) listGrants(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	gs, _, err := a.cfg.Store.Grants(r.Context(), t)
	if err != nil {
		return err
	}
	out := make([]GrantOut, 0, len(gs))
	for _, g := range gs {
		out = append(out, grantOut(g))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) revokeGrant(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.RevokeGrant(r.Context(), t, r.PathValue("grant")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Explanation is the answer of GET /v1/tenants/{tenant}/access/explain.
type Explanation struct {
	Allowed bool   `json:"allowed"`
	Finest  string `json:"finest,omitempty"`
	Reason  string `json:"reason"`
	// Text explains, grant by grant, what applied and what did not.
	Text string `json:"text"`
}

// explainAccess says why principal may or may not read stream at resolution
// for purpose (query parameters), with the grants in force now. role and
// member_of (repeatable role) describe the principal's roles for
// principals whose roles the hub does not hold itself.
func (a *API) explainAccess(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	st, err := a.cfg.Store.Stream(r.Context(), t, registry.StreamID(q.Get("stream")))
	if err != nil {
		return err
	}
	path, err := a.streamPath(r.Context(), t, st)
	if err != nil {
		return err
	}
	res := rollup.Raw
	if v := q.Get("resolution"); v != "" {
		if res, err = rollup.ParseResolution(v); err != nil {
			return err
		}
	}
	req := access.Request{Tenant: t, Principal: access.PrincipalID(q.Get("principal")), Resource: path,
		Resolution: res, Purpose: access.Purpose(q.Get("purpose")), Now: a.cfg.Now(),
		MemberOf: registry.SubjectID(q.Get("member_of"))}
	for _, ro := range q["role"] {
		req.Roles = append(req.Roles, access.Role(ro))
	}
	x, err := a.authz.explain(r.Context(), req)
	if err != nil {
		return err
	}
	if x.Err != nil && errs.KindOf(x.Err) == errs.Invalid {
		return x.Err
	}
	writeJSON(w, http.StatusOK, Explanation{Allowed: x.Decision.Allow, Finest: string(x.Decision.Finest), Reason: x.Decision.Reason, Text: x.String()})
	return nil
}

// whoami names the caller's principal, so a client can grant itself
// access on the record (client.GrantSelf) or show who it acts as.
func (a *API) whoami(w http.ResponseWriter, r *http.Request) error {
	p, ok := principalOf(r)
	if !ok {
		return errs.E(errs.Unauthenticated, "no principal")
	}
	roles := make([]string, len(p.Roles))
	for i, ro := range p.Roles {
		roles[i] = string(ro)
	}
	writeJSON(w, http.StatusOK, struct {
		Principal string   `json:"principal"`
		Tenant    string   `json:"tenant,omitempty"`
		Roles     []string `json:"roles"`
	}{string(p.ID), string(p.Tenant), roles})
	return nil
}
