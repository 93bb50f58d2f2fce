package opcua

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Files in StateDir/opcua.
const (
	appCertName = "agent-cert.pem"
	appKeyName  = "agent-key.pem"
)

// ErrServerCertMismatch means the server presented a certificate other
// than the pinned (or first-trusted) one. The source keeps refusing, and
// retrying, until the operator pins the new certificate or deletes the
// trusted-on-first-use file.
var ErrServerCertMismatch = errors.New("opcua: server certificate differs from the pinned one")

// loadOrCreateAppCert returns the application certificate (DER) and key:
// from certFile and keyFile if given, else from stateDir/opcua, generating
// them there on first use.
func loadOrCreateAppCert(certFile, keyFile, stateDir string) ([]byte, *rsa.PrivateKey, error) {
	generate := false
	if certFile == "" {
		dir := filepath.Join(stateDir, "opcua")
		certFile, keyFile = filepath.Join(dir, appCertName), filepath.Join(dir, appKeyName)
		_, errC := os.Stat(certFile)
		_, errK := os.Stat(keyFile)
		switch {
		case errors.Is(errC, fs.ErrNotExist) && errors.Is(errK, fs.ErrNotExist):
			generate = true
		case errors.Is(errC, fs.ErrNotExist) || errors.Is(errK, fs.ErrNotExist):
			return nil, nil, fmt.Errorf("only one of %s and %s exists: restore the other or remove both to generate a new application certificate", certFile, keyFile)
		}
		if generate {
			if err := generateAppCert(dir, certFile, keyFile); err != nil {
				return nil, nil, err
			}
		}
	}
	cert, err := readCert(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("application certificate: %w", err)
	}
	key, err := readKey(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("application key: %w", err)
	}
	c, err := x509.ParseCertificate(cert)
	if err != nil {
		return nil, nil, fmt.Errorf("application certificate %s: %w", certFile, err)
	}
	if pub, ok := c.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, fmt.Errorf("application certificate %s does not match key %s", certFile, keyFile)
	}
	if len(c.URIs) == 0 {
		return nil, nil, fmt.Errorf("application certificate %s has no application URI (URI SAN)", certFile)
	}
	return cert, key, nil
}

// generateAppCert writes a new RSA 2048 key (mode 0600) and a self-signed
// application instance certificate valid for ten years.
func generateAppCert(dir, certFile, keyFile string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	uri := &url.URL{Scheme: "urn", Opaque: "custos-agent:" + url.PathEscape(host)}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "custos-agent", Organization: []string{"Custos"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
		DNSNames:              []string{host},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// readCert reads a certificate in PEM or DER and returns the DER of the
// first (leaf) certificate.
func readCert(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if p, _ := pem.Decode(b); p != nil {
		if p.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %q, want CERTIFICATE", path, p.Type)
		}
		b = p.Bytes
	}
	return leaf(b)
}

// leaf returns the first certificate of a DER chain (OPC UA servers may
// send their certificate followed by issuers).
func leaf(der []byte) ([]byte, error) {
	cs, err := x509.ParseCertificates(der)
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, errors.New("no certificate")
	}
	return cs[0].Raw, nil
}

// readKey reads an RSA private key in PEM (PKCS#1 or PKCS#8). A key file
// readable by group or others is refused.
func readKey(path string) (*rsa.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by group or others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, _ := pem.Decode(b)
	if p == nil {
		return nil, fmt.Errorf("%s: not PEM", path)
	}
	if k, err := x509.ParsePKCS1PrivateKey(p.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(p.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: OPC UA needs an RSA key, not %T", path, k)
	}
	return rk, nil
}

// tofuPath is where the certificate first seen at endpoint is kept.
func tofuPath(stateDir, endpoint string) string {
	h := sha256.Sum256([]byte(endpoint))
	return filepath.Join(stateDir, "opcua", "server-"+hex.EncodeToString(h[:8])+".der")
}

// serverCert checks the certificate the server announced against the pin
// and returns the pinned certificate. Without a pin, the first
// certificate seen is stored and becomes the pin.
func (s *Source) serverCert(announced []byte) ([]byte, error) {
	got, err := leaf(announced)
	if err != nil {
		return nil, fmt.Errorf("opcua: server certificate unreadable: %w", err)
	}
	pinned := s.pinnedDER
	if pinned == nil {
		b, err := os.ReadFile(s.tofuPath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := storeFirst(s.tofuPath, got); err != nil {
				return nil, fmt.Errorf("opcua: store trusted server certificate: %w", err)
			}
			s.cfg.Log.Warn("opcua: trusting the server certificate on first use", "endpoint", s.cfg.Endpoint,
				"file", s.tofuPath, "sha256", fingerprint(got))
			return s.serverCert(announced) // re-read: another source may have stored first
		case err != nil:
			return nil, fmt.Errorf("opcua: read trusted server certificate: %w", err)
		}
		pinned = b
	}
	if !bytes.Equal(got, pinned) {
		where := s.cfg.ServerCertFile
		if where == "" {
			where = s.tofuPath + " (delete it to trust the new certificate)"
		}
		return nil, fmt.Errorf("%w: got sha256 %s, pinned in %s", ErrServerCertMismatch, fingerprint(got), where)
	}
	return pinned, nil
}

// storeFirst writes der to path unless path exists.
func storeFirst(path string, der []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(der)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(f.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

func fingerprint(der []byte) string {
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
}
