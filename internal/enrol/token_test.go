package enrol

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/errs"
)

// testFP is an arbitrary non-zero fingerprint.
var testFP = Fingerprint(sha256.Sum256([]byte("test CA")))

// counter is a deterministic io.Reader: bytes n, n+1, n+2, ...
type counter byte

func (c *counter) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(*c)
		*c++
	}
	return len(p), nil
}

func TestTokenRoundTrip(t *testing.T) {
	c := counter(1)
	tok, err := NewToken(&c, testFP)
	if err != nil {
		t.Fatal(err)
	}
	s := tok.String()
	if !strings.HasPrefix(s, TokenPrefix) || len(s) != 91 {
		t.Fatalf("String() = %q (len %d), want cet1_ and 91 characters", s, len(s))
	}
	if strings.ContainsAny(s, "+/= \n") {
		t.Fatalf("String() = %q is not URL-safe and unpadded", s)
	}
	got, err := ParseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	if got != tok {
		t.Fatalf("round trip: got %+v, want %+v", got, tok)
	}
	if got, err := ParseToken("  " + s + "\n"); err != nil || got != tok {
		t.Fatalf("ParseToken with surrounding space = %v, %v", got, err)
	}
	if tok.Hash() != sha256.Sum256(tok.Secret[:]) {
		t.Fatal("Hash is not SHA-256 of the secret")
	}
}

func TestTokenHashDiffers(t *testing.T) {
	c := counter(0)
	a, err := NewToken(&c, testFP)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewToken(&c, testFP)
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash() == b.Hash() {
		t.Fatal("two tokens have the same hash")
	}
	if a.Hash() == a.Secret {
		t.Fatal("Hash returned the secret")
	}
}

func TestNewTokenErrors(t *testing.T) {
	c := counter(1)
	if _, err := NewToken(&c, Fingerprint{}); !errs.Is(errs.Invalid, err) {
		t.Errorf("zero fingerprint: err = %v, want Invalid", err)
	}
	if _, err := NewToken(bytes.NewReader(make([]byte, 10)), testFP); err == nil {
		t.Error("short random source: no error")
	}
	if _, err := NewToken(bytes.NewReader(make([]byte, 32)), testFP); err == nil {
		t.Error("all-zero secret: no error")
	}
}

func TestTokenLogValueRedacts(t *testing.T) {
	c := counter(7)
	tok, _ := NewToken(&c, testFP)
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("enrol", "token", tok)
	if strings.Contains(buf.String(), tok.String()[len(TokenPrefix):len(TokenPrefix)+20]) {
		t.Fatalf("log line contains the secret: %s", buf.String())
	}
}

func TestParseTokenErrors(t *testing.T) {
	c := counter(9)
	tok, _ := NewToken(&c, testFP)
	good := tok.String()
	body := good[len(TokenPrefix):]
	zeroCA := Token{Secret: tok.Secret}.String()

	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "not an enrolment token"},
		{"wrong prefix", "xyz1_" + body, "not an enrolment token"},
		{"no prefix", body, "not an enrolment token"},
		{"future version", "cet2_" + body, "unsupported enrolment token version"},
		{"upper case prefix", "CET1_" + body, "not an enrolment token"},
		{"truncated", good[:len(good)-1], "wrong length"},
		{"extra character", good + "A", "wrong length"},
		{"padded", good[:len(good)-2] + "==", "invalid characters"},
		{"standard base64", good[:20] + "+" + good[21:], "invalid characters"},
		{"non-canonical last char", good[:len(good)-1] + flipLowBits(good[len(good)-1]), "invalid characters"},
		{"inner space", good[:30] + " " + good[31:], "invalid characters"},
		{"inner newline", good[:30] + "\n" + good[31:], "invalid characters"},
		{"zero CA", zeroCA, "pins no CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseToken(tt.in)
			if err == nil {
				t.Fatal("no error")
			}
			if !errs.Is(errs.Invalid, err) {
				t.Errorf("kind = %v, want Invalid", errs.KindOf(err))
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not say %q", msg, tt.want)
			}
			if len(body) > 8 && strings.Contains(msg, body[:8]) || tt.in != "" && strings.Contains(msg, tt.in) {
				t.Errorf("error %q echoes the token", msg)
			}
		})
	}
}

// flipLowBits returns the base64url character whose value differs from c's
// only in the low bits, which the last character of a 64-byte payload must
// leave zero.
func flipLowBits(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i^1])
}

func TestFingerprint(t *testing.T) {
	s := testFP.String()
	if !strings.HasPrefix(s, "sha256:") || len(s) != 7+64 || strings.ToLower(s) != s {
		t.Fatalf("String() = %q", s)
	}
	got, err := ParseFingerprint(s)
	if err != nil || got != testFP {
		t.Fatalf("round trip = %v, %v", got, err)
	}
	if got, err := ParseFingerprint("sha256:" + strings.ToUpper(s[7:])); err != nil || got != testFP {
		t.Fatalf("upper-case hex = %v, %v", got, err)
	}
	for _, in := range []string{"", s[7:], "sha1:" + s[7:], s[:len(s)-1], s + "0", s[:len(s)-1] + "g", "SHA256:" + s[7:]} {
		if _, err := ParseFingerprint(in); !errs.Is(errs.Invalid, err) {
			t.Errorf("ParseFingerprint(%q) err = %v, want Invalid", in, err)
		}
	}
	var e *errs.Error
	if _, err := ParseFingerprint("x"); !errors.As(err, &e) {
		t.Error("error is not an *errs.Error")
	}
}
