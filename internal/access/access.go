package access

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// PrincipalID names who asks: a user ("usr_..."), an app ("app_...") or an
// operator API token ("tok_...").
type PrincipalID string

// Valid reports whether p has one of the principal prefixes and something
// after it.
func (p PrincipalID) Valid() bool {
	s := string(p)
	if len(s) <= 4 || len(s) > maxIDLen {
		return false
	}
	switch s[:4] {
	case "usr_", "app_", "tok_":
		return true
	}
	return false
}

// Role is a bundle of grants a principal holds within one tenant.
type Role string

// The roles. Only RoleMember carries access by itself (to its own subject's
// data); the others hold what the grants to the role give them.
const (
	RoleTenantAdmin Role = "tenant-admin"
	RoleOperator    Role = "operator"
	RoleAnalyst     Role = "analyst"
	RoleMember      Role = "member"
	RoleAuditor     Role = "auditor"
	RoleApp         Role = "app"
)

// Roles lists every role. Do not modify it.
var Roles = []Role{RoleTenantAdmin, RoleOperator, RoleAnalyst, RoleMember, RoleAuditor, RoleApp}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool {
	for _, k := range Roles {
		if r == k {
			return true
		}
	}
	return false
}

// Purpose is why data is read, e.g. "monitoring" or "billing".
type Purpose string

// GroupID names a group of streams, devices or sites within a tenant.
type GroupID string

// Kind is the level of a Resource.
type Kind string

// The resource kinds, coarsest first; a group stands beside the hierarchy.
const (
	KindTenant  Kind = "tenant"
	KindSubject Kind = "subject"
	KindSite    Kind = "site"
	KindDevice  Kind = "device"
	KindStream  Kind = "stream"
	KindGroup   Kind = "group"
)

// Resource is what a grant covers: one tenant, subject, site, device,
// stream or group, and (except for a group) everything below it. Build it
// with the constructors, which keep the ID types apart.
type Resource struct {
	Kind Kind
	ID   string
}

// Resource constructors.
func TenantResource(id registry.TenantID) Resource   { return Resource{KindTenant, string(id)} }
func SubjectResource(id registry.SubjectID) Resource { return Resource{KindSubject, string(id)} }
func SiteResource(id registry.SiteID) Resource       { return Resource{KindSite, string(id)} }
func DeviceResource(id registry.DeviceID) Resource   { return Resource{KindDevice, string(id)} }
func StreamResource(id registry.StreamID) Resource   { return Resource{KindStream, string(id)} }
func GroupResource(id GroupID) Resource              { return Resource{KindGroup, string(id)} }

func (r Resource) String() string { return string(r.Kind) + ":" + r.ID }

// Covers reports whether r covers the target of path p in tenant t: r is
// the target or one of its ancestors, or a group the path lists.
func (r Resource) Covers(t registry.TenantID, p Path) bool {
	if r.ID == "" {
		return false
	}
	switch r.Kind {
	case KindTenant:
		return r.ID == string(t)
	case KindSubject:
		return r.ID == string(p.Subject)
	case KindSite:
		return r.ID == string(p.Site)
	case KindDevice:
		return r.ID == string(p.Device)
	case KindStream:
		return r.ID == string(p.Stream)
	case KindGroup:
		for _, g := range p.Groups {
			if string(g) == r.ID {
				return true
			}
		}
	}
	return false
}

// Grant gives a grantee read access to a resource of its tenant.
type Grant struct {
	// ID names the grant; unique within its tenant.
	ID string
	// Tenant owns the grant. It applies to requests of this tenant only.
	Tenant registry.TenantID
	// Principal is the grantee. Exactly one of Principal and Role is set.
	Principal PrincipalID
	// Role, if set, makes every principal holding Role in Tenant the grantee.
	Role Role
	// Resource is what is granted, with everything below it.
	Resource Resource
	// Finest is the finest resolution granted; coarser ones are granted too.
	Finest rollup.Resolution
	// Purposes lists the purposes granted; at least one.
	Purposes []Purpose
	// NotBefore and NotAfter bound the validity: NotBefore <= now < NotAfter.
	// A zero time is an open bound. Non-zero bounds must lie within the
	// years 1678 to 2262 (Unix nanoseconds).
	NotBefore, NotAfter time.Time
}

// Grantee describes the grantee for logs and explanations.
func (g Grant) Grantee() string {
	if g.Role != "" {
		return "role " + string(g.Role)
	}
	return string(g.Principal)
}

const maxIDLen = 256

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func timeOK(t time.Time) bool { return !t.Before(minTime) && !t.After(maxTime) }

func idOK(s string) bool { return s != "" && len(s) <= maxIDLen }

// CheckGrant validates g as Decider.Add does; the error is of kind
// errs.Invalid and names what is wrong.
func CheckGrant(g Grant) error { return g.check("access.CheckGrant") }

// check validates g; the error is of kind errs.Invalid.
func (g Grant) check(op errs.Op) error {
	bad := func(format string, a ...any) error {
		return errs.E(op, errs.Invalid, fmt.Sprintf("grant %.64q: ", g.ID)+fmt.Sprintf(format, a...))
	}
	switch {
	case !idOK(g.ID):
		return bad("ID must be 1-%d bytes", maxIDLen)
	case !idOK(string(g.Tenant)):
		return bad("tenant missing")
	case (g.Principal == "") == (g.Role == ""):
		return bad("exactly one of principal and role must be set")
	case g.Principal != "" && !g.Principal.Valid():
		return bad("principal must start with usr_, app_ or tok_")
	case g.Role != "" && !g.Role.Valid():
		return bad("unknown role %.40q", g.Role)
	case !idOK(g.Resource.ID):
		return bad("resource ID missing")
	case !g.Finest.Valid():
		return bad("invalid finest resolution %.40q", g.Finest)
	case len(g.Purposes) == 0:
		return bad("no purpose granted")
	case !g.NotBefore.IsZero() && !timeOK(g.NotBefore), !g.NotAfter.IsZero() && !timeOK(g.NotAfter):
		return bad("validity outside the years 1678-2262")
	case !g.NotBefore.IsZero() && !g.NotAfter.IsZero() && !g.NotBefore.Before(g.NotAfter):
		return bad("empty validity window")
	}
	switch g.Resource.Kind {
	case KindTenant:
		if g.Resource.ID != string(g.Tenant) {
			return bad("a tenant grant must name its own tenant")
		}
	case KindSubject, KindSite, KindDevice, KindStream, KindGroup:
	default:
		return bad("unknown resource kind %.40q", g.Resource.Kind)
	}
	for _, p := range g.Purposes {
		if !idOK(string(p)) {
			return bad("empty purpose")
		}
	}
	return nil
}

// Path locates what a request reads within its tenant: the target is the
// deepest level set (a stream, or a whole device, site or subject; none
// set means the whole tenant). Every level above the target must be set:
// a stream's device, the device's site, the site's subject. Groups lists
// every group that contains the target or one of its ancestors.
type Path struct {
	Subject registry.SubjectID
	Site    registry.SiteID
	Device  registry.DeviceID
	Stream  registry.StreamID
	Groups  []GroupID
}

// Target returns the resource the path points at in tenant t.
func (p Path) Target(t registry.TenantID) Resource {
	switch {
	case p.Stream != "":
		return StreamResource(p.Stream)
	case p.Device != "":
		return DeviceResource(p.Device)
	case p.Site != "":
		return SiteResource(p.Site)
	case p.Subject != "":
		return SubjectResource(p.Subject)
	}
	return TenantResource(t)
}

// Request asks whether Principal may read Resource in Tenant at Resolution
// for Purpose at Now. The hub fills Roles and MemberOf from the
// authenticated session or token, never from the client's say-so.
type Request struct {
	Tenant    registry.TenantID
	Principal PrincipalID
	// Roles the principal holds in Tenant.
	Roles []Role
	// MemberOf is the subject the principal is, if it holds RoleMember.
	MemberOf registry.SubjectID
	// Resource is the path of what is read.
	Resource   Path
	Resolution rollup.Resolution
	Purpose    Purpose
	// Now is the time of the request; must be set.
	Now time.Time
}

// isMember reports whether the member rule may apply to r.
func (r Request) isMember() bool {
	if r.MemberOf == "" {
		return false
	}
	for _, x := range r.Roles {
		if x == RoleMember {
			return true
		}
	}
	return false
}

// check validates r; the error is of kind errs.Invalid.
func (r Request) check(op errs.Op) error {
	bad := func(msg string) error { return errs.E(op, errs.Invalid, msg) }
	p := r.Resource
	switch {
	case !idOK(string(r.Tenant)):
		return bad("request without tenant")
	case !r.Principal.Valid():
		return bad("request without a valid principal")
	case !r.Resolution.Valid():
		return bad(fmt.Sprintf("unknown resolution %.40q", r.Resolution))
	case !idOK(string(r.Purpose)):
		return bad("request without purpose")
	case r.Now.IsZero() || !timeOK(r.Now):
		return bad("request without a valid time")
	case p.Stream != "" && p.Device == "", p.Device != "" && p.Site == "", p.Site != "" && p.Subject == "":
		return bad("incomplete resource path")
	case len(p.Stream) > maxIDLen, len(p.Device) > maxIDLen, len(p.Site) > maxIDLen,
		len(p.Subject) > maxIDLen, len(r.MemberOf) > maxIDLen:
		return bad("resource ID too long")
	}
	for _, x := range r.Roles {
		if !x.Valid() {
			return bad(fmt.Sprintf("unknown role %.40q", x))
		}
	}
	for _, g := range p.Groups {
		if !idOK(string(g)) {
			return bad("empty or long group ID")
		}
	}
	return nil
}

// Decision is the answer to a Request.
type Decision struct {
	// Allow is true only if some grant or the member rule allows the read.
	Allow bool
	// Finest is the finest resolution the principal could read this
	// resource at for this purpose now; "" if none.
	Finest rollup.Resolution
	// Reason names what decided, e.g. "grant grt_1" or "no grant".
	Reason string
	// Version is the version of the grants the decision read.
	Version uint64
}

// Err returns nil if d allows, else an error of kind errs.Forbidden whose
// message names the finest resolution granted, for the 403 response.
func (d Decision) Err(op errs.Op) error {
	if d.Allow {
		return nil
	}
	if d.Finest == "" {
		return errs.E(op, errs.Forbidden, "no access to this resource for this purpose")
	}
	return errs.E(op, errs.Forbidden, "resolution finer than granted; finest granted: "+string(d.Finest))
}

// rank orders the resolutions as rollup.Finer does: raw 1 (finest) to
// month 5; 0 for an invalid one.
func rank(r rollup.Resolution) int {
	switch r {
	case rollup.Raw:
		return 1
	case rollup.Min15:
		return 2
	case rollup.Hour:
		return 3
	case rollup.Day:
		return 4
	case rollup.Month:
		return 5
	}
	return 0
}

var byRank = [...]rollup.Resolution{1: rollup.Raw, 2: rollup.Min15, 3: rollup.Hour, 4: rollup.Day, 5: rollup.Month}

// joinPurposes renders purposes for reasons.
func joinPurposes(ps []Purpose) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ",")
}
