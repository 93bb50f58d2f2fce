package enrol

import (
	"crypto/x509"
	"net/url"
	"strings"

	"github.com/custos-iot/custos/internal/errs"
)

// The form of a connector identity URI:
//
//	custos://tenant/<tenant>/connector/<connector>
//
// where both IDs match [A-Za-z0-9_-]{1,64}. The URI is parsed strictly: no
// user info, port, query, fragment, percent-encoding, dot segments or
// trailing slash; the string must equal the one Identity.URI produces.
const (
	identityScheme = "custos"
	identityHost   = "tenant"
	maxIDLen       = 64
)

// Identity is what a connector certificate asserts: the connector and the
// tenant it belongs to. Both are opaque IDs matching [A-Za-z0-9_-]{1,64}.
type Identity struct {
	Tenant    string
	Connector string
}

// Validate reports whether both IDs are well formed.
func (id Identity) Validate() error {
	const op errs.Op = "enrol.Identity"
	if !validID(id.Tenant) {
		return errs.E(op, errs.Invalid, "tenant ID must match [A-Za-z0-9_-]{1,64}")
	}
	if !validID(id.Connector) {
		return errs.E(op, errs.Invalid, "connector ID must match [A-Za-z0-9_-]{1,64}")
	}
	return nil
}

// URI returns custos://tenant/<tenant>/connector/<connector>. It does not
// validate id; call Validate first when id comes from outside.
func (id Identity) URI() *url.URL {
	return &url.URL{
		Scheme: identityScheme,
		Host:   identityHost,
		Path:   "/" + id.Tenant + "/connector/" + id.Connector,
	}
}

// String returns the URI form of id.
func (id Identity) String() string { return id.URI().String() }

// IdentityOf returns the identity asserted by cert, which must carry exactly
// one URI SAN, a strictly well-formed custos:// identity URI. It does not
// verify cert: call it only on a certificate whose chain has been verified.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	const op errs.Op = "enrol.IdentityOf"
	switch {
	case cert == nil:
		return Identity{}, errs.E(op, errs.Unauthenticated, "no certificate")
	case len(cert.URIs) == 0:
		return Identity{}, errs.E(op, errs.Forbidden, "certificate has no custos identity URI")
	case len(cert.URIs) > 1:
		return Identity{}, errs.E(op, errs.Forbidden, "certificate has more than one URI SAN")
	}
	id, err := identityFromURL(cert.URIs[0])
	if err != nil {
		return Identity{}, errs.E(op, errs.Forbidden, err)
	}
	return id, nil
}

// ParseIdentityURI parses the string form of an identity URI, strictly.
func ParseIdentityURI(s string) (Identity, error) {
	const op errs.Op = "enrol.ParseIdentityURI"
	if len(s) > 256 {
		return Identity{}, errs.E(op, errs.Invalid, "identity URI too long")
	}
	u, err := url.Parse(s)
	if err != nil {
		return Identity{}, errs.E(op, errs.Invalid, "identity URI does not parse")
	}
	id, err := identityFromURL(u)
	if err != nil {
		return Identity{}, errs.E(op, errs.Invalid, err)
	}
	if id.URI().String() != s {
		return Identity{}, errs.E(op, errs.Invalid, "identity URI is not in canonical form")
	}
	return id, nil
}

// identityFromURL checks every component of u and accepts only the exact
// form Identity.URI produces.
func identityFromURL(u *url.URL) (Identity, error) {
	if u == nil {
		return Identity{}, errs.E(errs.Invalid, "no identity URI")
	}
	if u.Scheme != identityScheme {
		return Identity{}, errs.E(errs.Invalid, "identity URI scheme must be custos")
	}
	if u.Opaque != "" || u.User != nil || u.Host != identityHost || u.RawPath != "" ||
		u.ForceQuery || u.RawQuery != "" || u.Fragment != "" || u.RawFragment != "" || u.OmitHost {
		return Identity{}, errs.E(errs.Invalid, "identity URI must be custos://tenant/<tenant>/connector/<connector>")
	}
	parts := strings.Split(u.Path, "/")
	if len(parts) != 4 || parts[0] != "" || parts[2] != "connector" {
		return Identity{}, errs.E(errs.Invalid, "identity URI must be custos://tenant/<tenant>/connector/<connector>")
	}
	id := Identity{Tenant: parts[1], Connector: parts[3]}
	if err := id.Validate(); err != nil {
		return Identity{}, errs.E(errs.Invalid, err)
	}
	// Belt and braces: the URL must re-serialise to exactly the canonical form.
	if u.String() != id.URI().String() {
		return Identity{}, errs.E(errs.Invalid, "identity URI is not in canonical form")
	}
	return id, nil
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
