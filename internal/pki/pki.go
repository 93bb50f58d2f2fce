// Package pki is the hub's device certificate authority. It owns the CA key
// and certificate, the hub's TLS server certificate, issuing short-lived
// client certificates to enrolled connectors, and the TLS server
// configurations of the device and API endpoints.
//
// pki MUST NOT be imported by the edge agent (cmd/custos-agent,
// internal/agent): the agent never links the signing side. What agent and
// hub share about identity lives in internal/enrol, which pki imports and
// which must never import pki. Errors built here never carry key material.
package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/custos-iot/custos/internal/enrol"
	"github.com/custos-iot/custos/internal/errs"
)

// File names inside Config.Dir.
const (
	caCertFile     = "ca.pem"
	caKeyFile      = "ca.key"
	serverCertFile = "server.pem"
	serverKeyFile  = "server.key"
)

const (
	caLifetime     = 10 * 365 * 24 * time.Hour
	serverLifetime = 90 * 24 * time.Hour
	// backdate covers small clock differences between hub and devices.
	backdate = time.Minute
	pemCert  = "CERTIFICATE"
	maxPEM   = 1 << 20
)

// Config configures Open.
type Config struct {
	// Dir holds ca.pem, ca.key (0600), server.pem and server.key (0600).
	// It is created with mode 0700 if missing. Required.
	Dir string
	// Names are the DNS names and IP addresses of the hub's server
	// certificate. Default: localhost, 127.0.0.1, ::1.
	Names []string
	// Now is the clock for issuing and for verifying client certificates.
	// Default: time.Now.
	Now func() time.Time
	// Rand is the source of serial numbers. Default: crypto/rand.Reader.
	// (Since Go 1.26 key generation and ECDSA signing always use a secure
	// source; see testing/cryptotest for deterministic tests.)
	Rand io.Reader
}

// Authority is the hub's device CA. It is safe for concurrent use; only
// the server certificate changes after Open (see RefreshServer).
type Authority struct {
	dir    string
	now    func() time.Time
	rand   io.Reader
	ca     *x509.Certificate
	caKey  crypto.Signer
	caPEM  []byte
	fp     enrol.Fingerprint
	pool   *x509.CertPool
	server atomic.Pointer[tls.Certificate]
	dns    []string
	ips    []net.IP
}

// Open loads the CA from cfg.Dir, creating it on first start (ECDSA P-256,
// 10-year validity, path length 0), and (re)issues the server certificate if
// it is missing, does not match the CA or its key, has less than a third of
// its 90-day lifetime left, or names other than cfg.Names.
//
// Key files are created 0600, atomically and exclusively: two Opens racing on
// an empty directory end up with the same CA. An existing key file readable
// by group or others is refused. A long-running hub calls RefreshServer
// periodically to renew the server certificate in place.
func Open(cfg Config) (*Authority, error) {
	const op errs.Op = "pki.Open"
	if cfg.Dir == "" {
		return nil, errs.E(op, errs.Invalid, "Config.Dir is required")
	}
	a := &Authority{dir: cfg.Dir, now: cfg.Now, rand: cfg.Rand}
	if a.now == nil {
		a.now = time.Now
	}
	if a.rand == nil {
		a.rand = rand.Reader
	}
	names := cfg.Names
	if len(names) == 0 {
		names = []string{"localhost", "127.0.0.1", "::1"}
	}
	dnsNames, ips, err := parseNames(names)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, errs.E(op, fmt.Errorf("create %s: %w", cfg.Dir, err))
	}
	if err := a.loadOrCreateCA(); err != nil {
		return nil, errs.E(op, err)
	}
	a.dns, a.ips = dnsNames, ips
	if err := a.loadOrIssueServer(dnsNames, ips); err != nil {
		return nil, errs.E(op, err)
	}
	return a, nil
}

// RefreshServer reissues the server certificate if it is due (under a
// third of its lifetime left). TLS configurations from this Authority
// present the new certificate on their next handshake.
func (a *Authority) RefreshServer() error {
	if err := a.loadOrIssueServer(a.dns, a.ips); err != nil {
		return errs.E(errs.Op("pki.RefreshServer"), err)
	}
	return nil
}

func (a *Authority) path(name string) string { return filepath.Join(a.dir, name) }

func (a *Authority) loadOrCreateCA() error {
	key, err := enrol.LoadOrCreateKey(a.path(caKeyFile), a.rand)
	if err != nil {
		return err
	}
	certPath := a.path(caCertFile)
	cert, err := readCert(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		// No certificate yet: whoever won the key race, the key on disk is
		// the CA key. Any certificate for it that reached disk first wins.
		der, cerr := a.selfSign(key)
		if cerr != nil {
			return cerr
		}
		werr := writeFile(certPath, pemEncode(der), 0o644, true)
		if werr != nil && !errors.Is(werr, fs.ErrExist) {
			return werr
		}
		cert, err = readCert(certPath)
	}
	if err != nil {
		return err
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errs.E(errs.Integrity, fmt.Sprintf("%s is not a CA certificate", certPath))
	}
	if !publicKeyEqual(cert.PublicKey, key.Public()) {
		return errs.E(errs.Integrity, fmt.Sprintf("%s does not match %s", certPath, a.path(caKeyFile)))
	}
	if now := a.now(); now.After(cert.NotAfter) {
		return errs.E(errs.Conflict, fmt.Sprintf("CA certificate %s expired on %s; CA rollover is not supported yet",
			certPath, cert.NotAfter.UTC().Format(time.RFC3339)))
	}
	a.ca, a.caKey = cert, key
	a.caPEM = pemEncode(cert.Raw)
	a.fp = enrol.FingerprintOf(cert)
	a.pool = x509.NewCertPool()
	a.pool.AddCert(cert)
	return nil
}

func (a *Authority) selfSign(key crypto.Signer) ([]byte, error) {
	serial, err := randomSerial(a.rand)
	if err != nil {
		return nil, err
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Custos device CA", Organization: []string{"Custos"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(a.rand, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	return der, nil
}

func (a *Authority) loadOrIssueServer(dnsNames []string, ips []net.IP) error {
	keyPath, certPath := a.path(serverKeyFile), a.path(serverCertFile)
	key, err := enrol.LoadOrCreateKey(keyPath, a.rand)
	if err != nil {
		return err
	}
	cert, err := readCert(certPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && errs.KindOf(err) != errs.Integrity {
		return err
	}
	if err != nil || a.needsReissue(cert, key, dnsNames, ips) {
		der, err := a.issueServer(key, dnsNames, ips)
		if err != nil {
			return err
		}
		if err := writeFile(certPath, append(pemEncode(der), a.caPEM...), 0o644, false); err != nil {
			return err
		}
		if cert, err = x509.ParseCertificate(der); err != nil {
			return fmt.Errorf("parse new server certificate: %w", err)
		}
	}
	a.server.Store(&tls.Certificate{
		Certificate: [][]byte{cert.Raw, a.ca.Raw},
		PrivateKey:  key,
		Leaf:        cert,
	})
	return nil
}

// needsReissue reports whether the stored server certificate must be
// replaced.
func (a *Authority) needsReissue(cert *x509.Certificate, key crypto.Signer, dnsNames []string, ips []net.IP) bool {
	now := a.now()
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	switch {
	case cert.CheckSignatureFrom(a.ca) != nil:
		return true
	case !publicKeyEqual(cert.PublicKey, key.Public()):
		return true
	case now.Before(cert.NotBefore), cert.NotAfter.Sub(now) < lifetime/3:
		return true
	case !slices.Equal(nameSet(cert.DNSNames, cert.IPAddresses), nameSet(dnsNames, ips)):
		return true
	}
	return false
}

func (a *Authority) issueServer(key crypto.Signer, dnsNames []string, ips []net.IP) ([]byte, error) {
	serial, err := randomSerial(a.rand)
	if err != nil {
		return nil, err
	}
	now := a.now()
	notAfter := now.Add(serverLifetime)
	if notAfter.After(a.ca.NotAfter) {
		notAfter = a.ca.NotAfter
	}
	cn := "custos hub"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              dnsNames,
		IPAddresses:           ips,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(a.rand, tmpl, a.ca, key.Public(), a.caKey)
	if err != nil {
		return nil, fmt.Errorf("create server certificate: %w", err)
	}
	return der, nil
}

// CA returns the CA certificate. Callers must not modify it.
func (a *Authority) CA() *x509.Certificate { return a.ca }

// CAPEM returns the CA certificate in PEM form, as agents store it.
func (a *Authority) CAPEM() []byte { return bytes.Clone(a.caPEM) }

// Fingerprint returns the CA certificate's fingerprint, as pinned by
// enrolment tokens.
func (a *Authority) Fingerprint() enrol.Fingerprint { return a.fp }

// Pool returns a new pool holding only the CA certificate.
func (a *Authority) Pool() *x509.CertPool { return a.pool.Clone() }

// ServerCertificate returns the hub's TLS server certificate with its chain
// (leaf, CA). Callers must not modify it.
func (a *Authority) ServerCertificate() *tls.Certificate { return a.server.Load() }

// parseNames splits names into DNS names and IP addresses, in canonical
// form (lower case, no trailing dot).
func parseNames(names []string) ([]string, []net.IP, error) {
	var dnsNames []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
			continue
		}
		d := strings.TrimSuffix(strings.ToLower(n), ".")
		if !validDNSName(d) {
			return nil, nil, fmt.Errorf("server name %q is neither an IP address nor a DNS name", n)
		}
		dnsNames = append(dnsNames, d)
	}
	return dnsNames, ips, nil
}

func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || (c == '*' && label == "*")) {
				return false
			}
		}
	}
	return true
}

// nameSet returns the sorted, deduplicated canonical names.
func nameSet(dnsNames []string, ips []net.IP) []string {
	set := make([]string, 0, len(dnsNames)+len(ips))
	for _, d := range dnsNames {
		set = append(set, strings.ToLower(d))
	}
	for _, ip := range ips {
		set = append(set, ip.String())
	}
	slices.Sort(set)
	return slices.Compact(set)
}

// readCert reads the first certificate of a PEM file. A missing file is
// reported with fs.ErrNotExist; a malformed one with kind Integrity.
func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxPEM {
		return nil, errs.E(errs.Integrity, fmt.Sprintf("%s is too large", path))
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemCert {
		return nil, errs.E(errs.Integrity, fmt.Sprintf("%s holds no PEM certificate", path))
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, errs.E(errs.Integrity, fmt.Sprintf("%s: malformed certificate", path))
	}
	return cert, nil
}

func pemEncode(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: der})
}

// randomSerial returns a uniformly random, non-zero 128-bit serial number.
func randomSerial(r io.Reader) (*big.Int, error) {
	var b [16]byte
	for range 4 {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("read random serial: %w", err)
		}
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
	return nil, errors.New("random source returned zeros")
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}
