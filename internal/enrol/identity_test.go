package enrol

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/errs"
)

// certWithURIs returns a parsed self-signed certificate carrying uris as
// URI SANs, written verbatim (as an attacker-controlled CSR or CA might).
func certWithURIs(t *testing.T, uris ...string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Unix(1<<31, 0),
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestIdentityURI(t *testing.T) {
	id := Identity{Tenant: "acme_1", Connector: "plant-7"}
	if got, want := id.URI().String(), "custos://tenant/acme_1/connector/plant-7"; got != want {
		t.Fatalf("URI() = %q, want %q", got, want)
	}
	if err := id.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := IdentityOf(certWithURIs(t, id.URI().String()))
	if err != nil || got != id {
		t.Fatalf("IdentityOf = %+v, %v", got, err)
	}
}

func TestIdentityOf(t *testing.T) {
	long := strings.Repeat("a", 65)
	tests := []struct {
		name string
		uris []string
		want Identity // zero: an error is expected
	}{
		{"ok", []string{"custos://tenant/t1/connector/c1"}, Identity{"t1", "c1"}},
		{"ok max length", []string{"custos://tenant/" + long[:64] + "/connector/C-_9"}, Identity{long[:64], "C-_9"}},
		{"no URI", nil, Identity{}},
		{"two URIs", []string{"custos://tenant/t1/connector/c1", "custos://tenant/t2/connector/c2"}, Identity{}},
		{"custos and spiffe", []string{"custos://tenant/t1/connector/c1", "spiffe://x/y"}, Identity{}},
		{"wrong scheme", []string{"https://tenant/t1/connector/c1"}, Identity{}},
		// crypto/x509 parses URI SANs with url.Parse, which lowers the
		// scheme; what remains is canonical, so this is accepted.
		{"upper case scheme", []string{"CUSTOS://tenant/t1/connector/c1"}, Identity{"t1", "c1"}},
		{"wrong host", []string{"custos://tenants/t1/connector/c1"}, Identity{}},
		{"port", []string{"custos://tenant:1/t1/connector/c1"}, Identity{}},
		{"user info", []string{"custos://u@tenant/t1/connector/c1"}, Identity{}},
		{"query", []string{"custos://tenant/t1/connector/c1?x=1"}, Identity{}},
		{"empty query", []string{"custos://tenant/t1/connector/c1?"}, Identity{}},
		{"fragment", []string{"custos://tenant/t1/connector/c1#f"}, Identity{}},
		{"trailing slash", []string{"custos://tenant/t1/connector/c1/"}, Identity{}},
		{"extra segment", []string{"custos://tenant/t1/connector/c1/x"}, Identity{}},
		{"wrong keyword", []string{"custos://tenant/t1/device/c1"}, Identity{}},
		{"empty tenant", []string{"custos://tenant//connector/c1"}, Identity{}},
		{"empty connector", []string{"custos://tenant/t1/connector/"}, Identity{}},
		{"tenant too long", []string{"custos://tenant/" + long + "/connector/c1"}, Identity{}},
		{"dot in ID", []string{"custos://tenant/t.1/connector/c1"}, Identity{}},
		{"dot-dot tenant", []string{"custos://tenant/../connector/c1"}, Identity{}},
		{"traversal", []string{"custos://tenant/t1/connector/../../tenant/t2/connector/c1"}, Identity{}},
		{"encoded slash", []string{"custos://tenant/t1%2Fx/connector/c1"}, Identity{}},
		{"encoded dot-dot", []string{"custos://tenant/%2e%2e/connector/c1"}, Identity{}},
		{"encoded letter", []string{"custos://tenant/%741/connector/c1"}, Identity{}},
		{"space", []string{"custos://tenant/t%201/connector/c1"}, Identity{}},
		{"unicode", []string{"custos://tenant/t%C3%A91/connector/c1"}, Identity{}},
		{"opaque", []string{"custos:tenant/t1/connector/c1"}, Identity{}},
		{"double slash", []string{"custos://tenant//t1/connector/c1"}, Identity{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := IdentityOf(certWithURIs(t, tt.uris...))
			if tt.want == (Identity{}) {
				if err == nil {
					t.Fatalf("IdentityOf = %+v, want an error", got)
				}
				if !errs.Is(errs.Forbidden, err) {
					t.Errorf("kind = %v, want Forbidden", errs.KindOf(err))
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("IdentityOf = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	if _, err := IdentityOf(nil); err == nil {
		t.Error("IdentityOf(nil): no error")
	}
}

func TestParseIdentityURI(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"custos://tenant/t1/connector/c1", true},
		{"CUSTOS://tenant/t1/connector/c1", false},
		{"custos://TENANT/t1/connector/c1", false},
		{"custos://tenant/t1/connector/c1/", false},
		{"custos://tenant/t1/./connector/c1", false},
		{"custos://tenant/t%31/connector/c1", false},
		{" custos://tenant/t1/connector/c1", false},
		{"", false},
	} {
		id, err := ParseIdentityURI(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseIdentityURI(%q) = %+v, %v; want ok=%v", tt.in, id, err, tt.ok)
		}
	}
}

func TestIdentityValidate(t *testing.T) {
	for _, id := range []Identity{{}, {"t", ""}, {"", "c"}, {"t/1", "c"}, {"t", "c\x00"}, {"t", strings.Repeat("c", 65)}} {
		if err := id.Validate(); !errs.Is(errs.Invalid, err) {
			t.Errorf("Validate(%+v) = %v, want Invalid", id, err)
		}
	}
}
