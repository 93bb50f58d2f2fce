package enrol

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"strings"

	"github.com/custos-iot/custos/internal/errs"
)

// TokenPrefix starts every version-1 enrolment token: "cet" (Custos
// enrolment token), the format version, and an underscore.
const TokenPrefix = "cet1_"

// tokenPayloadLen is the decoded payload: secret || CA fingerprint.
const tokenPayloadLen = 32 + 32

var tokenEncoding = base64.RawURLEncoding.Strict()

// Token is a single-use enrolment token as printed to an operator. It
// carries a 32-byte random secret and pins the hub's CA certificate, so the
// agent can authenticate the hub before it has the CA file.
//
// The hub stores only Hash, never the secret. A Token's String form is a
// credential: do not log it. Tokens logged through log/slog are redacted.
type Token struct {
	Secret [32]byte
	CA     Fingerprint
}

// NewToken returns a token with a fresh secret read from rand, pinning ca.
func NewToken(rand io.Reader, ca Fingerprint) (Token, error) {
	const op errs.Op = "enrol.NewToken"
	if ca.IsZero() {
		return Token{}, errs.E(op, errs.Invalid, "token must pin a CA fingerprint")
	}
	t := Token{CA: ca}
	if _, err := io.ReadFull(rand, t.Secret[:]); err != nil {
		return Token{}, errs.E(op, errs.Other, "reading random secret failed")
	}
	if t.Secret == ([32]byte{}) {
		return Token{}, errs.E(op, errs.Other, "random source returned zeros")
	}
	return t, nil
}

// String returns the token in its compact, URL-safe, copy-pasteable form:
// "cet1_" followed by unpadded base64url of secret || CA fingerprint
// (91 characters in all).
func (t Token) String() string {
	var b [tokenPayloadLen]byte
	copy(b[:32], t.Secret[:])
	copy(b[32:], t.CA[:])
	return TokenPrefix + tokenEncoding.EncodeToString(b[:])
}

// LogValue redacts the secret when a Token is logged with log/slog.
func (t Token) LogValue() slog.Value {
	return slog.StringValue(TokenPrefix + "REDACTED(ca=" + t.CA.String() + ")")
}

// ParseToken parses the form produced by String. Surrounding white space
// (as left by copy and paste) is ignored. Errors say what is wrong and never
// repeat the input.
func ParseToken(s string) (Token, error) {
	const op errs.Op = "enrol.ParseToken"
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, TokenPrefix)
	if !ok {
		if strings.HasPrefix(s, "cet") && len(s) > 3 && s[3] >= '0' && s[3] <= '9' {
			return Token{}, errs.E(op, errs.Invalid, "unsupported enrolment token version (want cet1_)")
		}
		return Token{}, errs.E(op, errs.Invalid, `not an enrolment token (must start with "cet1_")`)
	}
	if len(rest) != tokenEncoding.EncodedLen(tokenPayloadLen) {
		return Token{}, errs.E(op, errs.Invalid, "enrolment token has the wrong length (truncated or extra characters?)")
	}
	var b [tokenPayloadLen]byte
	n, err := tokenEncoding.Decode(b[:], []byte(rest))
	if err != nil || n != tokenPayloadLen {
		return Token{}, errs.E(op, errs.Invalid, "enrolment token contains invalid characters")
	}
	var t Token
	copy(t.Secret[:], b[:32])
	copy(t.CA[:], b[32:])
	if t.CA.IsZero() {
		return Token{}, errs.E(op, errs.Invalid, "enrolment token pins no CA")
	}
	return t, nil
}

// Hash returns the SHA-256 of the secret: what the hub stores and looks
// tokens up by. Compare hashes with crypto/subtle.
func (t Token) Hash() [32]byte {
	return sha256.Sum256(t.Secret[:])
}
