package mqtt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/custos-iot/custos/internal/source"
	"github.com/custos-iot/custos/internal/source/sim"
	"github.com/custos-iot/custos/internal/testenv"
)

// broker is a Mosquitto started by a test on its own port and config.
type broker struct {
	t    *testing.T
	conf string
	port int
	cmd  *exec.Cmd
	tls  *tls.Config // for clients, when the listener is TLS
	dir  string

	exited chan struct{} // closed when the current process has exited
}

type brokerOpts struct {
	user, pass string // require this login when set
	tls        bool
}

func mosquittoPath(t *testing.T) string {
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	testenv.Unavailable(t, "Mosquitto", "apt-get install mosquitto")
	return ""
}

func startBroker(t *testing.T, o brokerOpts) *broker {
	t.Helper()
	bin := mosquittoPath(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	b := &broker{t: t, port: port, dir: t.TempDir()}
	var conf strings.Builder
	fmt.Fprintf(&conf, "listener %d 127.0.0.1\npersistence false\nlog_type error\nlog_type warning\n", port)
	if u, err := user.Current(); err == nil {
		// Run as the test's user: as root Mosquitto would switch to
		// "mosquitto", who cannot read the test's files.
		fmt.Fprintf(&conf, "user %s\n", u.Username)
	}
	if o.user != "" {
		pw, err := exec.LookPath("mosquitto_passwd")
		if err != nil {
			testenv.Unavailable(t, "mosquitto_passwd", "apt-get install mosquitto")
		}
		file := filepath.Join(b.dir, "passwd")
		if out, err := exec.Command(pw, "-b", "-c", file, o.user, o.pass).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
		os.Chmod(file, 0o600)
		fmt.Fprintf(&conf, "allow_anonymous false\npassword_file %s\n", file)
	} else {
		conf.WriteString("allow_anonymous true\n")
	}
	if o.tls {
		ca, certFile, keyFile := testPKI(t, b.dir)
		fmt.Fprintf(&conf, "cafile %s\ncertfile %s\nkeyfile %s\n", filepath.Join(b.dir, "ca.pem"), certFile, keyFile)
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		b.tls = &tls.Config{RootCAs: pool, ServerName: "localhost"}
	}
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	if err := os.WriteFile(b.conf, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command(bin)
	b.start()
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			out, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
			t.Logf("mosquitto log:\n%s", out)
		}
	})
	return b
}

// start runs the broker and waits until it accepts connections.
func (b *broker) start() {
	b.t.Helper()
	b.cmd = exec.Command(b.cmd.Path, "-c", b.conf)
	logf, err := os.OpenFile(filepath.Join(b.dir, "mosquitto.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.t.Fatal(err)
	}
	defer logf.Close()
	b.cmd.Stderr = logf
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan struct{})
	cmd := b.cmd
	go func() { cmd.Wait(); close(exited) }()
	b.exited = exited
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.addr(), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			b.t.Fatalf("mosquitto exited: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto does not listen on %s", b.addr())
		}
		time.Sleep(20 * time.Millisecond) // polling the port; nothing to wait on
	}
}

func (b *broker) stop() {
	if b.cmd != nil && b.cmd.Process != nil {
		b.cmd.Process.Kill()
		<-b.exited
		b.cmd.Process = nil
	}
}

func (b *broker) addr() string { return fmt.Sprintf("127.0.0.1:%d", b.port) }

func (b *broker) url() string {
	if b.tls != nil {
		return "mqtts://" + b.addr()
	}
	return "mqtt://" + b.addr()
}

// publisher is a plain paho client for the test's device side.
type publisher struct {
	t *testing.T
	c *paho.Client
}

func (b *broker) publisher(user, pass string) *publisher {
	b.t.Helper()
	var conn net.Conn
	var err error
	if b.tls != nil {
		conn, err = tls.Dial("tcp", b.addr(), b.tls)
	} else {
		conn, err = net.Dial("tcp", b.addr())
	}
	if err != nil {
		b.t.Fatal(err)
	}
	// paho writes a packet in several Writes; a tls.Conn needs the lock
	// the wrapper adds, or the pinger's PINGREQ can land inside a PUBLISH.
	c := paho.NewClient(paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn), ClientID: fmt.Sprintf("pub-%d", time.Now().UnixNano())})
	cp := &paho.Connect{KeepAlive: 30, CleanStart: true, ClientID: c.ClientID()}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(pass), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, cp); err != nil {
		b.t.Fatalf("publisher connect: %v", err)
	}
	p := &publisher{t: b.t, c: c}
	b.t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return p
}

func (p *publisher) pub(topic, payload string, retain bool) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: 1, Retain: retain}); err != nil {
		p.t.Fatalf("publish %s: %v", topic, err)
	}
}

// testPKI writes a CA and a server certificate for localhost/127.0.0.1.
func testPKI(t *testing.T, dir string) (*x509.Certificate, string, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "custos test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("ca.pem", "CERTIFICATE", caDER)
	return ca, write("server.pem", "CERTIFICATE", der), write("server.key", "EC PRIVATE KEY", keyDER)
}

type collector chan source.Reading

func (c collector) emit(rs []source.Reading) error {
	for _, r := range rs {
		c <- r
	}
	return nil
}

// expect reads readings until it has one for every key in want (later
// values for a key replace earlier ones) and checks the values.
func (c collector) expect(t *testing.T, want map[string]float64) {
	t.Helper()
	got := map[string]float64{}
	timeout := time.After(45 * time.Second) // generous: CI runs this under the race detector on a loaded machine
	for len(got) < len(want) {
		select {
		case r := <-c:
			if _, ok := want[r.Key]; !ok {
				t.Errorf("unexpected reading %s = %v", r.Key, r.Value)
				continue
			}
			got[r.Key] = r.Value
		case <-timeout:
			t.Fatalf("timed out; have %v, want %v", got, want)
		}
	}
	for k, v := range want {
		if abs(got[k]-v) > 1e-9 {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

const (
	tasmotaSensor = `{"Time":"2023-11-26T12:00:00","ENERGY":{"TotalStartTime":"2023-01-01T00:00:00","Total":12.345,"Yesterday":0.5,"Today":0.1,"Power":450,"ApparentPower":500,"ReactivePower":100,"Factor":0.9,"Voltage":231,"Current":1.95}}`
	shellySwitch  = `{"id":0,"source":"timer","output":true,"apower":1200.5,"voltage":229.8,"current":5.2,"aenergy":{"total":5432.1,"by_minute":[1,2,3],"minute_ts":1700000000},"temperature":{"tC":45.1,"tF":113.2}}`
	shellyEM      = `{"id":0,"a_current":1.1,"a_voltage":230.1,"a_act_power":250.5,"a_aprt_power":260,"a_pf":0.96,"b_current":1.2,"b_voltage":231.2,"b_act_power":240,"b_aprt_power":250,"b_pf":0.95,"c_current":1,"c_voltage":229.9,"c_act_power":260,"c_aprt_power":270,"c_pf":0.97,"n_current":null,"total_current":3.3,"total_act_power":750.5,"total_aprt_power":780}`
)

// TestBroker runs the source against a real Mosquitto with a password:
// Home Assistant (statestream and discovery), Tasmota, Shelly switch and
// EM payloads, malformed ones counted by reason, and a broker restart
// after which the source reconnects and subscribes again (including to
// a discovered state topic).
func TestBroker(t *testing.T) {
	b := startBroker(t, brokerOpts{user: "custos", pass: "s3cret"})
	pub := b.publisher("custos", "s3cret")
	// Retained before the source starts: delivered on subscription.
	pub.pub("homeassistant/sensor/inverter/pv_power/config",
		`{"name":"PV power","~":"pv/inverter","stat_t":"~/state","unit_of_meas":"kW","dev_cla":"power","val_tpl":"{{ value_json.power | float }}"}`, true)
	pub.pub("pv/inverter/state", `{"power":2.5}`, true)
	pub.pub("homeassistant/sensor/heatpump_cop/config", `{"state_topic":"hp/state","value_template":"{{ value_json.cop * 1 }}"}`, true)

	s, err := New(Config{
		Broker: b.url(), Username: "custos", Password: "s3cret",
		MinBackoff: sim.Duration(50 * time.Millisecond), MaxBackoff: sim.Duration(500 * time.Millisecond),
		HomeAssistant: HomeAssistant{
			StatestreamBase: "homeassistant_statestream",
			Entities:        []Entity{{Entity: "sensor.grid_power", Key: "house/grid_power_w", Unit: "W"}},
			Discovered: []Discovered{
				{ObjectID: "pv_power", Key: "pv/power_w", Unit: "W"},
				{ObjectID: "heatpump_cop", Key: "heatpump/cop"},
			},
		},
		Tasmota: []Tasmota{{Topic: "washer", Device: "washer"}},
		Shelly: []Shelly{
			{Prefix: "shellyplus1pm-a8032ab12345", Device: "boiler"},
			{Prefix: "shellypro3em-c8f09e123456", Component: "em:0", Device: "mains"},
		},
		Topics: []Topic{{Topic: "custom/room/temperature", Key: "room/temperature_c"}},
		Log:    slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(collector, 1000)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil, got.emit) }()

	got.expect(t, map[string]float64{"pv/power_w": 2500})

	// Live messages from one publisher arrive in order: once the last
	// one is read, all before it have been handled.
	pub.pub("homeassistant_statestream/sensor/grid_power/attributes", `{"unit_of_measurement":"kW","friendly_name":"Grid"}`, false)
	pub.pub("homeassistant_statestream/sensor/grid_power/state", "1.5", false)
	pub.pub("tele/washer/SENSOR", tasmotaSensor, false)
	pub.pub("shellyplus1pm-a8032ab12345/status/switch:0", shellySwitch, false)
	pub.pub("shellypro3em-c8f09e123456/status/em:0", shellyEM, false)
	// Malformed:
	pub.pub("tele/washer/SENSOR", `{"ENERGY":`, false)                                 // invalid_json ×1
	pub.pub("shellyplus1pm-a8032ab12345/status/switch:0", `{"apower":"n/a"}`, false)   // not_number, missing_field ×3
	pub.pub("homeassistant_statestream/sensor/grid_power/state", "unavailable", false) // unavailable
	pub.pub("custom/room/temperature", strings.Repeat("9", MaxPayloadBytes+1), false)  // too_large
	pub.pub("custom/room/temperature", "NaN", false)                                   // not_number
	pub.pub("homeassistant_statestream/sensor/grid_power/attributes", `{"unit_of_measurement":"°C"}`, false)
	pub.pub("homeassistant_statestream/sensor/grid_power/state", "20", false) // unit_mismatch
	pub.pub("custom/room/temperature", "21.5", false)
	got.expect(t, map[string]float64{
		"house/grid_power_w":     1500,
		"washer/energy_total_wh": 12345, "washer/power_w": 450, "washer/voltage_v": 231, "washer/current_a": 1.95,
		"boiler/power_w": 1200.5, "boiler/voltage_v": 229.8, "boiler/current_a": 5.2, "boiler/energy_total_wh": 5432.1,
		"mains/power_w": 750.5, "mains/current_a": 3.3,
		"mains/power_l1_w": 250.5, "mains/power_l2_w": 240, "mains/power_l3_w": 260,
		"mains/voltage_l1_v": 230.1, "mains/voltage_l2_v": 231.2, "mains/voltage_l3_v": 229.9,
		"mains/current_l1_a": 1.1, "mains/current_l2_a": 1.2, "mains/current_l3_a": 1,
		"room/temperature_c": 21.5,
	})
	st := s.Stats()
	want := map[Reason]uint64{
		ReasonInvalidJSON: 1, ReasonNotNumber: 2, ReasonMissingField: 3, ReasonUnavailable: 1,
		ReasonTooLarge: 1, ReasonUnitMismatch: 1, ReasonUnsupportedTemplate: 1,
	}
	for _, r := range Reasons() {
		if st.Dropped[r] != want[r] {
			t.Errorf("dropped[%s] = %d, want %d", r, st.Dropped[r], want[r])
		}
	}
	if !st.Connected || st.Connects != 1 {
		t.Errorf("stats = %+v", st)
	}

	// The broker restarts, losing its retained messages and sessions.
	b.stop()
	b.start()
	pub = b.publisher("custos", "s3cret")
	// Retained again so they reach the source whenever it resubscribes.
	pub.pub("pv/inverter/state", `{"power":3}`, true)
	pub.pub("custom/room/temperature", "22", true)
	got.expect(t, map[string]float64{"pv/power_w": 3000, "room/temperature_c": 22})
	if st := s.Stats(); st.Connects < 2 || st.Failures < 1 {
		t.Errorf("after restart: stats = %+v", st)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// TestBrokerTLS connects over TLS to a broker whose certificate a test
// CA signed, with a password; a wrong password never connects and is
// counted as a failure.
func TestBrokerTLS(t *testing.T) {
	b := startBroker(t, brokerOpts{user: "custos", pass: "s3cret", tls: true})
	pub := b.publisher("custos", "s3cret")
	pub.pub("custom/meter/power", `{"w":42}`, true)
	passFile := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(passFile, []byte("s3cret\n"), 0o600)
	cfg := Config{
		Broker: b.url(), Username: "custos", PasswordFile: passFile,
		TLS:        TLS{CAFile: filepath.Join(b.dir, "ca.pem"), ServerName: "localhost"},
		MinBackoff: sim.Duration(50 * time.Millisecond), MaxBackoff: sim.Duration(200 * time.Millisecond),
		Topics: []Topic{{Topic: "custom/meter/power", Field: "w", Key: "meter/power_w"}},
		Log:    slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(collector, 10)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("source stats: %+v", s.Stats())
		}
	})
	go s.Run(ctx, nil, got.emit)
	got.expect(t, map[string]float64{"meter/power_w": 42})

	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"wrong password", func(c *Config) { c.PasswordFile, c.Password = "", "wrong" }},
		{"untrusted CA", func(c *Config) { c.TLS.CAFile = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.mod(&c)
			s, err := New(c)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			bad := make(collector, 10)
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx, nil, bad.emit) }()
			deadline := time.Now().Add(10 * time.Second)
			for s.Stats().Failures < 2 {
				if time.Now().After(deadline) {
					t.Fatal("no failed connection attempts counted")
				}
				time.Sleep(20 * time.Millisecond)
			}
			cancel()
			<-done
			if st := s.Stats(); st.Connects != 0 || len(bad) != 0 {
				t.Errorf("connected anyway: %+v", st)
			}
		})
	}
}
