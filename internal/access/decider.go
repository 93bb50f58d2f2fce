package access

import (
	"fmt"
	"iter"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/ast"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// Cedar entity types. Every ID but a tenant's carries its tenant (scoped).
const (
	typTenant    cedar.EntityType = "Custos::Tenant"
	typSubject   cedar.EntityType = "Custos::Subject"
	typSite      cedar.EntityType = "Custos::Site"
	typDevice    cedar.EntityType = "Custos::Device"
	typStream    cedar.EntityType = "Custos::Stream"
	typGroup     cedar.EntityType = "Custos::Group"
	typPrincipal cedar.EntityType = "Custos::Principal"
	typRole      cedar.EntityType = "Custos::Role"
	typAction    cedar.EntityType = "Custos::Action"
)

var actionRead = cedar.NewEntityUID(typAction, "read")

// scoped returns the Cedar ID of id within tenant t. The length prefix
// makes it injective: no two (tenant, id) pairs share a scoped ID.
func scoped(t registry.TenantID, id string) cedar.String {
	return cedar.String(strconv.Itoa(len(t)) + ":" + string(t) + "/" + id)
}

func tenantUID(t registry.TenantID) cedar.EntityUID {
	return cedar.NewEntityUID(typTenant, cedar.String(t))
}

func resourceUID(t registry.TenantID, r Resource) cedar.EntityUID {
	var typ cedar.EntityType
	switch r.Kind {
	case KindTenant:
		return tenantUID(registry.TenantID(r.ID))
	case KindSubject:
		typ = typSubject
	case KindSite:
		typ = typSite
	case KindDevice:
		typ = typDevice
	case KindStream:
		typ = typStream
	case KindGroup:
		typ = typGroup
	default:
		// Unreachable for checked grants; an unknown type matches nothing.
		typ = "Custos::Invalid"
	}
	return cedar.NewEntityUID(typ, scoped(t, r.ID))
}

// memberRuleID and memberRuleText are the fixed member rule: a member
// reads its own subject's data, raw, for any purpose, at any time.
const (
	memberRuleID   cedar.PolicyID = "rule:member-own-data"
	memberRuleText string         = `permit (
    principal is Custos::Principal,
    action == Custos::Action::"read",
    resource
) when {
    principal.roles.contains("member") &&
    principal has memberOf &&
    resource in principal.memberOf
};`
)

var memberRule = func() *cedar.Policy {
	var p cedar.Policy
	if err := p.UnmarshalCedar([]byte(memberRuleText)); err != nil {
		panic("access: member rule: " + err.Error())
	}
	return &p
}()

// compiled is a grant with its Cedar policy. Immutable.
type compiled struct {
	grant  Grant
	id     cedar.PolicyID
	policy *cedar.Policy
	rank   int
}

func policyID(grantID string) cedar.PolicyID { return cedar.PolicyID("grant:" + grantID) }

// compile turns a checked grant into its permit policy (see the package doc).
func compile(g Grant) *compiled {
	t := g.Tenant
	p := ast.Permit()
	if g.Role != "" {
		p = p.PrincipalIn(cedar.NewEntityUID(typRole, scoped(t, string(g.Role))))
	} else {
		p = p.PrincipalEq(cedar.NewEntityUID(typPrincipal, scoped(t, string(g.Principal))))
	}
	p = p.ActionEq(actionRead).ResourceIn(resourceUID(t, g.Resource))
	ctx := ast.Context()
	purposes := make([]ast.Node, len(g.Purposes))
	for i, pp := range g.Purposes {
		purposes[i] = ast.String(string(pp))
	}
	cond := ast.Resource().In(ast.Value(tenantUID(t))).
		And(ctx.Access("rank").GreaterThanOrEqual(ast.Long(rank(g.Finest)))).
		And(ast.Set(purposes...).Contains(ctx.Access("purpose")))
	if !g.NotBefore.IsZero() {
		cond = cond.And(ctx.Access("now").GreaterThanOrEqual(ast.Long(g.NotBefore.UnixNano())))
	}
	if !g.NotAfter.IsZero() {
		cond = cond.And(ctx.Access("now").LessThan(ast.Long(g.NotAfter.UnixNano())))
	}
	g.Purposes = slices.Clone(g.Purposes) // the caller keeps its slice
	return &compiled{grant: g, id: policyID(g.ID), policy: cedar.NewPolicyFromAST(p.When(cond)), rank: rank(g.Finest)}
}

// grantee is the index key: the grants of one principal or role of one tenant.
type grantee struct {
	tenant    registry.TenantID
	principal PrincipalID
	role      Role
}

func (g Grant) grantee() grantee { return grantee{g.Tenant, g.Principal, g.Role} }

type grantKey struct {
	tenant registry.TenantID
	id     string
}

// Decider holds the grants of every tenant and decides requests. The zero
// value is not usable; call NewDecider. It is safe for concurrent use.
type Decider struct {
	mu      sync.RWMutex
	version uint64
	// sets maps a grantee to its grants. A published slice is never
	// modified: writers replace it (copy on write), so a decision reads a
	// consistent snapshot without holding the lock while Cedar evaluates.
	sets map[grantee][]*compiled
	byID map[grantKey]grantee
	// tenantsOf counts the grants of a principal ID per tenant, so that
	// Explain can show grants that do not apply because of their tenant.
	tenantsOf map[PrincipalID]map[registry.TenantID]int
}

// NewDecider returns a Decider without grants: it denies everything but
// members' reads of their own data.
func NewDecider() *Decider {
	return &Decider{
		sets:      map[grantee][]*compiled{},
		byID:      map[grantKey]grantee{},
		tenantsOf: map[PrincipalID]map[registry.TenantID]int{},
	}
}

// Version returns the version of the grants; every change increments it.
func (d *Decider) Version() uint64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.version
}

// Len returns the number of grants held.
func (d *Decider) Len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.byID)
}

// Add adds a grant. It takes effect on the next decision. The error is of
// kind errs.Invalid for a malformed grant and errs.Exists if its tenant
// already has a grant with that ID.
func (d *Decider) Add(g Grant) error {
	const op = errs.Op("access.Add")
	if err := g.check(op); err != nil {
		return err
	}
	c := compile(g)
	d.mu.Lock()
	defer d.mu.Unlock()
	k := grantKey{g.Tenant, g.ID}
	if _, ok := d.byID[k]; ok {
		return errs.E(op, errs.Exists, fmt.Sprintf("grant %.64q exists in tenant %.64q", g.ID, g.Tenant))
	}
	d.insert(k, c)
	d.version++
	return nil
}

func (d *Decider) insert(k grantKey, c *compiled) {
	ge := c.grant.grantee()
	d.sets[ge] = append(slices.Clip(d.sets[ge]), c)
	d.byID[k] = ge
	if p := c.grant.Principal; p != "" {
		m := d.tenantsOf[p]
		if m == nil {
			m = map[registry.TenantID]int{}
			d.tenantsOf[p] = m
		}
		m[c.grant.Tenant]++
	}
}

// Revoke removes the grant id of tenant t. It takes effect on the next
// decision. The error is of kind errs.NotFound if t has no such grant.
func (d *Decider) Revoke(t registry.TenantID, id string) error {
	const op = errs.Op("access.Revoke")
	d.mu.Lock()
	defer d.mu.Unlock()
	k := grantKey{t, id}
	ge, ok := d.byID[k]
	if !ok {
		return errs.E(op, errs.NotFound, fmt.Sprintf("no grant %.64q in tenant %.64q", id, t))
	}
	old := d.sets[ge]
	i := slices.IndexFunc(old, func(c *compiled) bool { return c.grant.ID == id })
	if len(old) == 1 {
		delete(d.sets, ge)
	} else {
		// A new slice: the old one may be in use by a decision.
		d.sets[ge] = slices.Concat(old[:i], old[i+1:])
	}
	delete(d.byID, k)
	if p := ge.principal; p != "" {
		if m := d.tenantsOf[p]; m != nil {
			if m[t]--; m[t] <= 0 {
				delete(m, t)
			}
			if len(m) == 0 {
				delete(d.tenantsOf, p)
			}
		}
	}
	d.version++
	return nil
}

// Replace replaces all grants with grants, e.g. when loading them from the
// store. It is all or nothing: on error (of kind errs.Invalid or
// errs.Exists) the grants held are unchanged.
func (d *Decider) Replace(grants []Grant) error {
	const op = errs.Op("access.Replace")
	n := NewDecider()
	for _, g := range grants {
		if err := g.check(op); err != nil {
			return err
		}
		k := grantKey{g.Tenant, g.ID}
		if _, ok := n.byID[k]; ok {
			return errs.E(op, errs.Exists, fmt.Sprintf("grant %.64q twice in tenant %.64q", g.ID, g.Tenant))
		}
		n.insert(k, compile(g))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sets, d.byID, d.tenantsOf = n.sets, n.byID, n.tenantsOf
	d.version++
	return nil
}

// ReplaceTenant replaces the grants of tenant t with grants (all of which
// must belong to t), leaving other tenants' grants alone: a replica's
// reload after another replica changed t's grants. It is all or nothing.
func (d *Decider) ReplaceTenant(t registry.TenantID, grants []Grant) error {
	const op = errs.Op("access.ReplaceTenant")
	fresh := make(map[grantKey]*compiled, len(grants))
	for _, g := range grants {
		if err := g.check(op); err != nil {
			return err
		}
		if g.Tenant != t {
			return errs.E(op, errs.Invalid, fmt.Sprintf("grant %.64q belongs to another tenant", g.ID))
		}
		k := grantKey{g.Tenant, g.ID}
		if _, ok := fresh[k]; ok {
			return errs.E(op, errs.Exists, fmt.Sprintf("grant %.64q twice in tenant %.64q", g.ID, g.Tenant))
		}
		fresh[k] = compile(g)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// Copy on write: decisions in flight keep reading the old maps' slices.
	sets := make(map[grantee][]*compiled, len(d.sets))
	for ge, cs := range d.sets {
		if ge.tenant != t {
			sets[ge] = cs
		}
	}
	byID := make(map[grantKey]grantee, len(d.byID))
	for k, ge := range d.byID {
		if k.tenant != t {
			byID[k] = ge
		}
	}
	tenantsOf := make(map[PrincipalID]map[registry.TenantID]int, len(d.tenantsOf))
	for p, m := range d.tenantsOf {
		if _, ok := m[t]; !ok {
			tenantsOf[p] = m
			continue
		}
		if len(m) > 1 {
			m2 := maps.Clone(m)
			delete(m2, t)
			tenantsOf[p] = m2
		}
	}
	d.sets, d.byID, d.tenantsOf = sets, byID, tenantsOf
	for k, c := range fresh {
		d.insert(k, c)
	}
	d.version++
	return nil
}

// snapshot is what one decision reads: the grants of the principal and of
// its roles in the request's tenant, as of one version.
type snapshot struct {
	version uint64
	sets    [][]*compiled
	// member is set if the member rule can apply (the request names a
	// member role and subject); otherwise Cedar is spared evaluating it.
	member bool
}

func (d *Decider) snapshot(req Request) snapshot {
	var s snapshot
	s.sets = make([][]*compiled, 0, 1+len(req.Roles))
	s.member = req.isMember()
	d.mu.RLock()
	defer d.mu.RUnlock()
	s.version = d.version
	if cs := d.sets[grantee{tenant: req.Tenant, principal: req.Principal}]; len(cs) > 0 {
		s.sets = append(s.sets, cs)
	}
	for i, r := range req.Roles {
		if slices.Contains(req.Roles[:i], r) {
			continue
		}
		if cs := d.sets[grantee{tenant: req.Tenant, role: r}]; len(cs) > 0 {
			s.sets = append(s.sets, cs)
		}
	}
	return s
}

// All yields the member rule (if it can apply) and every grant policy of
// the snapshot; it
// makes snapshot a cedar.PolicyIterator.
func (s *snapshot) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		if s.member && !yield(memberRuleID, memberRule) {
			return
		}
		for _, cs := range s.sets {
			for _, c := range cs {
				if !yield(c.id, c.policy) {
					return
				}
			}
		}
	}
}

// rankOf returns the finest rank the policy id grants, or 0 if unknown.
func (s *snapshot) rankOf(id cedar.PolicyID) int {
	if id == memberRuleID {
		return rank(rollup.Raw)
	}
	for _, cs := range s.sets {
		for _, c := range cs {
			if c.id == id {
				return c.rank
			}
		}
	}
	return 0
}

// entities is the request's entity store: the principal and the resource
// path. A linear scan beats a map at this size.
type entities []cedar.Entity

func (es entities) Get(uid cedar.EntityUID) (cedar.Entity, bool) {
	for i := range es {
		if es[i].UID == uid {
			return es[i], true
		}
	}
	return cedar.Entity{}, false
}

// cedarRequest builds the principal and resource entities of a checked
// request and its Cedar request (without context). Entities are immutable
// and the same for every request of a principal and of a path: they come
// from a bounded cache, so a decision allocates less (which is what keeps
// its tail short with many grants in the heap).
func cedarRequest(req Request) (entities, cedar.Request) {
	principal := principalEntity(req)
	target := targetEntity(req)
	return entities{principal, target}, cedar.Request{Principal: principal.UID, Action: actionRead, Resource: target.UID}
}

// entityCacheMax bounds each cache; a full cache starts over.
const entityCacheMax = 1 << 16

type principalKey struct {
	t     registry.TenantID
	p     PrincipalID
	m     registry.SubjectID
	roles uint8 // bit i: Roles[i]
}

type targetKey struct {
	t                   registry.TenantID
	sub, site, dev, str string
	groups              [4]GroupID // paths in more groups are not cached
}

var entityCache struct {
	mu         sync.RWMutex
	principals map[principalKey]cedar.Entity
	targets    map[targetKey]cedar.Entity
}

func cachedEntity[K comparable](m *map[K]cedar.Entity, k K, build func() cedar.Entity) cedar.Entity {
	entityCache.mu.RLock()
	e, ok := (*m)[k]
	entityCache.mu.RUnlock()
	if ok {
		return e
	}
	e = build()
	entityCache.mu.Lock()
	if *m == nil || len(*m) >= entityCacheMax {
		*m = make(map[K]cedar.Entity)
	}
	(*m)[k] = e
	entityCache.mu.Unlock()
	return e
}

// principalEntity is the principal with its roles as parents and the
// attributes the member rule reads.
func principalEntity(req Request) cedar.Entity {
	k := principalKey{t: req.Tenant, p: req.Principal, m: req.MemberOf}
	for _, r := range req.Roles {
		k.roles |= 1 << slices.Index(Roles, r) // checked: every role is in Roles
	}
	return cachedEntity(&entityCache.principals, k, func() cedar.Entity {
		t := req.Tenant
		var roles []cedar.Value
		var roleUIDs []cedar.EntityUID
		for i, r := range Roles {
			if k.roles&(1<<i) != 0 {
				roles = append(roles, cedar.String(r))
				roleUIDs = append(roleUIDs, cedar.NewEntityUID(typRole, scoped(t, string(r))))
			}
		}
		attrs := cedar.RecordMap{"roles": cedar.NewSet(roles...)}
		if req.MemberOf != "" {
			attrs["memberOf"] = resourceUID(t, SubjectResource(req.MemberOf))
		}
		uid := cedar.NewEntityUID(typPrincipal, scoped(t, string(req.Principal)))
		return cedar.Entity{UID: uid, Parents: cedar.NewEntityUIDSet(roleUIDs...), Attributes: cedar.NewRecord(attrs)}
	})
}

// targetEntity is the target, with all its ancestors and groups as direct
// parents: the transitive closure Cedar expects of an entity store, so that
// "resource in X" is one set lookup. The ancestors need no entities of
// their own (they have no attributes, and their parents are here). Paths
// in more than four groups are built every time.
func targetEntity(req Request) cedar.Entity {
	t, p := req.Tenant, req.Resource
	build := func() cedar.Entity {
		ancestors := make([]cedar.EntityUID, 0, 5+len(p.Groups))
		target := tenantUID(t)
		for _, l := range [...]Resource{SubjectResource(p.Subject), SiteResource(p.Site), DeviceResource(p.Device), StreamResource(p.Stream)} {
			if l.ID == "" {
				break
			}
			ancestors = append(ancestors, target)
			target = resourceUID(t, l)
		}
		for _, g := range p.Groups {
			ancestors = append(ancestors, resourceUID(t, GroupResource(g)))
		}
		return cedar.Entity{UID: target, Parents: cedar.NewEntityUIDSet(ancestors...)}
	}
	k := targetKey{t: t, sub: string(p.Subject), site: string(p.Site), dev: string(p.Device), str: string(p.Stream)}
	if len(p.Groups) > len(k.groups) {
		return build()
	}
	copy(k.groups[:], p.Groups)
	return cachedEntity(&entityCache.targets, k, build)
}

func cedarContext(req Request, rank int) cedar.Record {
	return cedar.NewRecord(cedar.RecordMap{
		"rank":    cedar.Long(rank),
		"purpose": cedar.String(req.Purpose),
		"now":     cedar.Long(req.Now.UnixNano()),
	})
}

// Decide answers req. A deny is not an error: the error is non-nil only
// for an invalid request (kind errs.Invalid) or a failed evaluation (kind
// errs.Other), and then the decision denies too. Use Decision.Err for the
// 403 the caller should return.
func (d *Decider) Decide(req Request) (Decision, error) {
	const op = errs.Op("access.Decide")
	if err := req.check(op); err != nil {
		return Decision{Reason: "invalid request"}, err
	}
	s := d.snapshot(req)
	dec, err := s.decide(req)
	if err != nil {
		return dec, errs.E(op, err)
	}
	return dec, nil
}

// decide evaluates a checked request against the snapshot. Cedar decides
// at the requested resolution. If it allows, the finest resolution granted
// is the finest among the policies that allowed (a policy granting a finer
// one would have allowed too). If it denies, the same conditions checked
// in Go (finestInGo) find the finest resolution granted at all, for the
// refusal's message; it must then be coarser than the request, and an
// allow must come with the policies' ranks: Cedar and the Go check must
// agree. Any error or disagreement is a deny.
func (s *snapshot) decide(req Request) (Decision, error) {
	fail := func(msg string) (Decision, error) {
		return Decision{Reason: "evaluation failed", Version: s.version}, errs.E(errs.Other, msg)
	}
	// finestOf returns the finest rank among the policies of reasons.
	finestOf := func(reasons []cedar.DiagnosticReason) (int, error) {
		finest := 0
		for _, r := range reasons {
			k := s.rankOf(r.PolicyID)
			if k == 0 {
				return 0, fmt.Errorf("unknown policy %s", r.PolicyID)
			}
			if finest == 0 || k < finest {
				finest = k
			}
		}
		return finest, nil
	}
	es, creq := cedarRequest(req)
	want, coarsest := rank(req.Resolution), rank(rollup.Month)
	creq.Context = cedarContext(req, want)
	dec, diag := cedar.Authorize(s, es, creq)
	if len(diag.Errors) > 0 {
		return fail(fmt.Sprintf("policy %s: %s", diag.Errors[0].PolicyID, diag.Errors[0].Message))
	}
	allowed, reasons := dec == cedar.Allow, diag.Reasons
	finest, err := finestOf(reasons)
	if err != nil {
		return fail(err.Error())
	}
	if !allowed && want != coarsest {
		// The finest resolution that would be granted, for the refusal's
		// message, from the same conditions in Go: one Cedar evaluation
		// per decision. The check below makes Cedar's answer and this one
		// agree, or the decision fails (closed).
		finest = s.finestInGo(req)
	}
	if allowed != (finest != 0 && finest <= want) || allowed != (len(reasons) > 0) {
		return fail("evaluations disagree")
	}
	out := Decision{Allow: allowed, Version: s.version}
	if finest != 0 {
		out.Finest = byRank[finest]
	}
	switch {
	case allowed:
		ids := make([]string, len(reasons))
		for i, r := range reasons {
			ids[i] = describePolicy(r.PolicyID)
		}
		slices.Sort(ids)
		out.Reason = "allowed by " + strings.Join(ids, ", ")
	case finest != 0:
		out.Reason = "resolution " + string(req.Resolution) + " finer than granted (finest " + string(out.Finest) + ")"
	default:
		out.Reason = "no grant applies (deny by default)"
	}
	return out, nil
}

// finestInGo is the finest rank any policy of the snapshot grants req's
// principal on req's resource for its purpose at its time, whatever the
// resolution: the conditions of compile's policies and of the member rule,
// evaluated in Go. 0 if none.
func (s *snapshot) finestInGo(req Request) int {
	finest := 0
	better := func(k int) {
		if finest == 0 || k < finest {
			finest = k
		}
	}
	if s.member && req.Resource.Subject != "" && req.Resource.Subject == req.MemberOf {
		better(rank(rollup.Raw))
	}
	for _, cs := range s.sets {
		for _, c := range cs {
			g := &c.grant
			if g.Tenant != req.Tenant || !g.Resource.Covers(req.Tenant, req.Resource) || !slices.Contains(g.Purposes, req.Purpose) {
				continue
			}
			if !g.NotBefore.IsZero() && req.Now.UnixNano() < g.NotBefore.UnixNano() {
				continue
			}
			if !g.NotAfter.IsZero() && req.Now.UnixNano() >= g.NotAfter.UnixNano() {
				continue
			}
			better(c.rank)
		}
	}
	return finest
}

func describePolicy(id cedar.PolicyID) string {
	if id == memberRuleID {
		return "member's own data"
	}
	return "grant " + strings.TrimPrefix(string(id), "grant:")
}
