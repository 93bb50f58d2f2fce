package enrol

import (
	"strings"
	"testing"
)

// FuzzParseToken checks that ParseToken never panics, that whatever it
// accepts round-trips byte for byte (modulo surrounding space), and that
// its errors never echo the input. Seeds: testdata/fuzz/FuzzParseToken.
func FuzzParseToken(f *testing.F) {
	good := Token{Secret: [32]byte{1, 2, 3}, CA: Fingerprint{4, 5, 6}}.String()
	for _, s := range []string{good, "", "cet1_", "cet2_" + good[5:], good[:50], good + "=", " " + good + " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if len(s) >= 6 && strings.Contains(err.Error(), s) {
				t.Fatalf("error %q echoes the input", err)
			}
			return
		}
		if got := tok.String(); got != strings.TrimSpace(s) {
			t.Fatalf("ParseToken(%q).String() = %q", s, got)
		}
		if tok.CA.IsZero() {
			t.Fatal("accepted a token pinning no CA")
		}
	})
}

// FuzzParseIdentityURI checks that the strict identity URI parser never
// panics and that whatever it accepts is a valid identity whose URI is
// exactly the input.
func FuzzParseIdentityURI(f *testing.F) {
	for _, s := range []string{
		"custos://tenant/t1/connector/c1",
		"custos://tenant/../connector/c1",
		"custos://tenant/t%2F1/connector/c1",
		"custos://u@tenant:1/t1/connector/c1?q#f",
		"custos:opaque",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentityURI(s)
		if err != nil {
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("accepted invalid identity %+v: %v", id, err)
		}
		if got := id.URI().String(); got != s {
			t.Fatalf("ParseIdentityURI(%q) = %+v, whose URI is %q", s, id, got)
		}
		if u := id.URI(); u.Path != "/"+id.Tenant+"/connector/"+id.Connector || strings.Contains(u.Path, "..") {
			t.Fatalf("unexpected path %q", u.Path)
		}
	})
}
