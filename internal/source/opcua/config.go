package opcua

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/custos-iot/custos/internal/source"
	"github.com/custos-iot/custos/internal/source/sim"
	"github.com/custos-iot/custos/internal/wire"
)

// Security selects the secure channel's policy and mode.
type Security string

// Security values.
const (
	// SecurityBasic256Sha256 is policy Basic256Sha256 with message
	// security mode SignAndEncrypt. It is the default ("").
	SecurityBasic256Sha256 Security = "basic256sha256"
	// SecurityNone is policy None: no signing, no encryption, anonymous.
	// It must be configured explicitly.
	SecurityNone Security = "none"
)

// Auth selects the session's user identity token.
type Auth string

// Auth values.
const (
	// AuthCertificate authenticates with an X.509 identity token signed
	// with the application key. It is the default with Basic256Sha256.
	AuthCertificate Auth = "certificate"
	// AuthAnonymous opens an anonymous session; the secure channel is
	// still authenticated by the application certificate unless security
	// is none. It is the only choice with security none.
	AuthAnonymous Auth = "anonymous"
)

// Node maps one OPC UA variable node to a stream.
type Node struct {
	// NodeID is the node in OPC UA string notation, e.g.
	// "ns=2;s=Boiler.FlowTemp" or "ns=3;i=1042". Required.
	NodeID string `json:"node_id"`
	// Device is the first segment of the stream key. Default: the
	// source's Device.
	Device string `json:"device,omitempty"`
	// Metric is the second segment of the stream key. Required.
	Metric string `json:"metric"`
}

// Config configures an OPC UA source: one server, one subscription.
type Config struct {
	// Endpoint is the server's URL, "opc.tcp://host:port[/path]". Required.
	Endpoint string `json:"endpoint"`
	// Device is the default first segment of the nodes' stream keys.
	// Required unless every node names its device.
	Device string `json:"device,omitempty"`
	// Nodes are the monitored variables. At least one; each stream key
	// and each node ID at most once.
	Nodes []Node `json:"nodes"`
	// Meters maps device names of the nodes' keys to the serial of the
	// meter behind them, reported with every batch so that the hub can
	// check it against the device's registered serial.
	Meters source.Meters `json:"meters,omitempty"`
	// Security is "basic256sha256" (the default: Basic256Sha256,
	// SignAndEncrypt) or "none".
	Security Security `json:"security,omitempty"`
	// Auth is "certificate" (the default with basic256sha256) or
	// "anonymous" (the default, and only choice, with none).
	Auth Auth `json:"auth,omitempty"`
	// CertFile and KeyFile are the agent's application certificate (PEM
	// or DER) and RSA private key (PEM, PKCS#1 or PKCS#8). Both or
	// neither; default: generated on first use in StateDir/opcua.
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// ServerCertFile pins the server's certificate (PEM or DER). Default:
	// trust on first use, remembered in StateDir/opcua.
	ServerCertFile string `json:"server_cert_file,omitempty"`
	// PublishInterval is the subscription's requested publishing
	// interval. Default 1 s.
	PublishInterval sim.Duration `json:"publish_interval,omitempty"`
	// SamplingInterval is the monitored items' requested sampling
	// interval. Default: PublishInterval.
	SamplingInterval sim.Duration `json:"sampling_interval,omitempty"`
	// QueueSize is the monitored items' requested server-side queue
	// length (the oldest is discarded when full). Default 10.
	QueueSize uint32 `json:"queue_size,omitempty"`
	// RequestTimeout bounds each request and the connection set-up.
	// Default 10 s.
	RequestTimeout sim.Duration `json:"request_timeout,omitempty"`
	// ProbeEvery is how often the source reads the server's state to
	// detect a dead connection that the transport does not report.
	// Default 15 s.
	ProbeEvery sim.Duration `json:"probe_every,omitempty"`
	// MinBackoff and MaxBackoff bound the wait before reconnecting; it
	// doubles after each failure and resets after a session that
	// delivered data. Defaults 1 s and 1 min.
	MinBackoff sim.Duration `json:"min_backoff,omitempty"`
	MaxBackoff sim.Duration `json:"max_backoff,omitempty"`
	// StateDir is the agent's state directory, where a generated
	// application certificate and trusted-on-first-use server
	// certificates live. Required unless security is none, or CertFile,
	// KeyFile and ServerCertFile are all set. The agent sets it.
	StateDir string `json:"-"`
	// Now is the clock for values without any timestamp. Default time.Now.
	Now func() time.Time `json:"-"`
	// Log receives connection events, never values. Default slog.Default().
	Log *slog.Logger `json:"-"`
}

// Reason says why a notification was dropped. The values are stable: the
// agent reports them as "dropped_<reason>" counters.
type Reason string

// Reasons.
const (
	ReasonNotNumeric Reason = "not_numeric"  // a value of a non-numeric type (string, array, structure)
	ReasonNotFinite  Reason = "not_finite"   // NaN or ±Inf
	ReasonBadNoValue Reason = "bad_no_value" // a Bad status without a numeric value
	ReasonStale      Reason = "stale"        // not after the last reading of the stream (a repeat)
	ReasonBadTime    Reason = "bad_time"     // a timestamp outside the wire's range
)

// Reasons lists every reason, in a fixed order.
func Reasons() []Reason {
	return []Reason{ReasonNotNumeric, ReasonNotFinite, ReasonBadNoValue, ReasonStale, ReasonBadTime}
}

// Stats are the source's counters for the agent's health report.
type Stats struct {
	Connected     bool              // a session with a live subscription exists now
	Connects      uint64            // sessions established and subscribed
	Failures      uint64            // failed connection attempts and lost sessions
	Notifications uint64            // monitored-item notifications received
	Readings      uint64            // readings emitted
	Dropped       map[Reason]uint64 // notifications not emitted, by reason
}

// Source subscribes to one OPC UA server. It implements source.Source.
type Source struct {
	cfg   Config
	nodes []*ua.NodeID
	keys  []string

	// secured only
	cert      []byte
	key       *rsa.PrivateKey
	pinnedDER []byte // from ServerCertFile
	tofuPath  string // where a trusted-on-first-use certificate lives

	connected                                       atomic.Bool
	connects, failures, notifications, readingsSent atomic.Uint64
	dropped                                         [5]atomic.Uint64 // indexed like Reasons()
}

var _ source.Source = (*Source)(nil)

// New checks cfg, loads or creates the application certificate and returns
// a source. It does not connect.
func New(cfg Config) (*Source, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Security == "" {
		cfg.Security = SecurityBasic256Sha256
	}
	if cfg.Auth == "" {
		cfg.Auth = AuthCertificate
		if cfg.Security == SecurityNone {
			cfg.Auth = AuthAnonymous
		}
	}
	if cfg.PublishInterval <= 0 {
		cfg.PublishInterval = sim.Duration(time.Second)
	}
	if cfg.SamplingInterval <= 0 {
		cfg.SamplingInterval = cfg.PublishInterval
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 10
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = sim.Duration(10 * time.Second)
	}
	if cfg.ProbeEvery <= 0 {
		cfg.ProbeEvery = sim.Duration(15 * time.Second)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = sim.Duration(time.Second)
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, sim.Duration(time.Minute))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Source{cfg: cfg}
	for _, n := range cfg.Nodes {
		id, _ := ua.ParseNodeID(n.NodeID) // checked
		s.nodes = append(s.nodes, id)
		s.keys = append(s.keys, n.key(cfg.Device))
	}
	if cfg.Security == SecurityNone {
		return s, nil
	}
	var err error
	if s.cert, s.key, err = loadOrCreateAppCert(cfg.CertFile, cfg.KeyFile, cfg.StateDir); err != nil {
		return nil, fmt.Errorf("opcua: %w", err)
	}
	if cfg.ServerCertFile != "" {
		if s.pinnedDER, err = readCert(cfg.ServerCertFile); err != nil {
			return nil, fmt.Errorf("opcua: server_cert_file: %w", err)
		}
	} else {
		s.tofuPath = tofuPath(cfg.StateDir, cfg.Endpoint)
	}
	return s, nil
}

func (n Node) key(def string) string {
	d := n.Device
	if d == "" {
		d = def
	}
	return d + "/" + n.Metric
}

func segment(s string) bool {
	return s != "" && !strings.Contains(s, "/") && wire.ValidKey(s+"/x")
}

// check validates the configuration without touching the file system.
func (c *Config) check() error {
	u, err := url.Parse(c.Endpoint)
	switch {
	case c.Endpoint == "":
		return errors.New("opcua: endpoint required")
	case err != nil || u.Scheme != "opc.tcp" || u.Host == "":
		return fmt.Errorf("opcua: endpoint must be opc.tcp://host:port")
	}
	switch c.Security {
	case "", SecurityBasic256Sha256:
		switch c.Auth {
		case "", AuthCertificate, AuthAnonymous:
		default:
			return fmt.Errorf("opcua: auth must be %q or %q", AuthCertificate, AuthAnonymous)
		}
		needDir := c.CertFile == "" || c.ServerCertFile == ""
		if needDir && c.StateDir == "" {
			return errors.New("opcua: no state directory for the generated application certificate or the trusted server certificate")
		}
	case SecurityNone:
		if c.Auth != "" && c.Auth != AuthAnonymous {
			return errors.New("opcua: security none allows only anonymous auth")
		}
		if c.CertFile != "" || c.KeyFile != "" || c.ServerCertFile != "" {
			return errors.New("opcua: security none uses no certificates; remove cert_file, key_file and server_cert_file")
		}
	default:
		return fmt.Errorf("opcua: security must be %q (the default) or %q", SecurityBasic256Sha256, SecurityNone)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("opcua: cert_file and key_file go together")
	}
	if c.Device != "" && !segment(c.Device) {
		return errors.New("opcua: device must be one stream key segment ([A-Za-z0-9._-]+)")
	}
	if err := c.Meters.Check(); err != nil {
		return fmt.Errorf("opcua: %w", err)
	}
	if len(c.Nodes) == 0 {
		return errors.New("opcua: at least one node required")
	}
	keys, ids := map[string]bool{}, map[string]bool{}
	for i, n := range c.Nodes {
		id, err := ua.ParseNodeID(n.NodeID)
		if !strings.Contains(n.NodeID, "=") || err != nil {
			return fmt.Errorf("opcua: nodes[%d]: node_id %q is not an OPC UA node ID (e.g. ns=2;s=Name)", i, n.NodeID)
		}
		if ids[id.String()] {
			return fmt.Errorf("opcua: nodes[%d]: node %s listed twice", i, n.NodeID)
		}
		ids[id.String()] = true
		if n.Device == "" && c.Device == "" {
			return fmt.Errorf("opcua: nodes[%d]: no device (set device on the node or the source)", i)
		}
		if n.Device != "" && !segment(n.Device) {
			return fmt.Errorf("opcua: nodes[%d]: device must be one stream key segment", i)
		}
		if !segment(n.Metric) {
			return fmt.Errorf("opcua: nodes[%d]: metric must be one stream key segment ([A-Za-z0-9._-]+)", i)
		}
		k := n.key(c.Device)
		if !wire.ValidKey(k) {
			return fmt.Errorf("opcua: nodes[%d]: stream key too long", i)
		}
		if keys[k] {
			return fmt.Errorf("opcua: nodes[%d]: stream %s mapped twice", i, k)
		}
		keys[k] = true
	}
	if c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		return errors.New("opcua: min_backoff exceeds max_backoff")
	}
	return nil
}

// Keys lists the stream keys, in the order of the configured nodes.
func (s *Source) Keys() []string { return append([]string(nil), s.keys...) }

// Stats returns the current counters.
func (s *Source) Stats() Stats {
	st := Stats{
		Connected:     s.connected.Load(),
		Connects:      s.connects.Load(),
		Failures:      s.failures.Load(),
		Notifications: s.notifications.Load(),
		Readings:      s.readingsSent.Load(),
		Dropped:       map[Reason]uint64{},
	}
	for i, r := range Reasons() {
		st.Dropped[r] = s.dropped[i].Load()
	}
	return st
}

func (s *Source) drop(r Reason) {
	for i, x := range Reasons() {
		if x == r {
			s.dropped[i].Add(1)
			return
		}
	}
}

// Meters reports the configured meter serials (see Config.Meters).
func (s *Source) Meters() map[string]string { return s.cfg.Meters.Meters() }
