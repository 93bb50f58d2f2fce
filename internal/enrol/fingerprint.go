package enrol

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"strings"

	"github.com/custos-iot/custos/internal/errs"
)

// fingerprintPrefix names the hash in a Fingerprint's string form.
const fingerprintPrefix = "sha256:"

// Fingerprint is the SHA-256 of a certificate's DER encoding.
type Fingerprint [32]byte

// FingerprintOf returns the fingerprint of cert.
func FingerprintOf(cert *x509.Certificate) Fingerprint {
	return sha256.Sum256(cert.Raw)
}

// String returns "sha256:" followed by 64 lowercase hex digits.
func (f Fingerprint) String() string {
	return fingerprintPrefix + hex.EncodeToString(f[:])
}

// IsZero reports whether f is the zero fingerprint (pins nothing).
func (f Fingerprint) IsZero() bool { return f == Fingerprint{} }

// ParseFingerprint parses the form produced by String. Hex digits may be
// upper or lower case.
func ParseFingerprint(s string) (Fingerprint, error) {
	const op errs.Op = "enrol.ParseFingerprint"
	var f Fingerprint
	rest, ok := strings.CutPrefix(s, fingerprintPrefix)
	if !ok {
		return f, errs.E(op, errs.Invalid, `fingerprint must start with "sha256:"`)
	}
	if len(rest) != hex.EncodedLen(len(f)) {
		return f, errs.E(op, errs.Invalid, "fingerprint must have 64 hex digits")
	}
	if _, err := hex.Decode(f[:], []byte(rest)); err != nil {
		return Fingerprint{}, errs.E(op, errs.Invalid, "fingerprint is not valid hex")
	}
	return f, nil
}
