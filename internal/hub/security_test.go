package hub_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/enrol"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/ingest"
	"github.com/custos-iot/custos/internal/pki"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/uplink"
	"github.com/custos-iot/custos/internal/wire"
)

// The tests in this file prove that the hub refuses what it must refuse —
// unauthenticated or revoked connectors, misused enrolment tokens, writes to
// another connector's streams, malformed bodies — with a clear error, and
// that a refused request stores nothing. Each test function runs its own hub.

// clock is a hub clock that tests can move.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Set(off time.Duration)   { c.off.Store(int64(off)) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// fixture is a running hub with one tenant and two enrolled households, A
// and B, each of which has already stored one batch.
type fixture struct {
	h      *hub.Hub
	c      *client.Client
	ten    registry.TenantID
	a, b   client.Household
	credsA *uplink.Credentials
	credsB *uplink.Credentials
	clock  *clock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{clock: &clock{}}
	// The requests here re-send the same times and move the clock on
	// purpose, which the plausibility checks would (rightly) quarantine;
	// they are tested in quarantine_test.go.
	f.h, f.c = startHub(t, hub.Config{Now: f.clock.Now, EnrolTokenTTL: time.Hour, PlausibilityOff: true})
	ctx := context.Background()
	ten, err := f.c.CreateTenant(ctx, "Sunny Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	f.ten = ten.ID
	if f.a, err = f.c.AddHousehold(ctx, f.ten, "house-a", "Member A"); err != nil {
		t.Fatal(err)
	}
	if f.b, err = f.c.AddHousehold(ctx, f.ten, "house-b", "Member B"); err != nil {
		t.Fatal(err)
	}
	if f.credsA, err = uplink.Enrol(ctx, filepath.Join(t.TempDir(), "a"), f.h.APIURL(), f.a.Token, nil); err != nil {
		t.Fatal(err)
	}
	if f.credsB, err = uplink.Enrol(ctx, filepath.Join(t.TempDir(), "b"), f.h.APIURL(), f.b.Token, nil); err != nil {
		t.Fatal(err)
	}
	// Store one reading per stream, so "unchanged" is not "empty".
	for _, hh := range []struct {
		hh    client.Household
		creds *uplink.Credentials
	}{{f.a, f.credsA}, {f.b, f.credsB}} {
		var keys []string
		for _, st := range hh.hh.Streams {
			keys = append(keys, st.Key)
		}
		r := send(t, deviceClient(t, hh.creds.TLSConfig("")), f.h.DeviceURL()+"/v1/batches", api.BatchContentType, bytes.NewReader(encode(t, newBatch(t, 0, 1, keys...))))
		if r.err != nil || r.status != http.StatusOK {
			t.Fatalf("seeding %s: %d %s %v", hh.hh.Site.Name, r.status, r.body, r.err)
		}
	}
	return f
}

// streams lists the streams of both households.
func (f *fixture) streams() []registry.Stream {
	return append(append([]registry.Stream(nil), f.a.Streams...), f.b.Streams...)
}

// counts returns the number of stored readings of every stream, read
// through the operator API.
func (f *fixture) counts(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, st := range f.streams() {
		rs, err := f.c.AllReadings(context.Background(), f.ten, st.ID, 0, 1<<50)
		if err != nil {
			t.Fatal(err)
		}
		out[st.Key] = len(rs)
	}
	return out
}

// unchanged fails the test if any stream's reading count differs from before.
func (f *fixture) unchanged(t *testing.T, before map[string]int) {
	t.Helper()
	after := f.counts(t)
	for k, n := range before {
		if after[k] != n {
			t.Errorf("stream %s holds %d readings, want %d: the refused request stored something", k, after[k], n)
		}
	}
}

// connectorStatus returns a connector's status through the operator API.
func (f *fixture) connectorStatus(t *testing.T, id registry.ConnectorID) registry.ConnectorStatus {
	t.Helper()
	cs, err := f.c.Connectors(context.Background(), f.ten)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.ID == id {
			return c.Status
		}
	}
	t.Fatalf("connector %s not listed", id)
	return ""
}

// deviceClient returns an HTTP/1.1 keep-alive client for the device endpoint.
func deviceClient(t testing.TB, cfg *tls.Config) *http.Client {
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type reply struct {
	status int
	header http.Header
	body   []byte
	reused bool // the request went over a kept-alive connection
	err    error
}

// send posts body and reads the whole answer.
func send(t testing.TB, hc *http.Client, url, contentType string, body io.Reader) reply {
	t.Helper()
	var r reply
	trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { r.reused = ci.Reused }}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.status, r.header = resp.StatusCode, resp.Header
	r.body, r.err = io.ReadAll(resp.Body)
	return r
}

// wantError checks that r is an error answer with the given status and a
// JSON body {"error": ..., "request_id": ...} whose message contains msg.
func wantError(t *testing.T, r reply, status int, msg string) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("request failed: %v; want HTTP %d", r.err, status)
	}
	if r.status != status {
		t.Fatalf("HTTP %d %s; want %d", r.status, r.body, status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e api.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body %q is not {error, request_id}: %v", r.body, err)
	}
	if e.RequestID == "" || e.RequestID != r.header.Get("X-Request-Id") {
		t.Errorf("request_id %q, header X-Request-Id %q: want the same, non-empty", e.RequestID, r.header.Get("X-Request-Id"))
	}
	if !strings.Contains(e.Error, msg) {
		t.Errorf("error %q does not mention %q", e.Error, msg)
	}
}

// wantResult checks that r is 200 with the given ingest result.
func wantResult(t *testing.T, r reply, want ingest.Result) {
	t.Helper()
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("HTTP %d %s %v; want 200", r.status, r.body, r.err)
	}
	var got ingest.Result
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("result %q: %v", r.body, err)
	}
	if got.Batches != want.Batches || got.Readings != want.Readings || got.Duplicates != want.Duplicates {
		t.Errorf("result %+v, want %+v", got, want)
	}
}

// wantRefused checks that a request failed at the TLS level (no HTTP
// answer) with an error mentioning msg.
func wantRefused(t *testing.T, r reply, msg string) {
	t.Helper()
	if r.err == nil {
		t.Fatalf("HTTP %d %s; want the connection refused", r.status, r.body)
	}
	if !strings.Contains(r.err.Error(), msg) {
		t.Errorf("error %q does not mention %q", r.err, msg)
	}
}

var batchSeq atomic.Int64

// newBatch returns a batch with a fresh ID and n readings per key, at
// distinct times starting at t0 + first seconds.
func newBatch(t *testing.T, first, n int, keys ...string) *wire.Batch {
	t.Helper()
	b := &wire.Batch{}
	if _, err := rand.Read(b.ID[:]); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		s := wire.Series{Key: k}
		for i := range n {
			s.Readings = append(s.Readings, wire.Reading{Time: t0.UnixMilli() + int64(first+i)*1000, Value: float64(batchSeq.Add(1))})
		}
		b.Series = append(b.Series, s)
	}
	return b
}

func encode(t testing.TB, bs ...*wire.Batch) []byte {
	t.Helper()
	var out []byte
	for _, b := range bs {
		var err error
		if out, err = wire.AppendBatch(out, b); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// nonFiniteBatch returns the encoding of a one-reading batch whose value is
// v (NaN or ±Inf), which wire.AppendBatch refuses to produce: it encodes
// math.Pi (stored as raw float bits) and patches the bits.
func nonFiniteBatch(t *testing.T, key string, v float64) []byte {
	t.Helper()
	b := &wire.Batch{Series: []wire.Series{{Key: key, Readings: []wire.Reading{{Time: t0.UnixMilli() + 99_000, Value: math.Pi}}}}}
	b.ID[0] = 0x4e
	out := encode(t, b)
	var pi, bad [8]byte
	binary.BigEndian.PutUint64(pi[:], math.Float64bits(math.Pi))
	binary.BigEndian.PutUint64(bad[:], math.Float64bits(v))
	i := bytes.Index(out, pi[:])
	if i < 0 {
		t.Fatal("cannot find the value's bits in the encoded batch")
	}
	copy(out[i:], bad[:])
	if _, err := wire.DecodeBatches(out); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("patched batch decodes with %v, want ErrMalformed", err)
	}
	return out
}

// forgedCert returns a client certificate for id signed by ca, with a new key.
func forgedCert(t *testing.T, ca *pki.Authority, id enrol.Identity, lifetime time.Duration) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := enrol.CreateCSR(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(csr, id, lifetime)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// copyCA opens a second Authority over a copy of the hub's CA key and
// certificate, with its own clock: it signs as the hub CA would at now().
func copyCA(t *testing.T, h *hub.Hub, now func() time.Time) *pki.Authority {
	t.Helper()
	src, dst := filepath.Dir(h.CAFile()), t.TempDir()
	for _, name := range []string{"ca.pem", "ca.key"} {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a, err := pki.Open(pki.Config{Dir: dst, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint() != h.Authority.Fingerprint() {
		t.Fatal("copied CA has another fingerprint")
	}
	return a
}

func staticCert(c *tls.Certificate) func() (*tls.Certificate, error) {
	return func() (*tls.Certificate, error) { return c, nil }
}

// TestDeviceRefusesUnauthenticated checks that the device endpoint lets
// only a current certificate of the hub CA naming a known connector
// through, over TLS 1.3.
func TestDeviceRefusesUnauthenticated(t *testing.T) {
	f := newFixture(t)
	roots := f.h.Authority.Pool()
	idA := enrol.Identity{Tenant: string(f.ten), Connector: string(f.a.Connector.ID)}
	other, err := pki.Open(pki.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	past := copyCA(t, f.h, func() time.Time { return time.Now().Add(-72 * time.Hour) })
	future := copyCA(t, f.h, func() time.Time { return time.Now().Add(72 * time.Hour) })
	now := copyCA(t, f.h, time.Now)

	tls12 := f.credsA.TLSConfig("")
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	server := f.h.Authority.ServerCertificate()

	url := f.h.DeviceURL() + "/v1/batches"
	valid := deviceClient(t, f.credsA.TLSConfig(""))

	tests := []struct {
		name string
		cfg  *tls.Config
		want string // in the client's error; "" means the request must succeed
	}{
		{"valid certificate (control)", f.credsA.TLSConfig(""), ""},
		{"no client certificate", &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots}, "certificate required"},
		{"certificate from another CA", enrol.ClientConfig(roots, "", staticCert(forgedCert(t, other, idA, time.Hour))), "unknown certificate authority"},
		{"expired certificate", enrol.ClientConfig(roots, "", staticCert(forgedCert(t, past, idA, 24*time.Hour))), "expired certificate"},
		{"certificate not yet valid", enrol.ClientConfig(roots, "", staticCert(forgedCert(t, future, idA, 24*time.Hour))), "expired certificate"},
		{"hub CA certificate for an unknown connector", enrol.ClientConfig(roots, "", staticCert(forgedCert(t, now, enrol.Identity{Tenant: string(f.ten), Connector: "con-nobody"}, time.Hour))), "bad certificate"},
		{"hub CA certificate naming the connector under another tenant", enrol.ClientConfig(roots, "", staticCert(forgedCert(t, now, enrol.Identity{Tenant: "ten-other", Connector: idA.Connector}, time.Hour))), "bad certificate"},
		{"hub server certificate as client certificate", enrol.ClientConfig(roots, "", staticCert(server)), "bad certificate"},
		{"TLS 1.2 client", tls12, "protocol version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := f.a.Streams[0].Key
			before := f.counts(t)
			// A's own request first, so that whatever the hub caches about
			// connector A is fresh when the refused client comes.
			wantResult(t, send(t, valid, url, api.BatchContentType, bytes.NewReader(encode(t, newBatch(t, 100, 1, key)))), ingest.Result{Batches: 1, Readings: 1})
			before[key]++
			r := send(t, deviceClient(t, tt.cfg), url, api.BatchContentType, bytes.NewReader(encode(t, newBatch(t, 10, 5, key))))
			if tt.want == "" {
				wantResult(t, r, ingest.Result{Batches: 1, Readings: 5})
				return
			}
			wantRefused(t, r, tt.want)
			f.unchanged(t, before)
		})
	}
}

// TestDeviceRevocation checks that revoking a connector refuses its next
// request on an already open keep-alive connection at once, and any new
// (or resumed) handshake and any renewal afterwards.
func TestDeviceRevocation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	url := f.h.DeviceURL() + "/v1/batches"
	key := f.a.Streams[0].Key

	cfg := f.credsA.TLSConfig("")
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	hc := deviceClient(t, cfg)
	wantResult(t, send(t, hc, url, api.BatchContentType, bytes.NewReader(encode(t, newBatch(t, 10, 1, key)))), ingest.Result{Batches: 1, Readings: 1})
	if err := f.credsA.Renew(ctx, hc, f.h.DeviceURL(), nil); err != nil {
		t.Fatalf("renewal before revocation: %v", err)
	}
	certBefore := f.credsA.Certificate().Leaf.SerialNumber
	before := f.counts(t)

	if _, err := f.c.RevokeConnector(ctx, f.ten, f.a.Connector.ID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	r := send(t, hc, url, api.BatchContentType, bytes.NewReader(encode(t, newBatch(t, 20, 1, key))))
	if !r.reused {
		t.Error("the request after revocation did not reuse the open connection")
	}
	wantError(t, r, http.StatusForbidden, "connector is revoked")
	if d := time.Since(revoked); d > time.Second {
		t.Errorf("refused %v after revocation, want within 1 s", d)
	}

	t.Run("renewal on the open connection", func(t *testing.T) {
		err := f.credsA.Renew(ctx, hc, f.h.DeviceURL(), nil)
		var he *uplink.HubError
		if !errors.As(err, &he) || he.Status != http.StatusForbidden || !strings.Contains(he.Message, "revoked") {
			t.Fatalf("renewal: %v; want 403 connector is revoked", err)
		}
	})
	t.Run("new handshake", func(t *testing.T) {
		wantRefused(t, send(t, deviceClient(t, f.credsA.TLSConfig("")), url, api.BatchContentType, bytes.NewReader(encode(t, newBatch(t, 30, 1, key)))), "bad certificate")
	})
	t.Run("resumed handshake", func(t *testing.T) {
		hc.Transport.(*http.Transport).CloseIdleConnections()
		// A resumed TLS 1.3 handshake is refused by the server after the
		// client may already have written its request: the client then
		// sees the alert or, depending on timing, the closed connection.
		r := send(t, hc, url, api.BatchContentType, bytes.NewReader(encode(t, newBatch(t, 40, 1, key))))
		if r.err == nil {
			t.Fatalf("HTTP %d %s; want the connection refused", r.status, r.body)
		}
		if m := r.err.Error(); !strings.Contains(m, "bad certificate") && !strings.Contains(m, "broken pipe") && !strings.Contains(m, "connection reset") && !strings.Contains(m, "EOF") {
			t.Errorf("error %q is neither the TLS alert nor a closed connection", m)
		}
	})
	t.Run("renewal on a new connection", func(t *testing.T) {
		if err := f.credsA.Renew(ctx, deviceClient(t, f.credsA.TLSConfig("")), f.h.DeviceURL(), nil); err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Fatalf("renewal: %v; want the handshake refused", err)
		}
	})
	if got := f.credsA.Certificate().Leaf.SerialNumber; got.Cmp(certBefore) != 0 {
		t.Error("a refused renewal replaced the certificate")
	}
	if s := f.connectorStatus(t, f.a.Connector.ID); s != registry.ConnectorRevoked {
		t.Errorf("connector status %s, want revoked", s)
	}
	f.unchanged(t, before)
	// B is unaffected.
	wantResult(t, send(t, deviceClient(t, f.credsB.TLSConfig("")), url, api.BatchContentType, bytes.NewReader(encode(t, newBatch(t, 50, 1, f.b.Streams[0].Key)))), ingest.Result{Batches: 1, Readings: 1})
}

// enrolRaw posts an enrolment request as an agent would, trusting the hub CA.
func (f *fixture) enrolRaw(t *testing.T, token string, csr []byte) reply {
	t.Helper()
	body, err := json.Marshal(api.EnrolRequest{Token: token, CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	hc := deviceClient(t, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: f.h.Authority.Pool()})
	return send(t, hc, f.h.APIURL()+"/v1/enrol", "application/json", bytes.NewReader(body))
}

func goodCSR(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := enrol.CreateCSR(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// TestEnrolmentRefusals checks that enrolment refuses used, expired,
// unknown and foreign tokens, and that a bad CSR does not burn the token.
func TestEnrolmentRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other, err := pki.Open(pki.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	// newConnector creates a pending connector and returns its token.
	newConnector := func(t *testing.T, name string) api.EnrolmentOffer {
		t.Helper()
		o, err := f.c.CreateConnector(ctx, f.ten, name)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	randomToken := func(t *testing.T, ca enrol.Fingerprint) string {
		t.Helper()
		tok, err := enrol.NewToken(rand.Reader, ca)
		if err != nil {
			t.Fatal(err)
		}
		return tok.String()
	}
	rsaCSR := func(t *testing.T) []byte {
		t.Helper()
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		return csr
	}
	badSig := func(t *testing.T) []byte {
		csr := goodCSR(t)
		csr[len(csr)-1] ^= 1
		return csr
	}

	tests := []struct {
		name   string
		token  func(t *testing.T) (string, registry.ConnectorID) // connector "" if none
		csr    func(t *testing.T) []byte
		status int
		msg    string
		// reusable: the token must still work after the refusal.
		reusable bool
	}{
		{
			name: "reused token",
			token: func(t *testing.T) (string, registry.ConnectorID) {
				o := newConnector(t, "reused")
				if _, err := uplink.Enrol(ctx, t.TempDir(), f.h.APIURL(), o.Token, nil); err != nil {
					t.Fatalf("first enrolment: %v", err)
				}
				return o.Token, ""
			},
			csr: goodCSR, status: http.StatusUnauthorized, msg: "already used",
		},
		{
			name: "expired token",
			token: func(t *testing.T) (string, registry.ConnectorID) {
				o := newConnector(t, "expired")
				f.clock.Advance(time.Hour + time.Minute) // EnrolTokenTTL is 1 h
				t.Cleanup(func() { f.clock.Set(0) })
				return o.Token, o.Connector.ID
			},
			csr: goodCSR, status: http.StatusUnauthorized, msg: "expired",
		},
		{
			name: "unknown token",
			token: func(t *testing.T) (string, registry.ConnectorID) {
				return randomToken(t, f.h.Authority.Fingerprint()), ""
			},
			csr: goodCSR, status: http.StatusUnauthorized, msg: "unknown enrolment token",
		},
		{
			name: "token for another hub CA",
			token: func(t *testing.T) (string, registry.ConnectorID) {
				tok := randomToken(t, other.Fingerprint())
				// The agent itself refuses to talk to a hub the token does not pin.
				if _, err := uplink.Enrol(ctx, t.TempDir(), f.h.APIURL(), tok, nil); err == nil || !strings.Contains(err.Error(), "pinned CA") {
					t.Errorf("uplink.Enrol with a foreign token: %v; want the hub refused as not pinned", err)
				}
				return tok, ""
			},
			csr: goodCSR, status: http.StatusUnauthorized, msg: "another hub CA",
		},
		{
			name:  "malformed token",
			token: func(t *testing.T) (string, registry.ConnectorID) { return "cet1_nonsense", "" },
			csr:   goodCSR, status: http.StatusBadRequest, msg: "wrong length",
		},
		{
			name: "malformed CSR",
			token: func(t *testing.T) (string, registry.ConnectorID) {
				o := newConnector(t, "bad-csr")
				return o.Token, o.Connector.ID
			},
			csr: func(t *testing.T) []byte {
				b := make([]byte, 300)
				rand.Read(b)
				return b
			},
			status: http.StatusBadRequest, msg: "malformed CSR", reusable: true,
		},
		{
			name: "missing CSR",
			token: func(t *testing.T) (string, registry.ConnectorID) {
				o := newConnector(t, "no-csr")
				return o.Token, o.Connector.ID
			},
			csr:    func(t *testing.T) []byte { return nil },
			status: http.StatusBadRequest, msg: "missing CSR", reusable: true,
		},
		{
			name: "CSR with a bad signature",
			token: func(t *testing.T) (string, registry.ConnectorID) {
				o := newConnector(t, "bad-sig")
				return o.Token, o.Connector.ID
			},
			csr:    badSig,
			status: http.StatusBadRequest, msg: "signature", reusable: true,
		},
		{
			name: "CSR with an RSA key",
			token: func(t *testing.T) (string, registry.ConnectorID) {
				o := newConnector(t, "rsa-csr")
				return o.Token, o.Connector.ID
			},
			csr:    rsaCSR,
			status: http.StatusBadRequest, msg: "RSA", reusable: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.counts(t)
			tok, conn := tt.token(t)
			wantError(t, f.enrolRaw(t, tok, tt.csr(t)), tt.status, tt.msg)
			if conn != "" {
				if s := f.connectorStatus(t, conn); s != registry.ConnectorPending {
					t.Errorf("connector status %s after a refused enrolment, want pending", s)
				}
			}
			f.unchanged(t, before)
			if tt.reusable {
				creds, err := uplink.Enrol(ctx, t.TempDir(), f.h.APIURL(), tok, nil)
				if err != nil {
					t.Fatalf("enrolment with the same token after the refusal: %v", err)
				}
				if creds.Connector != string(conn) {
					t.Errorf("enrolled as %s, want %s", creds.Connector, conn)
				}
			}
		})
	}
}

// TestDeviceRefusesForeignStreams checks that a connector can write only
// its own devices' streams, and that a request naming any other stream
// stores nothing at all.
func TestDeviceRefusesForeignStreams(t *testing.T) {
	f := newFixture(t)
	hc := deviceClient(t, f.credsA.TLSConfig(""))
	url := f.h.DeviceURL() + "/v1/batches"
	own, foreign := f.a.Streams[0].Key, f.b.Streams[0].Key

	tests := []struct {
		name string
		body []byte
		msg  string
	}{
		{"another household's stream", encode(t, newBatch(t, 10, 3, foreign)), foreign},
		{"own and foreign stream in one batch", encode(t, newBatch(t, 10, 3, own, foreign)), foreign},
		{"own batch then foreign batch in one body", encode(t, newBatch(t, 10, 3, own), newBatch(t, 20, 3, foreign)), foreign},
		{"unregistered stream", encode(t, newBatch(t, 10, 3, own, "house-a-pv/secret_w")), "house-a-pv/secret_w"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.counts(t)
			wantError(t, send(t, hc, url, api.BatchContentType, bytes.NewReader(tt.body)), http.StatusForbidden, "is not a stream of this connector's devices")
			f.unchanged(t, before)
		})
	}
}

// chunked hides a reader's length, so the request is sent chunked.
type chunked struct{ io.Reader }

// TestDeviceRefusesBadInput checks that a valid connector's malformed or
// oversized requests are refused with a JSON error and store nothing.
func TestDeviceRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	hc := deviceClient(t, f.credsA.TLSConfig(""))
	url := f.h.DeviceURL() + "/v1/batches"
	key := f.a.Streams[0].Key

	random := make([]byte, 4096)
	rand.Read(random)
	valid := encode(t, newBatch(t, 10, 50, key))
	huge := make([]byte, wire.MaxBodyBytes+1)

	tests := []struct {
		name        string
		contentType string
		body        io.Reader
		status      int
		msg         string
	}{
		{"random bytes", api.BatchContentType, bytes.NewReader(random), http.StatusBadRequest, "malformed"},
		{"empty body", api.BatchContentType, bytes.NewReader(nil), http.StatusBadRequest, "empty body"},
		{"truncated batch", api.BatchContentType, bytes.NewReader(valid[:len(valid)/2]), http.StatusBadRequest, "malformed"},
		{"valid batch then garbage", api.BatchContentType, bytes.NewReader(append(append([]byte(nil), valid...), "CSTB"...)), http.StatusBadRequest, "malformed"},
		{"oversized body", api.BatchContentType, bytes.NewReader(huge), http.StatusRequestEntityTooLarge, "exceeds"},
		{"oversized chunked body", api.BatchContentType, chunked{bytes.NewReader(huge)}, http.StatusRequestEntityTooLarge, "exceeds"},
		{"wrong content type", "application/json", bytes.NewReader(valid), http.StatusBadRequest, api.BatchContentType},
		{"no content type", "", bytes.NewReader(valid), http.StatusBadRequest, api.BatchContentType},
		{"NaN value", api.BatchContentType, bytes.NewReader(nonFiniteBatch(t, key, math.NaN())), http.StatusBadRequest, "NaN"},
		{"infinite value", api.BatchContentType, bytes.NewReader(nonFiniteBatch(t, key, math.Inf(1))), http.StatusBadRequest, "infinite"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.counts(t)
			wantError(t, send(t, hc, url, tt.contentType, tt.body), tt.status, tt.msg)
			f.unchanged(t, before)
		})
	}
	// The connector can still send afterwards.
	wantResult(t, send(t, hc, url, api.BatchContentType, bytes.NewReader(valid)), ingest.Result{Batches: 1, Readings: 50})
}

// TestDeviceReplayStoredOnce checks that a batch sent again (a retry after
// a lost answer) is acknowledged but stored once.
func TestDeviceReplayStoredOnce(t *testing.T) {
	f := newFixture(t)
	hc := deviceClient(t, f.credsA.TLSConfig(""))
	url := f.h.DeviceURL() + "/v1/batches"
	key := f.a.Streams[0].Key
	before := f.counts(t)

	b := encode(t, newBatch(t, 10, 7, key))
	wantResult(t, send(t, hc, url, api.BatchContentType, bytes.NewReader(b)), ingest.Result{Batches: 1, Readings: 7})
	wantResult(t, send(t, hc, url, api.BatchContentType, bytes.NewReader(b)), ingest.Result{Batches: 1, Readings: 0, Duplicates: 1})

	// The same batch twice in one body, and a replay over a new connection.
	c := encode(t, newBatch(t, 20, 3, key))
	wantResult(t, send(t, hc, url, api.BatchContentType, bytes.NewReader(append(append([]byte(nil), c...), c...))), ingest.Result{Batches: 2, Readings: 3, Duplicates: 1})
	wantResult(t, send(t, deviceClient(t, f.credsA.TLSConfig("")), url, api.BatchContentType, bytes.NewReader(c)), ingest.Result{Batches: 1, Readings: 0, Duplicates: 1})

	before[key] += 7 + 3
	f.unchanged(t, before)
}
