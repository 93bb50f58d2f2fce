// Package agent is the composition root of the edge connector
// (custos-agent): it enrols with the hub, runs the configured sources,
// batches their readings into the on-disk spool and sends the spool to the
// hub through the uplink.
//
// Only cmd/custos-agent and tests import it. It must never import the
// hub's server side (store, api, pki) and never listen on a port.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-iot/custos/internal/collection"
	"github.com/custos-iot/custos/internal/selfupdate"
	"github.com/custos-iot/custos/internal/source"
	"github.com/custos-iot/custos/internal/source/mqtt"
	"github.com/custos-iot/custos/internal/source/opcua"
	"github.com/custos-iot/custos/internal/source/p1"
	"github.com/custos-iot/custos/internal/source/sim"
	"github.com/custos-iot/custos/internal/spool"
	"github.com/custos-iot/custos/internal/uplink"
	"github.com/custos-iot/custos/internal/wire"
)

// Config is the agent's configuration, usually read from a JSON file.
type Config struct {
	// Hub is the hub's API URL, used to enrol. Required before enrolment.
	Hub string `json:"hub"`
	// DeviceURL overrides the device endpoint address the hub announced at
	// enrolment.
	DeviceURL string `json:"device_url,omitempty"`
	// ServerName overrides the TLS server name checked on the device
	// endpoint. Default: the host of the device URL.
	ServerName string `json:"server_name,omitempty"`
	// StateDir holds the device key, certificates and the spool. Default "agent-data".
	StateDir string `json:"state_dir,omitempty"`
	// EnrolToken is the single-use token for the first start. It can also
	// come from the environment (CUSTOS_ENROL_TOKEN).
	EnrolToken string `json:"enrol_token,omitempty"`
	// Batch bounds how readings are grouped before they are spooled.
	Batch BatchConfig `json:"batch"`
	// Spool configures the on-disk buffer.
	Spool SpoolConfig `json:"spool"`
	// Simulators are simulated households.
	Simulators []sim.Config `json:"simulators,omitempty"`
	// P1 are smart-meter P1 ports (DSMR 5 / e-MUCS), serial or TCP bridge.
	P1 []p1.Config `json:"p1,omitempty"`
	// MQTT are MQTT brokers: Home Assistant, Tasmota, Shelly, plain topics.
	MQTT []mqtt.Config `json:"mqtt,omitempty"`
	// OPCUA are OPC UA servers, subscribed to with Basic256Sha256 and
	// SignAndEncrypt unless configured otherwise.
	OPCUA []opcua.Config `json:"opcua,omitempty"`
	// HealthEvery is how often the agent reports its health (version,
	// certificate expiry, spool depth, drops, sources). Default 30 s.
	HealthEvery sim.Duration `json:"health_every,omitempty"`
	// Update enables signed self-update from the hub's TUF repository.
	// Optional: without it the agent never replaces itself.
	Update *UpdateConfig `json:"update,omitempty"`
	// Version is the running release version (cmd/custos-agent sets it
	// from its link-time version). Default: the module's build version.
	Version string `json:"-"`
	// Trial, if set, makes this run a self-update trial: after the first
	// health report the hub accepts, the agent writes this marker file
	// and stops. Set by cmd/custos-agent from selfupdate.EnvTrial.
	Trial string `json:"-"`
	// PolicyEvery is how often the agent asks the hub for its collection
	// policy (which streams to send, at which finest resolution). Default 60 s.
	PolicyEvery sim.Duration `json:"policy_every,omitempty"`
	// BucketIdle is how long a stream with an open bucket (under a coarse
	// policy) must be quiet, after the bucket's end, before the bucket is
	// sent without waiting for a reading of the next one. Default 1 min.
	BucketIdle sim.Duration `json:"bucket_idle,omitempty"`
	// Now is the clock. Default time.Now.
	Now func() time.Time `json:"-"`
	// Log is the operational log. Default slog.Default().
	Log *slog.Logger `json:"-"`
}

// BatchConfig bounds a batch.
type BatchConfig struct {
	// MaxReadings seals a batch once it holds this many readings. Default 1000.
	MaxReadings int `json:"max_readings,omitempty"`
	// MaxDelay seals a batch this long after its first reading. Default 5 s.
	MaxDelay sim.Duration `json:"max_delay,omitempty"`
}

// SpoolConfig configures the spool.
type SpoolConfig struct {
	// MaxBytes bounds the unsent data on disk; beyond it the oldest is
	// dropped and counted. Default 256 MiB.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// SyncEvery groups fsyncs; 0 (the default) fsyncs every batch before
	// it counts as accepted.
	SyncEvery sim.Duration `json:"sync_every,omitempty"`
}

// LoadConfig reads a JSON configuration file. Unknown fields are errors.
func LoadConfig(path string) (Config, error) {
	var c Config
	f, err := os.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Agent is a configured, enrolled agent.
type Agent struct {
	cfg     Config
	creds   *uplink.Credentials
	spool   *spool.Spool
	sources []source.Source
	client  *http.Client
	sender  *uplink.Sender
	device  string

	stop  context.CancelFunc
	ready *selfupdate.Update

	mu      sync.Mutex
	pending map[string][]wire.Reading
	order   []string
	count   int
	first   time.Time
	sealed  uint64

	// Collection policy (see policy.go), under mu.
	doc      *collection.Document // nil until the first fetch
	agg      *collection.Aggregator
	aggOpen  map[string]bool // keys the aggregator holds state for
	aggDirty bool            // state changed since it was saved
	aggSaved time.Time
	pend     collection.Emit // a.pendLocked, allocated once
	// policyChecked is when the hub last confirmed the policy (Unix ms).
	policyChecked atomic.Int64
}

// New enrols the agent if it is not enrolled yet, opens its spool and
// prepares its sources.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.StateDir == "" {
		cfg.StateDir = "agent-data"
	}
	if cfg.Batch.MaxReadings == 0 {
		cfg.Batch.MaxReadings = 1000
	}
	if cfg.Batch.MaxDelay == 0 {
		cfg.Batch.MaxDelay = sim.Duration(5 * time.Second)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.EnrolToken == "" {
		cfg.EnrolToken = os.Getenv("CUSTOS_ENROL_TOKEN")
	}
	if cfg.PolicyEvery <= 0 {
		cfg.PolicyEvery = sim.Duration(time.Minute)
	}
	if cfg.BucketIdle <= 0 {
		cfg.BucketIdle = sim.Duration(time.Minute)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Agent{cfg: cfg, pending: map[string][]wire.Reading{}, aggOpen: map[string]bool{}}
	a.pend = a.pendLocked
	var err error
	if uplink.Enrolled(cfg.StateDir) {
		a.creds, err = uplink.Load(cfg.StateDir)
	} else {
		if cfg.EnrolToken == "" || cfg.Hub == "" {
			return nil, errors.New("agent: not enrolled yet: set hub and enrol_token in the configuration (or CUSTOS_ENROL_TOKEN)")
		}
		a.creds, err = uplink.Enrol(ctx, cfg.StateDir, cfg.Hub, cfg.EnrolToken, rand.Reader)
		if err == nil {
			cfg.Log.Info("agent enrolled", "tenant", a.creds.Tenant, "connector", a.creds.Connector)
		}
	}
	if err != nil {
		return nil, err
	}
	a.device = cfg.DeviceURL
	if a.device == "" {
		a.device = a.creds.DeviceURL
	}
	if a.device == "" {
		return nil, errors.New("agent: no device endpoint URL: set device_url")
	}
	for _, sc := range cfg.Simulators {
		s, err := sim.New(sc)
		if err != nil {
			return nil, err
		}
		a.sources = append(a.sources, s)
	}
	for _, pc := range cfg.P1 {
		if pc.Log == nil {
			pc.Log = cfg.Log
		}
		s, err := p1.New(pc)
		if err != nil {
			return nil, err
		}
		a.sources = append(a.sources, s)
	}
	for _, mc := range cfg.MQTT {
		if mc.Log == nil {
			mc.Log = cfg.Log
		}
		s, err := mqtt.New(mc)
		if err != nil {
			return nil, err
		}
		a.sources = append(a.sources, s)
	}
	for _, oc := range cfg.OPCUA {
		if oc.Log == nil {
			oc.Log = cfg.Log
		}
		if oc.StateDir == "" {
			oc.StateDir = cfg.StateDir
		}
		s, err := opcua.New(oc)
		if err != nil {
			return nil, err
		}
		a.sources = append(a.sources, s)
	}
	if len(a.sources) == 0 {
		return nil, errors.New("agent: no sources configured (simulators, p1, mqtt or opcua)")
	}
	if a.replays() && len(a.sources) > 1 {
		return nil, errors.New("agent: a simulator replaying history (start set) must be the only source")
	}
	a.spool, err = spool.Open(spool.Options{
		Dir:      filepath.Join(cfg.StateDir, "spool"),
		MaxBytes: cfg.Spool.MaxBytes,
		Sync:     spool.SyncPolicy{Every: time.Duration(cfg.Spool.SyncEvery)},
	})
	if err != nil {
		return nil, err
	}
	a.loadCollection()
	tr := &http.Transport{
		TLSClientConfig:     a.creds.TLSConfig(cfg.ServerName),
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 15 * time.Second,
	}
	a.client = &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	a.sender = uplink.NewSender(uplink.Config{DeviceURL: a.device, Client: a.client, Spool: a.spool, Log: cfg.Log})
	return a, nil
}

func (a *Agent) replays() bool {
	for _, s := range a.cfg.Simulators {
		if !s.Start.IsZero() {
			return true
		}
	}
	return false
}

// resume reads the newest spooled batch: where the sources continue.
func (a *Agent) resume() map[string]int64 {
	out := map[string]int64{}
	last, ok := a.spool.Last()
	if !ok {
		return out
	}
	b, err := wire.DecodeBatch(last)
	if err != nil {
		a.cfg.Log.Warn("agent: newest spooled batch unreadable; sources start fresh", "err", err)
		return out
	}
	for _, s := range b.Series {
		out[s.Key] = s.MaxTime
	}
	return out
}

// reconcile tells the aggregator what the newest spooled batch holds (a
// crash may have come between the spool write and the state save) and
// adds, to resume, where aggregated streams continue.
func (a *Agent) reconcile(resume map[string]int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, t := range resume {
		a.agg.Spooled(k, t)
	}
	for k, t := range a.agg.Through() {
		a.aggOpen[k] = true
		if t > resume[k] {
			resume[k] = t
		}
	}
}

// Run runs the sources, the batcher and the uplink until ctx is done. On
// return every reading a source emitted is in the spool.
//
// Run returns an *UpdateReady when it stopped because a verified newer
// release is waiting to be installed (see selfupdate.Apply), and nil when
// a trial run has reported healthy.
func (a *Agent) Run(ctx context.Context) error {
	ctx, a.stop = context.WithCancel(ctx)
	defer a.stop()
	if !a.firstPolicy(ctx) {
		return nil
	}
	resume := a.resume()
	a.reconcile(resume)
	var wg sync.WaitGroup
	errc := make(chan error, len(a.sources)+4)
	srcCtx, stopSources := context.WithCancel(ctx)
	defer stopSources()
	for _, s := range a.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(srcCtx, resume, a.emit); err != nil {
				errc <- fmt.Errorf("source: %w", err)
			}
		}()
	}
	upCtx, stopUplink := context.WithCancel(ctx)
	defer stopUplink()
	var up sync.WaitGroup
	up.Add(6)
	go func() { defer up.Done(); a.updateLoop(upCtx) }()
	go func() { defer up.Done(); a.policyLoop(upCtx) }()
	go func() { defer up.Done(); a.healthLoop(upCtx) }()
	go func() { defer up.Done(); errc <- a.sender.Run(upCtx) }()
	go func() { defer up.Done(); a.renewLoop(upCtx) }()
	go func() { defer up.Done(); a.flushLoop(upCtx) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopSources()
	wg.Wait()
	if ferr := a.flush(); ferr != nil && err == nil {
		err = ferr
	}
	stopUplink()
	up.Wait()
	if err == nil && a.ready != nil {
		err = &UpdateReady{Update: a.ready}
	}
	return err
}

// emit adds readings to the pending batch, sealing it into the spool when
// it is full. Sealing happens only between emits, so each batch holds whole
// emits.
func (a *Agent) emit(rs []source.Reading) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applyLocked(rs)
	if a.count >= a.cfg.Batch.MaxReadings {
		return a.sealLocked()
	}
	return nil
}

func (a *Agent) flushLoop(ctx context.Context) {
	t := time.NewTicker(time.Duration(a.cfg.Batch.MaxDelay) / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		if err := a.tickCollectionLocked(); err != nil {
			a.cfg.Log.Error("agent: collection state", "err", err)
		}
		if a.count > 0 && a.cfg.Now().Sub(a.first) >= time.Duration(a.cfg.Batch.MaxDelay) {
			if err := a.sealLocked(); err != nil {
				a.cfg.Log.Error("agent: spool append failed", "err", err)
			}
		}
		a.mu.Unlock()
	}
}

func (a *Agent) flush() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Open buckets stay open: they are saved and continue after a restart.
	return a.persistLocked()
}

func (a *Agent) sealLocked() error {
	id, err := wire.NewBatchID(time.Now(), rand.Reader)
	if err != nil {
		return err
	}
	b := wire.Batch{ID: id, Series: make([]wire.Series, 0, len(a.order))}
	for _, k := range a.order {
		b.Series = append(b.Series, wire.Series{Key: k, Readings: a.pending[k]})
	}
	b.Meters = a.meters(b.Series)
	data, err := wire.AppendBatch(nil, &b)
	if err != nil {
		return fmt.Errorf("agent: encode batch: %w", err)
	}
	if err := a.spool.Append(data); err != nil {
		return fmt.Errorf("agent: spool: %w", err)
	}
	a.sealed++
	clear(a.pending)
	a.order = a.order[:0]
	a.count = 0
	return a.saveCollectionLocked()
}

// meters returns the meter identities the sources know for the devices of
// a batch's series, in device order; identities the wire format cannot
// carry are left out (the hub then sees the device unreported).
func (a *Agent) meters(ss []wire.Series) []wire.Meter {
	var out []wire.Meter
	seen := map[string]bool{}
	for _, src := range a.sources {
		m, ok := src.(source.Metered)
		if !ok {
			continue
		}
		known := m.Meters()
		for i := range ss {
			d := wire.KeyDevice(ss[i].Key)
			if id, ok := known[d]; ok && !seen[d] {
				seen[d] = true
				out = append(out, wire.Meter{Device: d, ID: id})
			}
		}
	}
	slices.SortFunc(out, func(x, y wire.Meter) int { return strings.Compare(x.Device, y.Device) })
	ok := out[:0]
	for _, m := range out {
		if m.Valid() {
			ok = append(ok, m)
		} else {
			a.cfg.Log.Warn("agent: a meter identity the batch format cannot carry is not reported", "device", m.Device)
		}
	}
	return ok
}

func (a *Agent) renewLoop(ctx context.Context) {
	attempt := 0
	for {
		wait := time.Until(a.creds.RenewAt())
		if attempt > 0 {
			wait = uplink.Backoff(attempt, 5*time.Second, 10*time.Minute, nil)
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := a.creds.Renew(ctx, a.client, a.device, rand.Reader); err != nil {
			attempt++
			a.cfg.Log.Warn("agent: certificate renewal failed; will retry", "err", err, "expires", a.creds.Expiry())
			continue
		}
		attempt = 0
		a.cfg.Log.Info("agent: certificate renewed", "expires", a.creds.Expiry())
	}
}

// Stats is a snapshot of the agent's counters.
type Stats struct {
	Sealed uint64 `json:"sealed_batches"`
	// Policy is the version of the collection policy applied ("" before
	// the first fetch); Collection counts what it did with readings.
	Policy        string           `json:"policy"`
	PolicyChecked time.Time        `json:"policy_checked,omitzero"`
	Collection    collection.Stats `json:"collection"`
	Spool         spool.Stats      `json:"spool"`
	Uplink        uplink.Stats     `json:"uplink"`
	CertExpiry    time.Time        `json:"cert_expiry"`
}

// Stats returns the agent's counters.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	st := Stats{Sealed: a.sealed, Collection: a.agg.Stats()}
	if a.doc != nil {
		st.Policy = a.doc.Version
	}
	if ms := a.policyChecked.Load(); ms != 0 {
		st.PolicyChecked = time.UnixMilli(ms).UTC()
	}
	a.mu.Unlock()
	st.Spool, st.Uplink, st.CertExpiry = a.spool.Stats(), a.sender.Stats(), a.creds.Expiry()
	return st
}

// Close closes the spool.
func (a *Agent) Close() error { return a.spool.Close() }
