package identity

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// User is a person who logs in to the hub, in one tenant.
type User struct {
	// ID is the user's principal ID, "usr_...".
	ID access.PrincipalID `json:"id"`
	// Tenant the user belongs to; a user is never seen by another tenant.
	Tenant registry.TenantID `json:"tenant"`
	// Name is the login name, unique in the tenant (see CheckName).
	Name string `json:"name"`
	// Roles the user holds in Tenant.
	Roles []access.Role `json:"roles"`
	// MemberOf is the data subject the user is, for RoleMember; optional.
	MemberOf registry.SubjectID `json:"member_of,omitempty"`
	// Issuer and ExternalID link the user to an account at an OpenID
	// Connect provider (the ID token's iss and sub); empty if none.
	Issuer     string `json:"oidc_issuer,omitempty"`
	ExternalID string `json:"oidc_subject,omitempty"`
	// PasswordHash is the argon2id PHC string; empty if the user has no
	// local password. Never serialised.
	PasswordHash string `json:"-"`
	// HasPassword tells API callers whether a local password is set.
	HasPassword bool      `json:"has_password"`
	Created     time.Time `json:"created"`
	// Disabled is when the user was disabled; zero if active.
	Disabled time.Time `json:"disabled,omitzero"`
}

// Principal is the access principal of u.
func (u User) Principal(expires time.Time) access.Principal {
	return access.Principal{ID: u.ID, Tenant: u.Tenant, Roles: append([]access.Role(nil), u.Roles...), MemberOf: u.MemberOf, Expires: expires}
}

// CheckName validates a login name: 1-64 characters of lower-case letters,
// digits and . _ - @ + (an e-mail address fits). Login names are compared
// as given; callers lower-case them first (NormalName).
func CheckName(name string) error {
	if name == "" || len(name) > 64 {
		return errs.E(errs.Invalid, "login name must be 1-64 characters")
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', strings.ContainsRune("._-@+", c):
		default:
			return errs.E(errs.Invalid, "login name may hold only lower-case letters, digits and . _ - @ +")
		}
	}
	return nil
}

// NormalName lower-cases and trims a login name as typed.
func NormalName(name string) string { return strings.ToLower(strings.TrimSpace(name)) }

// CheckRoles validates a set of roles: each must be known, none repeated.
func CheckRoles(rs []access.Role) error {
	seen := map[access.Role]bool{}
	for _, r := range rs {
		if !r.Valid() {
			return errs.E(errs.Invalid, fmt.Sprintf("unknown role %.40q", r))
		}
		if r == access.RoleApp {
			return errs.E(errs.Invalid, "role app is for OAuth2 apps, not users")
		}
		if seen[r] {
			return errs.E(errs.Invalid, fmt.Sprintf("role %s given twice", r))
		}
		seen[r] = true
	}
	return nil
}

// JoinRoles and SplitRoles convert roles to and from their stored form.
func JoinRoles(rs []access.Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ",")
}

// SplitRoles is the inverse of JoinRoles.
func SplitRoles(s string) []access.Role {
	if s == "" {
		return []access.Role{}
	}
	var out []access.Role
	for _, r := range strings.Split(s, ",") {
		out = append(out, access.Role(r))
	}
	return out
}

func validUTF8(s string) bool { return utf8.ValidString(s) }
