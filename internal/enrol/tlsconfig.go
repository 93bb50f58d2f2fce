package enrol

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/custos-iot/custos/internal/errs"
)

// PinnedClientConfig returns a TLS 1.3 client configuration for enrolment,
// used before the agent has the hub's CA file. It accepts a server only if
// the chain the server presents includes a CA certificate whose Fingerprint
// equals ca, and the leaf verifies against that CA alone for serverName (for
// any name if serverName is empty) with server-auth usage. Use PinnedCA on
// the connection state to obtain the CA certificate to store.
func PinnedClientConfig(ca Fingerprint, serverName string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// The standard verification is replaced, not skipped: VerifyConnection
		// below runs on every handshake, including resumed ones.
		InsecureSkipVerify: true,
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyPinned(cs.PeerCertificates, ca, serverName, cfg)
	}
	return cfg
}

func verifyPinned(chain []*x509.Certificate, ca Fingerprint, serverName string, cfg *tls.Config) error {
	const op errs.Op = "enrol.PinnedClientConfig"
	if len(chain) == 0 {
		return errs.E(op, errs.Unauthenticated, "server presented no certificate")
	}
	root, err := PinnedCA(chain, ca)
	if err != nil {
		return errs.E(op, err)
	}
	leaf := chain[0]
	if leaf.IsCA {
		return errs.E(op, errs.Unauthenticated, "server presented a CA certificate as its leaf")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	opts := x509.VerifyOptions{
		Roots:     roots,
		DNSName:   serverName,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if cfg.Time != nil {
		opts.CurrentTime = cfg.Time()
	}
	if _, err := leaf.Verify(opts); err != nil {
		return errs.E(op, errs.Unauthenticated, errors.New("server certificate does not verify against the pinned CA: "+err.Error()))
	}
	return nil
}

// PinnedCA returns the certificate in chain whose fingerprint is ca, which
// must be a CA certificate. Errors do not name the expected fingerprint.
func PinnedCA(chain []*x509.Certificate, ca Fingerprint) (*x509.Certificate, error) {
	if ca.IsZero() {
		return nil, errs.E(errs.Invalid, "no CA fingerprint pinned")
	}
	for _, c := range chain {
		if FingerprintOf(c) == ca {
			if !c.IsCA || !c.BasicConstraintsValid {
				return nil, errs.E(errs.Unauthenticated, "pinned certificate is not a CA certificate")
			}
			return c, nil
		}
	}
	return nil, errs.E(errs.Unauthenticated, "server chain does not include the pinned CA (wrong hub or wrong token?)")
}

// ClientConfig returns the agent's steady-state mutual-TLS configuration:
// TLS 1.3 only, trusting exactly roots for serverName, presenting the
// certificate getCert returns. getCert is called on every handshake, so a
// renewed certificate applies to new connections without a restart. roots
// and getCert must be non-nil; a nil roots trusts nothing (never the system
// roots).
func ClientConfig(roots *x509.CertPool, serverName string, getCert func() (*tls.Certificate, error)) *tls.Config {
	if roots == nil {
		roots = x509.NewCertPool()
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := getCert()
			if err != nil {
				return nil, err
			}
			if c == nil {
				return nil, errs.E(errs.Op("enrol.ClientConfig"), errs.Unauthenticated, "no client certificate available")
			}
			return c, nil
		},
	}
}
