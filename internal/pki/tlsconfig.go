package pki

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/custos-iot/custos/internal/enrol"
	"github.com/custos-iot/custos/internal/errs"
)

// DeviceTLSConfig returns the device endpoint's server configuration: TLS 1.3
// only, a client certificate required and verified against the CA (with
// client-auth usage, at the Authority's clock), the hub's server certificate,
// and a VerifyConnection hook that extracts the connector's enrol.Identity
// and, if check is non-nil, refuses the handshake when check returns an
// error (e.g. a revoked connector). The hook runs on resumed sessions too.
func (a *Authority) DeviceTLSConfig(check func(enrol.Identity, *x509.Certificate) error) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: a.serverCertificate,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      a.Pool(),
		Time:           a.now,
		VerifyConnection: func(cs tls.ConnectionState) error {
			const op errs.Op = "pki.DeviceTLS"
			if len(cs.PeerCertificates) == 0 {
				return errs.E(op, errs.Unauthenticated, "no client certificate")
			}
			leaf := cs.PeerCertificates[0]
			id, err := enrol.IdentityOf(leaf)
			if err != nil {
				return errs.E(op, err)
			}
			if check != nil {
				if err := check(id, leaf); err != nil {
					return errs.E(op, errs.Forbidden, err)
				}
			}
			return nil
		},
	}
}

// APITLSConfig returns the API and enrolment endpoint's server
// configuration: the hub's server certificate, TLS 1.2 or later (1.3 is
// preferred by negotiation), Go's default cipher suites, no client
// certificates.
func (a *Authority) APITLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: a.serverCertificate,
		Time:           a.now,
	}
}

func (a *Authority) serverCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return a.server.Load(), nil
}
