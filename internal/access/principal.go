package access

import (
	"context"
	"net/http"
	"time"

	"github.com/custos-iot/custos/internal/registry"
)

// Principal is an authenticated caller as the hub knows it: who, in which
// tenant, with which roles. Authenticators build it from a verified
// credential (a session, an OAuth2 access token, an operator API token),
// never from what the client says about itself.
type Principal struct {
	ID PrincipalID
	// Tenant is the tenant the credential belongs to. Empty only for the
	// hub's own operator tokens, which manage the platform and read no
	// tenant's data without a grant.
	Tenant registry.TenantID
	// Roles the principal holds in Tenant.
	Roles []Role
	// MemberOf is the data subject the principal is (with RoleMember).
	MemberOf registry.SubjectID
	// Scopes limit what an app's token may do ("read", "read:monitoring",
	// ...); nil for users and operator tokens, whose roles decide.
	Scopes []string
	// Expires is when the credential stops being valid; zero if never.
	Expires time.Time
	// ActingFor is the user ("usr_...") an app's token acts for (issued
	// through the authorization-code flow); empty for a service's token
	// and for every other credential. A read with such a token needs the
	// app's and the user's permission both.
	ActingFor PrincipalID
}

// Has reports whether p holds role r.
func (p Principal) Has(r Role) bool {
	for _, x := range p.Roles {
		if x == r {
			return true
		}
	}
	return false
}

// Authenticator turns a request's credential into a Principal. It returns
// ok false (and no error) if the request carries no credential of its kind,
// so that the next authenticator may try; an error if it carries one that
// is not valid (expired, revoked, tampered), which fails the request closed.
type Authenticator interface {
	Authenticate(ctx context.Context, r *http.Request) (p Principal, ok bool, err error)
}
