package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/enrol"
	"github.com/custos-iot/custos/internal/errs"
)

// fixedClock returns a clock stopped at t0. Tests take t0 from now0: close
// to the real time, so TLS peers that use the system clock agree with it.
func fixedClock(t0 time.Time) func() time.Time { return func() time.Time { return t0 } }

func testConfig(t *testing.T, dir string, now time.Time) Config {
	t.Helper()
	return Config{
		Dir:  dir,
		Now:  fixedClock(now),
		Rand: mrand.NewChaCha8([32]byte([]byte(strings.Repeat(t.Name(), 32))[:32])),
	}
}

func mustOpen(t *testing.T, cfg Config) *Authority {
	t.Helper()
	a, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return a
}

func now0() time.Time { return time.Now().Truncate(time.Second) }

func TestOpenCreatesAndIsIdempotent(t *testing.T) {
	t0 := now0()
	dir := filepath.Join(t.TempDir(), "pki")
	a := mustOpen(t, testConfig(t, dir, t0))

	for name, want := range map[string]os.FileMode{"ca.key": 0o600, "server.key": 0o600, "ca.pem": 0o644, "server.pem": 0o644, ".": 0o700} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %#o, want %#o", name, got, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("dir holds %d entries, want 4 (temporary files left behind?)", len(entries))
	}

	ca := a.CA()
	if !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero || ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA constraints: IsCA=%v MaxPathLen=%d zero=%v usage=%v", ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero, ca.KeyUsage)
	}
	if got := ca.NotAfter.Sub(t0); got < 9*365*24*time.Hour {
		t.Errorf("CA validity %v, want about 10 years", got)
	}
	if a.Fingerprint() != enrol.FingerprintOf(ca) {
		t.Error("Fingerprint does not match CA")
	}
	if !strings.HasPrefix(string(a.CAPEM()), "-----BEGIN CERTIFICATE-----") {
		t.Error("CAPEM is not PEM")
	}
	sc := a.ServerCertificate()
	if len(sc.Certificate) != 2 || !slices.Equal(sc.Certificate[1], ca.Raw) {
		t.Fatal("server chain is not (leaf, CA)")
	}
	leaf := sc.Leaf
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.Pool(), DNSName: "localhost", CurrentTime: t0}); err != nil {
		t.Errorf("server cert does not verify for localhost: %v", err)
	}
	if got := nameSet(leaf.DNSNames, leaf.IPAddresses); !slices.Equal(got, []string{"127.0.0.1", "::1", "localhost"}) {
		t.Errorf("default names = %v", got)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got != 90*24*time.Hour+time.Minute {
		t.Errorf("server lifetime = %v", got)
	}

	// Reopen a day later: same CA, same server certificate.
	b := mustOpen(t, testConfig(t, dir, t0.Add(24*time.Hour)))
	if b.Fingerprint() != a.Fingerprint() {
		t.Fatal("second Open created another CA")
	}
	if !slices.Equal(b.ServerCertificate().Leaf.Raw, leaf.Raw) {
		t.Error("second Open reissued an up-to-date server certificate")
	}
}

func TestOpenReissuesServerCertificate(t *testing.T) {
	t0 := now0()
	dir := t.TempDir()
	a := mustOpen(t, testConfig(t, dir, t0))
	orig := a.ServerCertificate().Leaf

	tests := []struct {
		name    string
		now     time.Time
		names   []string
		reissue bool
	}{
		{"unchanged, 59 days on", t0.Add(59 * 24 * time.Hour), nil, false},
		{"same names reordered", t0, []string{"::1", "LOCALHOST.", "127.0.0.1"}, false},
		{"less than a third left", t0.Add(61 * 24 * time.Hour), nil, true},
		{"names changed", t0, []string{"hub.example.org", "10.0.0.1"}, true},
		{"name removed", t0, []string{"localhost"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Start each case from the original server certificate.
			if err := writeFile(filepath.Join(dir, serverCertFile), append(pemEncode(orig.Raw), a.CAPEM()...), 0o644, false); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(t, dir, tt.now)
			cfg.Names = tt.names
			b := mustOpen(t, cfg)
			leaf := b.ServerCertificate().Leaf
			if reissued := !slices.Equal(leaf.Raw, orig.Raw); reissued != tt.reissue {
				t.Fatalf("reissued = %v, want %v", reissued, tt.reissue)
			}
			if b.Fingerprint() != a.Fingerprint() {
				t.Fatal("CA changed")
			}
			if tt.names != nil {
				want, _, _ := parseNames(tt.names)
				_, ips, _ := parseNames(tt.names)
				if !slices.Equal(nameSet(leaf.DNSNames, leaf.IPAddresses), nameSet(want, ips)) {
					t.Errorf("names = %v %v", leaf.DNSNames, leaf.IPAddresses)
				}
			}
			// The reissued certificate is what is on disk now.
			c, err := readCert(filepath.Join(dir, serverCertFile))
			if err != nil || !slices.Equal(c.Raw, leaf.Raw) {
				t.Fatalf("server.pem does not hold the served certificate: %v", err)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	t0 := now0()
	t.Run("loose CA key", func(t *testing.T) {
		dir := t.TempDir()
		mustOpen(t, testConfig(t, dir, t0))
		path := filepath.Join(dir, caKeyFile)
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(testConfig(t, dir, t0))
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "0644") {
			t.Fatalf("err = %v, want a refusal naming %s and 0644", err, path)
		}
	})
	t.Run("loose server key", func(t *testing.T) {
		dir := t.TempDir()
		mustOpen(t, testConfig(t, dir, t0))
		if err := os.Chmod(filepath.Join(dir, serverKeyFile), 0o640); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(testConfig(t, dir, t0)); err == nil || !strings.Contains(err.Error(), "0640") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("CA cert of another key", func(t *testing.T) {
		dir, other := t.TempDir(), t.TempDir()
		mustOpen(t, testConfig(t, dir, t0))
		mustOpen(t, testConfig(t, other, t0))
		data, _ := os.ReadFile(filepath.Join(other, caCertFile))
		if err := os.WriteFile(filepath.Join(dir, caCertFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(testConfig(t, dir, t0)); !errs.Is(errs.Integrity, err) {
			t.Fatalf("err = %v, want Integrity", err)
		}
	})
	t.Run("expired CA", func(t *testing.T) {
		dir := t.TempDir()
		mustOpen(t, testConfig(t, dir, t0))
		if _, err := Open(testConfig(t, dir, t0.Add(11*365*24*time.Hour))); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("bad name", func(t *testing.T) {
		cfg := testConfig(t, t.TempDir(), t0)
		cfg.Names = []string{"not a name"}
		if _, err := Open(cfg); !errs.Is(errs.Invalid, err) {
			t.Fatalf("err = %v, want Invalid", err)
		}
	})
	t.Run("no dir", func(t *testing.T) {
		if _, err := Open(Config{}); !errs.Is(errs.Invalid, err) {
			t.Fatalf("err = %v, want Invalid", err)
		}
	})
}

func TestOpenRace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	const n = 8
	fps := make([]enrol.Fingerprint, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a, err := Open(Config{Dir: dir})
			if err != nil {
				t.Error(err)
				return
			}
			fps[i] = a.Fingerprint()
		})
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if fps[i] != fps[0] {
			t.Fatal("racing Opens produced different CAs")
		}
	}
	a := mustOpen(t, Config{Dir: dir})
	if a.Fingerprint() != fps[0] {
		t.Fatal("CA on disk differs from the one the racers returned")
	}
}

// csrFor returns a DER CSR for key whose subject and SANs try to claim
// another identity, which Sign must ignore.
func csrFor(t *testing.T, key any) []byte {
	t.Helper()
	evil, _ := url.Parse("custos://tenant/other/connector/admin")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "admin", Organization: []string{"evil"}},
		DNSNames: []string{"hub.example.org"},
		URIs:     []*url.URL{evil},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSign(t *testing.T) {
	t0 := now0()
	a := mustOpen(t, testConfig(t, t.TempDir(), t0))
	id := enrol.Identity{Tenant: "acme", Connector: "plant-7"}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	deviceKey, err := enrol.LoadOrCreateKey(filepath.Join(t.TempDir(), "device.key"), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	agentCSR, err := enrol.CreateCSR(deviceKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	serials := map[string]bool{}
	for _, tt := range []struct {
		name     string
		csr      []byte
		lifetime time.Duration
	}{
		{"agent CSR", agentCSR, 24 * time.Hour},
		{"P-256, hostile subject", csrFor(t, p256), time.Hour},
		{"P-384", csrFor(t, p384), 7 * 24 * time.Hour},
		{"Ed25519", csrFor(t, ed), 30 * 24 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := a.Sign(tt.csr, id, tt.lifetime)
			if err != nil {
				t.Fatal(err)
			}
			chains, err := cert.Verify(x509.VerifyOptions{
				Roots: a.Pool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			if err != nil || len(chains) != 1 || len(chains[0]) != 2 {
				t.Fatalf("client-auth chain does not verify: %v", err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{
				Roots: a.Pool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err == nil {
				t.Error("client certificate is also valid for server auth")
			}
			got, err := enrol.IdentityOf(cert)
			if err != nil || got != id {
				t.Fatalf("IdentityOf = %+v, %v", got, err)
			}
			if cert.Subject.CommonName != id.Connector || len(cert.Subject.Organization) != 0 {
				t.Errorf("subject = %v, want CN=%s only", cert.Subject, id.Connector)
			}
			if len(cert.URIs) != 1 || len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 0 || len(cert.EmailAddresses) != 0 {
				t.Errorf("SANs: URIs=%v DNS=%v", cert.URIs, cert.DNSNames)
			}
			if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || cert.IsCA {
				t.Errorf("usage = %v, IsCA = %v", cert.ExtKeyUsage, cert.IsCA)
			}
			if !cert.NotBefore.Equal(t0.Add(-time.Minute)) || !cert.NotAfter.Equal(t0.Add(tt.lifetime)) {
				t.Errorf("validity %v..%v, want %v..%v", cert.NotBefore, cert.NotAfter, t0.Add(-time.Minute), t0.Add(tt.lifetime))
			}
			if cert.SerialNumber.Sign() <= 0 || cert.SerialNumber.BitLen() > 128 || serials[cert.SerialNumber.String()] {
				t.Errorf("serial %v is not a fresh positive 128-bit number", cert.SerialNumber)
			}
			serials[cert.SerialNumber.String()] = true
		})
	}
}

func TestSignErrors(t *testing.T) {
	t0 := now0()
	a := mustOpen(t, testConfig(t, t.TempDir(), t0))
	id := enrol.Identity{Tenant: "acme", Connector: "plant-7"}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := csrFor(t, p256)
	tampered := slices.Clone(good)
	tampered[len(tampered)-5] ^= 0x01 // inside the signature
	tamperedSubject := slices.Clone(good)
	i := strings.Index(string(tamperedSubject), "admin")
	tamperedSubject[i] = 'A' // signed content changed

	tests := []struct {
		name     string
		csr      []byte
		id       enrol.Identity
		lifetime time.Duration
		want     string
	}{
		{"empty", nil, id, time.Hour, "empty CSR"},
		{"garbage", []byte("hello, CA"), id, time.Hour, "malformed CSR"},
		{"PEM instead of DER", []byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"), id, time.Hour, "malformed CSR"},
		{"truncated", good[:len(good)/2], id, time.Hour, "malformed CSR"},
		{"trailing data", append(slices.Clone(good), 0), id, time.Hour, "malformed CSR"},
		{"too large", make([]byte, maxCSR+1), id, time.Hour, "too large"},
		{"tampered signature", tampered, id, time.Hour, "signature does not verify"},
		{"tampered subject", tamperedSubject, id, time.Hour, "signature does not verify"},
		{"RSA key", csrFor(t, rsaKey), id, time.Hour, "RSA"},
		{"P-224 key", csrFor(t, p224), id, time.Hour, "curve"},
		{"bad tenant", good, enrol.Identity{Tenant: "../x", Connector: "c"}, time.Hour, "tenant ID"},
		{"empty connector", good, enrol.Identity{Tenant: "t"}, time.Hour, "connector ID"},
		{"zero lifetime", good, id, 0, "lifetime"},
		{"outlives CA", good, id, 20 * 365 * 24 * time.Hour, "outlast the CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := a.Sign(tt.csr, tt.id, tt.lifetime)
			if err == nil {
				t.Fatalf("Sign issued %v", cert.Subject)
			}
			if !errs.Is(errs.Invalid, err) {
				t.Errorf("kind = %v, want Invalid (%v)", errs.KindOf(err), err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

// TestRefreshServer: a long-running Authority renews its server
// certificate in place, and its TLS configurations serve the new one.
func TestRefreshServer(t *testing.T) {
	t0 := now0()
	now := t0
	cfg := testConfig(t, t.TempDir(), t0)
	cfg.Now = func() time.Time { return now }
	a := mustOpen(t, cfg)
	first := a.ServerCertificate().Leaf
	if err := a.RefreshServer(); err != nil {
		t.Fatal(err)
	}
	if a.ServerCertificate().Leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("RefreshServer reissued a fresh certificate")
	}
	now = t0.Add(61 * 24 * time.Hour)
	if err := a.RefreshServer(); err != nil {
		t.Fatal(err)
	}
	second := a.ServerCertificate().Leaf
	if !second.NotAfter.After(first.NotAfter) {
		t.Fatalf("RefreshServer kept a certificate expiring %v at %v", second.NotAfter, now)
	}
	for name, get := range map[string]func() *x509.Certificate{
		"api":    func() *x509.Certificate { c, _ := a.APITLSConfig().GetCertificate(nil); return c.Leaf },
		"device": func() *x509.Certificate { c, _ := a.DeviceTLSConfig(nil).GetCertificate(nil); return c.Leaf },
	} {
		if got := get(); got.SerialNumber.Cmp(second.SerialNumber) != 0 {
			t.Errorf("%s TLS config serves the old certificate", name)
		}
	}
}
