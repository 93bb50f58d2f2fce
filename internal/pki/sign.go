package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"time"

	"github.com/custos-iot/custos/internal/enrol"
	"github.com/custos-iot/custos/internal/errs"
)

// maxCSR bounds the size of a CSR accepted by Sign.
const maxCSR = 16 << 10

// Sign issues a client certificate for id from a DER-encoded CSR. The CSR's
// signature must verify and its key must be ECDSA P-256/P-384 or Ed25519
// (RSA is refused). Everything else in the CSR (subject, SANs, extensions)
// is ignored: the certificate carries CN=<connector>, exactly one URI SAN
// id.URI(), client-auth usage only, a random 128-bit serial, and is valid
// from now-1m to now+lifetime, which must end within the CA's validity.
//
// A malformed or unacceptable CSR is reported with kind errs.Invalid.
func (a *Authority) Sign(csrDER []byte, id enrol.Identity, lifetime time.Duration) (*x509.Certificate, error) {
	const op errs.Op = "pki.Sign"
	if err := id.Validate(); err != nil {
		return nil, errs.E(op, errs.Invalid, err)
	}
	if lifetime <= 0 {
		return nil, errs.E(op, errs.Invalid, "certificate lifetime must be positive")
	}
	csr, err := CheckCSR(csrDER)
	if err != nil {
		return nil, errs.E(op, err)
	}
	now := a.now()
	notAfter := now.Add(lifetime)
	if notAfter.After(a.ca.NotAfter) {
		return nil, errs.E(op, errs.Invalid, "certificate lifetime would outlast the CA certificate")
	}
	serial, err := randomSerial(a.rand)
	if err != nil {
		return nil, errs.E(op, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id.Connector},
		URIs:                  []*url.URL{id.URI()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(a.rand, tmpl, a.ca, csr.PublicKey, a.caKey)
	if err != nil {
		return nil, errs.E(op, fmt.Errorf("create certificate: %w", err))
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, errs.E(op, fmt.Errorf("parse issued certificate: %w", err))
	}
	return cert, nil
}

// CheckCSR parses a DER-encoded CSR and reports, with kind errs.Invalid,
// why Sign would refuse it (size, encoding, key type, signature). Call it
// before spending anything on a request, such as a single-use enrolment
// token: Sign then fails only for reasons unrelated to the CSR.
func CheckCSR(csrDER []byte) (*x509.CertificateRequest, error) {
	const op errs.Op = "pki.CheckCSR"
	if len(csrDER) == 0 {
		return nil, errs.E(op, errs.Invalid, "empty CSR")
	}
	if len(csrDER) > maxCSR {
		return nil, errs.E(op, errs.Invalid, "CSR too large")
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "malformed CSR: not a DER PKCS#10 certificate request")
	}
	if err := checkCSRKey(csr); err != nil {
		return nil, errs.E(op, errs.Invalid, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, errs.E(op, errs.Invalid, "CSR signature does not verify (corrupted, or not signed by its own key)")
	}
	return csr, nil
}

func checkCSRKey(csr *x509.CertificateRequest) error {
	switch pub := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() && pub.Curve != elliptic.P384() {
			return fmt.Errorf("CSR key uses an unsupported ECDSA curve; use P-256 or P-384")
		}
		return nil
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		return fmt.Errorf("CSR key is RSA, which is not accepted; use ECDSA P-256/P-384 or Ed25519")
	default:
		return fmt.Errorf("CSR key type is not supported; use ECDSA P-256/P-384 or Ed25519")
	}
}
