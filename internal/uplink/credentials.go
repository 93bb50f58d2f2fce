package uplink

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/custos-iot/custos/internal/enrol"
)

// Files in the agent's state directory.
const (
	keyFile      = "device.key"    // the device key; generated here, never sent anywhere
	certFile     = "device.pem"    // the current certificate
	caFile       = "ca.pem"        // the hub CA, as received at enrolment
	identityFile = "identity.json" // tenant, connector and device URL
)

// Enrolment is what the agent remembers from enrolling.
type Enrolment struct {
	Tenant    string `json:"tenant"`
	Connector string `json:"connector"`
	DeviceURL string `json:"device_url"`
}

// Credentials hold the device key and the current certificate, and renew
// the certificate before it expires. Safe for concurrent use.
type Credentials struct {
	dir   string
	key   crypto.Signer
	roots *x509.CertPool
	cert  atomic.Pointer[tls.Certificate]
	// received is when the current certificate arrived, by the local
	// clock; renewal is planned from it, not from NotBefore, which the CA
	// backdates to absorb clock skew.
	received atomic.Int64
	Enrolment
}

// Enrolled reports whether dir holds an enrolment.
func Enrolled(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, certFile))
	return err == nil
}

// Enrol generates (or loads) the device key in dir, exchanges the
// single-use token for a certificate at the hub's API, pinning the hub CA
// named in the token, and saves the result. rand may be nil.
func Enrol(ctx context.Context, dir, apiURL, token string, rand io.Reader) (*Credentials, error) {
	tok, err := enrol.ParseToken(token)
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("enrol: state directory: %w", err)
	}
	key, err := enrol.LoadOrCreateKey(filepath.Join(dir, keyFile), rand)
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	csr, err := enrol.CreateCSR(key, rand)
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	body, _ := json.Marshal(map[string]any{"token": token, "csr": csr})
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: enrol.PinnedClientConfig(tok.CA, "")}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/v1/enrol", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enrol: reach hub: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Tenant, Connector, Certificate, CA, Error string
		DeviceURL                                 string `json:"device_url"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("enrol: hub answered %s with an unreadable body", resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("enrol: hub refused: %s", out.Error)
	}
	caBlock, _ := pem.Decode([]byte(out.CA))
	if caBlock == nil {
		return nil, fmt.Errorf("enrol: hub sent no CA certificate")
	}
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil || enrol.FingerprintOf(ca) != tok.CA {
		return nil, fmt.Errorf("enrol: the CA the hub sent does not match the token's fingerprint")
	}
	e := Enrolment{Tenant: out.Tenant, Connector: out.Connector, DeviceURL: out.DeviceURL}
	ident, _ := json.MarshalIndent(e, "", "  ")
	for _, f := range []struct {
		name string
		data []byte
	}{{caFile, []byte(out.CA)}, {identityFile, ident}, {certFile, []byte(out.Certificate)}} {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data); err != nil {
			return nil, fmt.Errorf("enrol: %w", err)
		}
	}
	return Load(dir)
}

// Load reads the credentials saved by Enrol.
func Load(dir string) (*Credentials, error) {
	c := &Credentials{dir: dir}
	var err error
	if c.key, err = enrol.LoadOrCreateKey(filepath.Join(dir, keyFile), nil); err != nil {
		return nil, err
	}
	ident, err := os.ReadFile(filepath.Join(dir, identityFile))
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	if err := json.Unmarshal(ident, &c.Enrolment); err != nil {
		return nil, fmt.Errorf("credentials: %s: %w", identityFile, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	c.roots = x509.NewCertPool()
	if !c.roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("credentials: %s holds no certificate", caFile)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	if err := c.setCert(certPEM); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(filepath.Join(dir, certFile)); err == nil {
		c.received.Store(fi.ModTime().UnixMilli())
	}
	return c, nil
}

func (c *Credentials) setCert(certPEM []byte) error {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return fmt.Errorf("credentials: certificate is not PEM")
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return fmt.Errorf("credentials: certificate: %w", err)
	}
	c.cert.Store(&tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: c.key, Leaf: leaf})
	c.received.Store(time.Now().UnixMilli())
	return nil
}

// Certificate is the current client certificate.
func (c *Credentials) Certificate() *tls.Certificate { return c.cert.Load() }

// Expiry is the current certificate's NotAfter.
func (c *Credentials) Expiry() time.Time { return c.cert.Load().Leaf.NotAfter }

// TLSConfig is the mTLS configuration for the device endpoint: TLS 1.3,
// the hub CA only, and always the newest certificate.
func (c *Credentials) TLSConfig(serverName string) *tls.Config {
	return enrol.ClientConfig(c.roots, serverName, func() (*tls.Certificate, error) { return c.cert.Load(), nil })
}

// RenewAt is when the certificate should be renewed: after two thirds of
// the time between its arrival and its expiry, but not sooner than one
// second after its arrival (no renewal storms with very short lifetimes).
func (c *Credentials) RenewAt() time.Time {
	l := c.cert.Load().Leaf
	got := time.UnixMilli(c.received.Load())
	if got.IsZero() || got.After(l.NotAfter) || got.Before(l.NotBefore) {
		got = l.NotBefore
	}
	return got.Add(max(l.NotAfter.Sub(got)*2/3, time.Second))
}

// Renew asks the hub for a new certificate for the same key, authenticating
// with the current one, and saves it.
func (c *Credentials) Renew(ctx context.Context, client *http.Client, deviceURL string, rand io.Reader) error {
	csr, err := enrol.CreateCSR(c.key, rand)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, deviceURL+"/v1/renew", bytes.NewReader(csr))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/pkcs10")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	defer resp.Body.Close()
	var out struct{ Certificate, Error string }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return fmt.Errorf("renew: hub answered %s with an unreadable body", resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return &HubError{Status: resp.StatusCode, Message: out.Error}
	}
	if err := c.setCert([]byte(out.Certificate)); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(c.dir, certFile), []byte(out.Certificate))
}

// writeAtomic replaces path with data (mode 0600) so that a crash leaves
// either the old or the new file, never a torn one.
func writeAtomic(path string, data []byte) error {
	return enrol.WriteFile(path, data, 0o600, false)
}
