package pki

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/enrol"
)

// serve runs a TLS server on 127.0.0.1 that completes the handshake, writes
// "ok" and closes. Each connection's handshake error (or nil) is sent on the
// returned channel.
func serve(t *testing.T, cfg *tls.Config) (addr string, results <-chan error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
			err = tc.Handshake()
			if err == nil {
				_, err = tc.Write([]byte("ok"))
			}
			tc.Close()
			ch <- err
		}
	}()
	return ln.Addr().String(), ch
}

// dial connects, completes the handshake and reads the server's "ok". In
// TLS 1.3 a client learns that the server refused its certificate only when
// it reads.
func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		return c.ConnectionState(), err
	}
	if string(buf) != "ok" {
		return c.ConnectionState(), errors.New("unexpected reply")
	}
	return c.ConnectionState(), nil
}

func TestDeviceTLS(t *testing.T) {
	t0 := now0()
	dir := t.TempDir()

	// Issue an already expired certificate from this CA first, with a
	// clock two days in the past, then open the CA at t0 to serve.
	past := mustOpen(t, testConfig(t, dir, t0.Add(-48*time.Hour)))
	a := mustOpen(t, testConfig(t, dir, t0))
	if past.Fingerprint() != a.Fingerprint() {
		t.Fatal("reopen changed the CA")
	}
	other := mustOpen(t, testConfig(t, t.TempDir(), t0))

	deviceKey, err := enrol.LoadOrCreateKey(filepath.Join(t.TempDir(), "device.key"), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := enrol.CreateCSR(deviceKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tlsCert := func(signer *Authority, id enrol.Identity, lifetime time.Duration) *tls.Certificate {
		t.Helper()
		cert, err := signer.Sign(csr, id, lifetime)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: deviceKey, Leaf: cert}
	}
	good := enrol.Identity{Tenant: "acme", Connector: "plant-7"}
	revoked := enrol.Identity{Tenant: "acme", Connector: "stolen"}

	var seen []enrol.Identity // written by the server goroutine; read after each result
	errRevoked := errors.New("connector revoked")
	addr, results := serve(t, a.DeviceTLSConfig(func(id enrol.Identity, cert *x509.Certificate) error {
		seen = append(seen, id)
		if id == revoked {
			return errRevoked
		}
		return nil
	}))

	withCert := func(c *tls.Certificate) *tls.Config {
		return enrol.ClientConfig(a.Pool(), "127.0.0.1", func() (*tls.Certificate, error) { return c, nil })
	}
	tls12 := withCert(tlsCert(a, good, time.Hour))
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	noCert := &tls.Config{RootCAs: a.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}

	tests := []struct {
		name   string
		client *tls.Config
		ok     bool
	}{
		{"valid certificate", withCert(tlsCert(a, good, time.Hour)), true},
		{"no client certificate", noCert, false},
		{"certificate from another CA", withCert(tlsCert(other, good, time.Hour)), false},
		{"expired certificate", withCert(tlsCert(past, good, time.Hour)), false},
		{"TLS 1.2 client", tls12, false},
		{"revoked connector", withCert(tlsCert(a, revoked, time.Hour)), false},
		{"server certificate as client certificate", withCert(a.ServerCertificate()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen = nil
			_, cerr := dial(addr, tt.client)
			serr := <-results
			if tt.ok {
				if cerr != nil || serr != nil {
					t.Fatalf("client: %v; server: %v", cerr, serr)
				}
				if len(seen) != 1 || seen[0] != good {
					t.Fatalf("check saw %v, want [%v]", seen, good)
				}
				return
			}
			if cerr == nil || serr == nil {
				t.Fatalf("connection accepted (client: %v; server: %v)", cerr, serr)
			}
			t.Logf("refused: server: %v", serr)
			if tt.name == "revoked connector" && !errors.Is(serr, errRevoked) {
				t.Errorf("server error %v, want the check's error", serr)
			}
		})
	}
}

func TestDeviceTLSNilCheck(t *testing.T) {
	t0 := now0()
	a := mustOpen(t, testConfig(t, t.TempDir(), t0))
	key, _ := enrol.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), rand.Reader)
	csr, _ := enrol.CreateCSR(key, rand.Reader)
	cert, err := a.Sign(csr, enrol.Identity{Tenant: "t", Connector: "c"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr, results := serve(t, a.DeviceTLSConfig(nil))
	_, cerr := dial(addr, enrol.ClientConfig(a.Pool(), "127.0.0.1", func() (*tls.Certificate, error) {
		return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key}, nil
	}))
	if serr := <-results; cerr != nil || serr != nil {
		t.Fatalf("client: %v; server: %v", cerr, serr)
	}
}

func TestPinnedClientConfig(t *testing.T) {
	t0 := now0()
	a := mustOpen(t, testConfig(t, t.TempDir(), t0))
	other := mustOpen(t, testConfig(t, t.TempDir(), t0))
	addr, results := serve(t, a.APITLSConfig())
	otherAddr, otherResults := serve(t, other.APITLSConfig())

	tests := []struct {
		name       string
		addr       string
		results    <-chan error
		pin        enrol.Fingerprint
		serverName string
		ok         bool
	}{
		{"right fingerprint, IP name", addr, results, a.Fingerprint(), "127.0.0.1", true},
		{"right fingerprint, any name", addr, results, a.Fingerprint(), "", true},
		{"right fingerprint, wrong name", addr, results, a.Fingerprint(), "hub.example.org", false},
		{"wrong fingerprint", addr, results, other.Fingerprint(), "127.0.0.1", false},
		{"server fingerprint pinned instead of CA", addr, results, enrol.FingerprintOf(a.ServerCertificate().Leaf), "", false},
		{"other hub, our fingerprint", otherAddr, otherResults, a.Fingerprint(), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, cerr := dial(tt.addr, enrol.PinnedClientConfig(tt.pin, tt.serverName))
			<-tt.results
			if !tt.ok {
				if cerr == nil {
					t.Fatal("connection accepted")
				}
				t.Logf("refused: %v", cerr)
				return
			}
			if cerr != nil {
				t.Fatal(cerr)
			}
			if cs.Version != tls.VersionTLS13 {
				t.Errorf("version %x, want TLS 1.3", cs.Version)
			}
			ca, err := enrol.PinnedCA(cs.PeerCertificates, tt.pin)
			if err != nil || !ca.Equal(a.CA()) {
				t.Fatalf("PinnedCA = %v", err)
			}
		})
	}
}

func TestAPITLSAcceptsTLS12(t *testing.T) {
	a := mustOpen(t, testConfig(t, t.TempDir(), now0()))
	addr, results := serve(t, a.APITLSConfig())
	cs, err := dial(addr, &tls.Config{RootCAs: a.Pool(), ServerName: "localhost", MaxVersion: tls.VersionTLS12})
	<-results
	if err != nil || cs.Version != tls.VersionTLS12 {
		t.Fatalf("TLS 1.2 client: version %x, %v", cs.Version, err)
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		_, err := dial(addr, &tls.Config{RootCAs: a.Pool(), ServerName: "localhost", MinVersion: v, MaxVersion: v})
		<-results
		if err == nil {
			t.Errorf("version %x accepted", v)
		}
	}
}
