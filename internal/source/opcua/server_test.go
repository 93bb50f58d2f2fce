package opcua

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"

	"github.com/custos-iot/custos/internal/source"
	"github.com/custos-iot/custos/internal/source/sim"
	"github.com/custos-iot/custos/internal/wire"
)

// plc is a real OPC UA server (gopcua's server package) on 127.0.0.1
// whose variables the test sets. Values live in the test, behind a mutex,
// and the server reads them through value functions.
type plc struct {
	port int
	cert []byte
	key  *rsa.PrivateKey
	sec  Security

	mu   sync.Mutex
	vals map[string]*ua.DataValue

	srv  *server.Server
	ns   uint16
	stop context.CancelFunc
}

var plcNodes = []string{"flow_temp", "pump_on", "energy", "label", "status"}

func newPLC(t *testing.T, sec Security, cert []byte, key *rsa.PrivateKey) *plc {
	return &plc{port: freePort(t), cert: cert, key: key, sec: sec, vals: map[string]*ua.DataValue{}}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (p *plc) endpoint() string { return fmt.Sprintf("opc.tcp://127.0.0.1:%d", p.port) }

func (p *plc) start(t *testing.T) {
	t.Helper()
	opts := []server.Option{server.EndPoint("127.0.0.1", p.port)}
	if p.sec == SecurityNone {
		opts = append(opts, server.EnableSecurity("None", ua.MessageSecurityModeNone),
			server.EnableAuthMode(ua.UserTokenTypeAnonymous))
	} else {
		// Only Basic256Sha256 with SignAndEncrypt and certificate user
		// tokens are offered, so a session proves the source used them.
		opts = append(opts, server.EnableSecurity("Basic256Sha256", ua.MessageSecurityModeSignAndEncrypt),
			server.EnableAuthMode(ua.UserTokenTypeCertificate),
			server.PrivateKey(p.key), server.Certificate(p.cert))
	}
	s := server.New(opts...)
	ns := server.NewNodeNameSpace(s, "urn:custos:test-plc")
	for _, name := range plcNodes {
		n := server.NewVariableNode(ua.NewStringNodeID(ns.ID(), name), name, func() *ua.DataValue {
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.vals[name]
		})
		ns.AddNode(n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		cancel()
		t.Fatalf("start server: %v", err)
	}
	p.srv, p.ns, p.stop = s, ns.ID(), cancel
}

func (p *plc) close() {
	p.srv.Close()
	p.stop()
}

// set changes a variable and has the server report the change.
func (p *plc) set(name string, dv *ua.DataValue) {
	p.mu.Lock()
	p.vals[name] = dv
	p.mu.Unlock()
	if p.srv != nil {
		p.srv.ChangeNotification(ua.NewStringNodeID(p.ns, name))
	}
}

func dv(v any, ts time.Time, status ua.StatusCode) *ua.DataValue {
	return &ua.DataValue{
		EncodingMask:    ua.DataValueValue | ua.DataValueStatusCode | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
		Value:           ua.MustVariant(v),
		Status:          status,
		SourceTimestamp: ts,
		ServerTimestamp: ts.Add(time.Millisecond),
	}
}

func selfSigned(t *testing.T, uri string) ([]byte, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(uri)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test plc"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		URIs:                  []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// collector is the agent's side: it records emitted readings and hands
// them to the test one by one.
type collector struct {
	mu  sync.Mutex
	all []source.Reading
	ch  chan source.Reading
}

func newCollector() *collector { return &collector{ch: make(chan source.Reading, 1000)} }

func (c *collector) emit(rs []source.Reading) error {
	c.mu.Lock()
	c.all = append(c.all, rs...)
	c.mu.Unlock()
	for _, r := range rs {
		c.ch <- r
	}
	return nil
}

// next returns the next emitted reading; the timeout only bounds a
// failing test.
func (c *collector) next(t *testing.T) source.Reading {
	t.Helper()
	select {
	case r := <-c.ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no reading within 20 s")
		return source.Reading{}
	}
}

// expect reads len(want) readings (in any order across streams) and
// checks them against want.
func (c *collector) expect(t *testing.T, want ...source.Reading) {
	t.Helper()
	left := map[source.Reading]bool{}
	for _, w := range want {
		left[w] = true
	}
	for range want {
		r := c.next(t)
		if !left[r] {
			t.Fatalf("unexpected reading %+v; still waiting for %v", r, left)
		}
		delete(left, r)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func rd(key string, ts time.Time, v float64, q wire.Quality) source.Reading {
	return source.Reading{Key: key, Reading: wire.Reading{Time: ts.UnixMilli(), Value: v, Quality: q}}
}

func testConfig(p *plc, dir string) Config {
	return Config{
		Endpoint: p.endpoint(),
		Device:   "plc",
		Nodes: []Node{
			{NodeID: "ns=1;s=flow_temp", Metric: "flow_temp_c"},
			{NodeID: "ns=1;s=pump_on", Metric: "pump_on"},
			{NodeID: "ns=1;s=energy", Device: "meter", Metric: "energy_wh"},
			{NodeID: "ns=1;s=label", Metric: "label"},
			{NodeID: "ns=1;s=status", Metric: "pressure_bar"},
		},
		Security:        p.sec,
		StateDir:        dir,
		PublishInterval: sim.Duration(20 * time.Millisecond),
		RequestTimeout:  sim.Duration(5 * time.Second),
		ProbeEvery:      sim.Duration(100 * time.Millisecond),
		MinBackoff:      sim.Duration(20 * time.Millisecond),
		MaxBackoff:      sim.Duration(200 * time.Millisecond),
		Log:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// TestSignAndEncryptRestart runs the source against a real OPC UA server
// that offers only Basic256Sha256 + SignAndEncrypt with certificate user
// tokens, stops it mid-stream and restarts it on the same port.
//
// What it proves, precisely: (1) every value the server holds when the
// source (re)subscribes is emitted, once; (2) every change the server
// publishes after that is emitted, once, in order, with its source
// timestamp and mapped quality; (3) a value the restarted server still
// holds unchanged (same source timestamp) is not emitted again; (4) the
// value set while the source was disconnected is the server's current
// value at resubscription and arrives. It cannot prove more: an OPC UA
// server keeps no history for an absent client, and gopcua's server
// coalesces changes of one item within a publishing interval (queue size
// 1), so the test changes a variable only after the previous change of
// that variable arrived.
func TestSignAndEncryptRestart(t *testing.T) {
	cert, key := selfSigned(t, "urn:custos:test-plc")
	p := newPLC(t, SecurityBasic256Sha256, cert, key)
	t0 := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	p.set("flow_temp", dv(40.5, at(0), ua.StatusOK))
	p.set("pump_on", dv(true, at(0), ua.StatusOK))
	p.set("energy", dv(uint32(1000), at(0), ua.StatusOK))
	p.set("label", dv("secret label", at(0), ua.StatusOK))
	p.set("status", dv(float32(1.5), at(0), ua.StatusUncertain))
	p.start(t)
	defer func() { p.close() }()

	dir := t.TempDir()
	src, err := New(testConfig(p, dir))
	if err != nil {
		t.Fatal(err)
	}
	col := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, nil, col.emit) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	col.expect(t,
		rd("plc/flow_temp_c", at(0), 40.5, 0),
		rd("plc/pump_on", at(0), 1, 0),
		rd("meter/energy_wh", at(0), 1000, 0),
		rd("plc/pressure_bar", at(0), 1.5, wire.QualityUncertain),
	)
	for i := 1; i <= 5; i++ {
		p.set("flow_temp", dv(40.5+float64(i), at(i), ua.StatusOK))
		p.set("energy", dv(uint32(1000+i), at(i), ua.StatusOK))
		col.expect(t, rd("plc/flow_temp_c", at(i), 40.5+float64(i), 0), rd("meter/energy_wh", at(i), float64(1000+i), 0))
	}
	p.set("status", dv(float32(0), at(6), ua.StatusBadNoCommunication))
	p.set("status", dv(float32(2.5), at(7), ua.StatusOK)) // may coalesce with the Bad one
	for r := col.next(t); r.Reading.Time != at(7).UnixMilli(); r = col.next(t) {
		if want := rd("plc/pressure_bar", at(6), 0, wire.QualityBad); r != want {
			t.Fatalf("got %+v, want %+v", r, want)
		}
	}

	// The agent's material: key 0600, server certificate trusted on first use.
	if fi, err := os.Stat(filepath.Join(dir, "opcua", appKeyName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("application key: %v, %v", fi, err)
	}
	if got, err := os.ReadFile(tofuPath(dir, p.endpoint())); err != nil || string(got) != string(cert) {
		t.Fatalf("trusted server certificate not stored: %v", err)
	}

	// Stop the server mid-stream. While it is down, flow_temp changes;
	// pump_on and energy keep their values and timestamps.
	p.close()
	eventually(t, "the source to notice", func() bool { return !src.Stats().Connected })
	p.srv = nil
	p.set("flow_temp", dv(99.0, at(20), ua.StatusOK))
	p.start(t) // same port, same certificate
	col.expect(t, rd("plc/flow_temp_c", at(20), 99, 0))
	for i := 21; i <= 25; i++ {
		p.set("flow_temp", dv(float64(i), at(i), ua.StatusOK))
		p.set("pump_on", dv(i%2 == 0, at(i), ua.StatusOK))
		col.expect(t, rd("plc/flow_temp_c", at(i), float64(i), 0), rd("plc/pump_on", at(i), float64((i+1)%2), 0))
	}

	st := src.Stats()
	if st.Connects != 2 || st.Failures < 1 {
		t.Errorf("connects %d failures %d, want 2 and ≥1", st.Connects, st.Failures)
	}
	// Repeats after resubscription: pump_on, energy and status (2.5).
	if st.Dropped[ReasonStale] != 3 {
		t.Errorf("dropped stale = %d, want 3", st.Dropped[ReasonStale])
	}
	if st.Dropped[ReasonNotNumeric] != 2 { // the label, at each subscription
		t.Errorf("dropped not_numeric = %d, want 2", st.Dropped[ReasonNotNumeric])
	}
	// Nothing emitted twice, times strictly increasing per stream.
	col.mu.Lock()
	lastT := map[string]int64{}
	for _, r := range col.all {
		if prev, ok := lastT[r.Key]; ok && r.Time <= prev {
			t.Errorf("%s: time %d after %d", r.Key, r.Time, prev)
		}
		lastT[r.Key] = r.Time
	}
	if uint64(len(col.all)) != st.Readings {
		t.Errorf("emitted %d readings, stats say %d", len(col.all), st.Readings)
	}
	col.mu.Unlock()
}

// TestSecurityNone: security none works when configured, with an
// anonymous session, and keeps no certificates.
func TestSecurityNone(t *testing.T) {
	p := newPLC(t, SecurityNone, nil, nil)
	ts := time.Now().UTC().Truncate(time.Millisecond)
	for _, n := range plcNodes {
		p.set(n, dv(int16(-7), ts, ua.StatusOK))
	}
	p.start(t)
	defer p.close()
	dir := t.TempDir()
	src, err := New(testConfig(p, dir))
	if err != nil {
		t.Fatal(err)
	}
	col := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, nil, col.emit) }()
	col.expect(t, rd("plc/flow_temp_c", ts, -7, 0), rd("plc/pump_on", ts, -7, 0), rd("meter/energy_wh", ts, -7, 0),
		rd("plc/label", ts, -7, 0), rd("plc/pressure_bar", ts, -7, 0))
	cancel()
	<-done
	if _, err := os.Stat(filepath.Join(dir, "opcua")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("security none wrote %s/opcua: %v", dir, err)
	}
}

// TestPinnedCertificateMismatch: a server presenting another certificate
// than the pinned one gets no session, and the failures are counted.
func TestPinnedCertificateMismatch(t *testing.T) {
	cert, key := selfSigned(t, "urn:custos:test-plc")
	other, _ := selfSigned(t, "urn:custos:test-plc")
	p := newPLC(t, SecurityBasic256Sha256, cert, key)
	p.set("flow_temp", dv(1.0, time.Now(), ua.StatusOK))
	p.start(t)
	defer p.close()
	dir := t.TempDir()
	pin := filepath.Join(dir, "pinned.pem")
	if err := os.WriteFile(pin, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(p, dir)
	cfg.ServerCertFile = pin
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.serverCert(cert); !errors.Is(err, ErrServerCertMismatch) {
		t.Fatalf("serverCert: %v, want ErrServerCertMismatch", err)
	}
	col := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, nil, col.emit) }()
	eventually(t, "two failed attempts", func() bool { return src.Stats().Failures >= 2 })
	cancel()
	<-done
	if st := src.Stats(); st.Connects != 0 || st.Readings != 0 {
		t.Errorf("connects %d readings %d with a wrong server certificate", st.Connects, st.Readings)
	}
}
