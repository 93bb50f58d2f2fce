package mqtt

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/custos-iot/custos/internal/source"
	"github.com/custos-iot/custos/internal/source/sim"
	"github.com/custos-iot/custos/internal/wire"
)

// Stats are the source's counters for the agent's health report.
type Stats struct {
	Connected bool
	Connects  uint64 // successful connections
	Failures  uint64 // failed connection attempts and lost connections
	Messages  uint64 // messages received on mapped topics
	Readings  uint64 // readings handed to the agent
	// Dropped counts dropped payloads (or values within them) by reason;
	// every reason of Reasons() is present.
	Dropped map[Reason]uint64
}

// Source subscribes to an MQTT broker. It implements source.Source.
type Source struct {
	cfg    Config
	url    *url.URL
	tls    *tls.Config
	pass   []byte
	plan   *plan
	reason map[Reason]*atomic.Uint64

	connected                              atomic.Bool
	connects, failures, messages, readings atomic.Uint64

	mu         sync.Mutex
	discovered map[string][]*binding // state topic → bindings from discovery
	byEntity   map[string]string     // "<component>/<object_id>" → its state topic
}

var _ source.Source = (*Source)(nil)

// New checks cfg, reads the credential and TLS files, and returns a
// source. It does not connect.
func New(cfg Config) (*Source, error) {
	u, useTLS, err := brokerURL(cfg.Broker)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	p, err := newPlan(&cfg)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	if err := cfg.Meters.Check(); err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	if cfg.ClientID == "" {
		var b [6]byte
		rand.Read(b[:])
		cfg.ClientID = "custos-" + hex.EncodeToString(b[:])
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = sim.Duration(30 * time.Second)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = sim.Duration(time.Second)
	}
	if cfg.MaxBackoff <= cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff*2, sim.Duration(time.Minute))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Source{cfg: cfg, url: u, plan: p, reason: map[Reason]*atomic.Uint64{},
		discovered: map[string][]*binding{}, byEntity: map[string]string{}}
	for _, r := range Reasons() {
		s.reason[r] = new(atomic.Uint64)
	}
	s.pass = []byte(cfg.Password)
	if cfg.PasswordFile != "" {
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt: password file: %w", err)
		}
		s.pass = []byte(strings.TrimRight(string(b), "\r\n"))
	}
	if useTLS {
		if s.tls, err = tlsConfig(cfg.TLS, u.Hostname()); err != nil {
			return nil, fmt.Errorf("mqtt: %w", err)
		}
	} else if cfg.TLS != (TLS{}) {
		return nil, errors.New("mqtt: tls settings given for a non-TLS broker URL; use mqtts://")
	}
	return s, nil
}

func tlsConfig(c TLS, host string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if c.ServerName != "" {
		tc.ServerName = c.ServerName
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca_file %s: no PEM certificates", c.CAFile)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("tls cert_file and key_file go together")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Keys lists the configured stream keys.
func (s *Source) Keys() []string { return append([]string(nil), s.plan.keys...) }

// Stats returns the current counters.
func (s *Source) Stats() Stats {
	st := Stats{
		Connected: s.connected.Load(),
		Connects:  s.connects.Load(),
		Failures:  s.failures.Load(),
		Messages:  s.messages.Load(),
		Readings:  s.readings.Load(),
		Dropped:   make(map[Reason]uint64, len(s.reason)),
	}
	for r, c := range s.reason {
		st.Dropped[r] = c.Load()
	}
	return st
}

func (s *Source) drop(topic string, r Reason) {
	s.reason[r].Add(1)
	s.cfg.Log.Debug("mqtt: payload dropped", "topic", topic, "reason", string(r))
}

// value is a decoded value before it is stamped.
type value struct {
	key string
	v   float64
}

// Run connects, subscribes, and emits readings until ctx is done or emit
// fails. resume only keeps times increasing: live values cannot be
// replayed.
func (s *Source) Run(ctx context.Context, resume map[string]int64, emit source.Emit) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := make(chan []value, 64)
	minB, maxB := time.Duration(s.cfg.MinBackoff), time.Duration(s.cfg.MaxBackoff)
	cc := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{s.url},
		TlsCfg:                        s.tls,
		KeepAlive:                     uint16(min(max(time.Duration(s.cfg.KeepAlive)/time.Second, 1), 65535)),
		CleanStartOnInitialConnection: true,
		SessionExpiryInterval:         0,
		ReconnectBackoff:              backoff(minB, maxB),
		ConnectTimeout:                10 * time.Second,
		ConnectUsername:               s.cfg.Username,
		ConnectPassword:               s.pass,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			s.connects.Add(1)
			s.connected.Store(true)
			s.cfg.Log.Info("mqtt: connected", "broker", s.url.Host)
			go s.subscribe(ctx, cm, s.allFilters())
		},
		OnConnectionDown: func() bool {
			s.connected.Store(false)
			s.failures.Add(1)
			s.cfg.Log.Warn("mqtt: connection lost; reconnecting", "broker", s.url.Host)
			return true
		},
		OnConnectError: func(err error) {
			s.failures.Add(1)
			s.cfg.Log.Warn("mqtt: connect failed", "broker", s.url.Host, "err", err)
		},
		ClientConfig: paho.ClientConfig{
			ClientID: s.cfg.ClientID,
		},
	}
	var cm *autopaho.ConnectionManager
	var cmReady = make(chan struct{})
	cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			vs := s.handle(pr.Packet.Topic, pr.Packet.Payload, func(topic string) {
				go func() {
					<-cmReady
					s.subscribe(ctx, cm, []string{topic})
				}()
			})
			if len(vs) > 0 {
				select {
				case in <- vs:
				case <-ctx.Done():
				}
			}
			return true, nil
		},
	}
	cm, err := autopaho.NewConnection(ctx, cc)
	if err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	close(cmReady)
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		cm.Disconnect(dctx)
		dcancel()
		cancel()
		<-cm.Done()
		s.connected.Store(false)
	}()

	last := make(map[string]int64, len(s.plan.keys))
	for _, k := range s.plan.keys {
		if t, ok := resume[k]; ok {
			last[k] = t
		}
	}
	var rs []source.Reading
	for {
		var vs []value
		select {
		case <-ctx.Done():
			return nil
		case vs = <-in:
		}
		now := s.cfg.Now().UnixMilli()
		rs = rs[:0]
		for _, v := range vs {
			t := now
			if prev, ok := last[v.key]; ok && t <= prev {
				t = prev + 1
			}
			if t < 0 || t >= wire.MaxTime {
				continue
			}
			last[v.key] = t
			rs = append(rs, source.Reading{Key: v.key, Reading: wire.Reading{Time: t, Value: v.v}})
		}
		if len(rs) == 0 {
			continue
		}
		if err := emit(rs); err != nil {
			return err
		}
		s.readings.Add(uint64(len(rs)))
	}
}

// backoff tries at once after a lost connection, then waits between minB
// and an exponentially growing bound up to maxB.
func backoff(minB, maxB time.Duration) autopaho.Backoff {
	exp := autopaho.NewExponentialBackoff(minB, maxB, minB, 2)
	return func(attempt int) time.Duration {
		if attempt == 0 {
			return 0
		}
		return exp(attempt)
	}
}

func (s *Source) allFilters() []string {
	fs := append([]string(nil), s.plan.filters...)
	s.mu.Lock()
	for t := range s.discovered {
		fs = append(fs, t)
	}
	s.mu.Unlock()
	return fs
}

// subscribe subscribes to filters in packets of at most 32.
func (s *Source) subscribe(ctx context.Context, cm *autopaho.ConnectionManager, filters []string) {
	for len(filters) > 0 {
		n := min(len(filters), 32)
		sub := &paho.Subscribe{}
		for _, f := range filters[:n] {
			sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
		}
		filters = filters[n:]
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cm.Subscribe(sctx, sub)
		cancel()
		if err != nil && ctx.Err() == nil {
			// The connection dropped; OnConnectionUp subscribes again.
			s.cfg.Log.Warn("mqtt: subscribe failed", "broker", s.url.Host, "err", err)
			return
		}
	}
}

// handle decodes one message into values. subscribe is called (outside
// s.mu) when a discovery config names a state topic not yet subscribed.
func (s *Source) handle(topic string, payload []byte, subscribe func(string)) []value {
	var out []value
	matched := false
	var doc payloadDoc
	decode := func(bs []*binding) {
		var whole Reason // a payload-level failure is counted once
		for _, b := range bs {
			v, r := doc.value(payload, b.path)
			if r == ReasonTooLarge || r == ReasonInvalidJSON {
				whole = r
				continue
			}
			if r != ReasonNone {
				s.drop(topic, r)
				continue
			}
			s.mu.Lock()
			src := b.srcUnit
			s.mu.Unlock()
			f, ok := Convert(src, b.unit)
			if !ok {
				s.drop(topic, ReasonUnitMismatch)
				continue
			}
			v = v * f * b.scale
			if v != v || v > 1e300 || v < -1e300 {
				s.drop(topic, ReasonNotNumber)
				continue
			}
			out = append(out, value{key: b.key, v: v})
		}
		if whole != ReasonNone {
			s.drop(topic, whole)
		}
	}
	if bs, ok := s.plan.static[topic]; ok {
		matched = true
		decode(bs)
	}
	if bs, ok := s.plan.attrs[topic]; ok {
		matched = true
		unit, found, r := unitOf(payload)
		if r != ReasonNone {
			s.drop(topic, r)
		} else if found {
			s.mu.Lock()
			for _, b := range bs {
				b.srcUnit = unit
			}
			s.mu.Unlock()
		}
	}
	if id, ok := s.discoveryID(topic); ok {
		matched = true
		if t, sub := s.discover(topic, id, payload); sub {
			subscribe(t)
		}
	}
	s.mu.Lock()
	bs := s.discovered[topic]
	s.mu.Unlock()
	if len(bs) > 0 {
		matched = true
		decode(bs)
	}
	if matched {
		s.messages.Add(1)
	}
	return out
}

// discoveryID returns "<component>/<object_id>" if topic is the discovery
// config topic of a configured entity.
func (s *Source) discoveryID(topic string) (string, bool) {
	if s.plan.prefix == "" {
		return "", false
	}
	rest, ok := strings.CutPrefix(topic, s.plan.prefix+"/")
	if !ok {
		return "", false
	}
	rest, ok = strings.CutSuffix(rest, "/config")
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 2 && len(parts) != 3 {
		return "", false
	}
	id := parts[0] + "/" + parts[len(parts)-1]
	_, ok = s.plan.discovery[id]
	return id, ok
}

// discover applies a discovery config: it (re)binds the entity's state
// topic, or unbinds it on an empty payload. It returns the state topic if
// it must be subscribed.
func (s *Source) discover(topic, id string, payload []byte) (string, bool) {
	d := s.plan.discovery[id]
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.byEntity[id]; ok {
		// Remove the previous binding of this entity.
		var bs []*binding // a new slice: handle may hold the old one
		for _, b := range s.discovered[old] {
			if b.key != d.Key {
				bs = append(bs, b)
			}
		}
		if len(bs) == 0 {
			delete(s.discovered, old)
		} else {
			s.discovered[old] = bs
		}
		delete(s.byEntity, id)
	}
	if len(payload) == 0 {
		return "", false // the entity was removed
	}
	disc, r := parseDiscovery(payload)
	if r != ReasonNone {
		s.reason[r].Add(1)
		s.cfg.Log.Warn("mqtt: discovery config not usable", "topic", topic, "reason", string(r))
		return "", false
	}
	if _, ok := Convert(disc.Unit, d.Unit); !ok {
		s.reason[ReasonUnitMismatch].Add(1)
		s.cfg.Log.Warn("mqtt: discovery config unit does not fit the stream", "topic", topic, "key", d.Key)
		return "", false
	}
	_, subscribed := s.discovered[disc.StateTopic]
	_, static := s.plan.static[disc.StateTopic]
	s.discovered[disc.StateTopic] = append(s.discovered[disc.StateTopic],
		&binding{key: d.Key, path: disc.Path, scale: 1, unit: d.Unit, srcUnit: disc.Unit})
	s.byEntity[id] = disc.StateTopic
	return disc.StateTopic, !subscribed && !static
}

// Meters reports the configured meter serials (see Config.Meters).
func (s *Source) Meters() map[string]string { return s.cfg.Meters.Meters() }
