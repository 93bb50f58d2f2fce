package p1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-iot/custos/internal/source"
	"github.com/custos-iot/custos/internal/source/sim"
	"github.com/custos-iot/custos/internal/wire"
)

// Config configures a P1 source. Exactly one of Serial and TCP is set.
type Config struct {
	// Device is the first segment of the stream keys, "<device>/<metric>".
	// Required.
	Device string `json:"device"`
	// Serial is the path of the serial device the P1 cable is on, e.g.
	// "/dev/ttyUSB0". On Linux the line is set to raw 115200 baud 8N1.
	Serial string `json:"serial,omitempty"`
	// TCP is the "host:port" of a serial-to-TCP bridge (ser2net, an ESP
	// P1 dongle) that passes the meter's bytes through unchanged.
	TCP string `json:"tcp,omitempty"`
	// Metrics restricts the metrics emitted (and the keys announced).
	// Default: all of Metrics().
	Metrics []Metric `json:"metrics,omitempty"`
	// ReadTimeout is how long without a complete telegram before the
	// connection is considered dead and reopened. DSMR 5 meters send one
	// every second. Default 30 s.
	ReadTimeout sim.Duration `json:"read_timeout,omitempty"`
	// MinBackoff and MaxBackoff bound the wait before reconnecting; it
	// doubles after each failure and resets after a good telegram.
	// Defaults 1 s and 1 min.
	MinBackoff sim.Duration `json:"min_backoff,omitempty"`
	MaxBackoff sim.Duration `json:"max_backoff,omitempty"`
	// Now is the clock used for telegrams without a meter clock. Default
	// time.Now.
	Now func() time.Time `json:"-"`
	// Log receives connection events, never telegram contents. Default
	// slog.Default().
	Log *slog.Logger `json:"-"`
}

// Stats are the source's counters for the agent's health report.
type Stats struct {
	Telegrams    uint64 // telegrams that passed all checks
	BadChecksum  uint64 // well-formed telegrams with a wrong CRC
	Malformed    uint64 // candidates that broke the grammar
	Oversize     uint64 // candidates abandoned at MaxTelegramBytes
	SkippedBytes uint64 // bytes discarded while resynchronising
	Connects     uint64 // successful opens of the device or bridge
	Failures     uint64 // failed opens and lost connections
	Connected    bool   // a connection is open now
}

// Source reads a meter's P1 port. It implements source.Source.
type Source struct {
	cfg     Config
	metrics map[Metric]bool
	keys    []string

	telegrams, badCRC, malformed, oversize, skipped atomic.Uint64
	connects, failures                              atomic.Uint64
	connected                                       atomic.Bool
	equipment                                       atomic.Pointer[string] // the meter's latest equipment identifier
}

var _ source.Source = (*Source)(nil)

// New checks cfg and returns a source.
func New(cfg Config) (*Source, error) {
	if cfg.Device == "" || strings.Contains(cfg.Device, "/") || !wire.ValidKey(cfg.Device+"/x") {
		return nil, fmt.Errorf("p1: device must be one stream key segment ([A-Za-z0-9._-]+)")
	}
	if (cfg.Serial == "") == (cfg.TCP == "") {
		return nil, errors.New("p1: exactly one of serial and tcp must be set")
	}
	if cfg.TCP != "" {
		if _, _, err := net.SplitHostPort(cfg.TCP); err != nil {
			return nil, fmt.Errorf("p1: tcp must be host:port: %w", err)
		}
	}
	if len(cfg.Metrics) == 0 {
		cfg.Metrics = Metrics()
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = sim.Duration(30 * time.Second)
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
	s := &Source{cfg: cfg, metrics: map[Metric]bool{}}
	known := map[Metric]bool{}
	for _, m := range Metrics() {
		known[m] = true
	}
	for _, m := range cfg.Metrics {
		if !known[m] {
			return nil, fmt.Errorf("p1: unknown metric %q", m)
		}
		if s.metrics[m] {
			continue
		}
		s.metrics[m] = true
		k := cfg.Device + "/" + string(m)
		if !wire.ValidKey(k) {
			return nil, fmt.Errorf("p1: device name too long for stream keys")
		}
		s.keys = append(s.keys, k)
	}
	return s, nil
}

// Meters reports the equipment identifier of the meter, as its latest
// telegram stated it: the meter vouches for its identity itself.
func (s *Source) Meters() map[string]string {
	if p := s.equipment.Load(); p != nil {
		return map[string]string{s.cfg.Device: *p}
	}
	return nil
}

// Keys lists the stream keys, "<device>/<metric>".
func (s *Source) Keys() []string { return append([]string(nil), s.keys...) }

// Stats returns the current counters.
func (s *Source) Stats() Stats {
	return Stats{
		Telegrams:    s.telegrams.Load(),
		BadChecksum:  s.badCRC.Load(),
		Malformed:    s.malformed.Load(),
		Oversize:     s.oversize.Load(),
		SkippedBytes: s.skipped.Load(),
		Connects:     s.connects.Load(),
		Failures:     s.failures.Load(),
		Connected:    s.connected.Load(),
	}
}

// Run reads telegrams until ctx is done or emit fails, reconnecting with
// backoff. A reading is emitted only if it is newer than the last one for
// its key, starting from resume.
func (s *Source) Run(ctx context.Context, resume map[string]int64, emit source.Emit) error {
	last := make(map[string]int64, len(s.keys))
	for _, k := range s.keys {
		if t, ok := resume[k]; ok {
			last[k] = t
		}
	}
	backoff := time.Duration(s.cfg.MinBackoff)
	for ctx.Err() == nil {
		good, err := s.session(ctx, last, emit)
		if errors.Is(err, errEmit) {
			return errors.Unwrap(err)
		}
		if ctx.Err() != nil {
			break
		}
		s.failures.Add(1)
		if good {
			backoff = time.Duration(s.cfg.MinBackoff)
		}
		s.cfg.Log.Warn("p1: connection lost; reconnecting", "device", s.cfg.Device, "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(2*backoff, time.Duration(s.cfg.MaxBackoff))
	}
	return nil
}

var errEmit = errors.New("p1: emit failed")

type emitError struct{ err error }

func (e emitError) Error() string        { return "p1: emit: " + e.err.Error() }
func (e emitError) Is(target error) bool { return target == errEmit }
func (e emitError) Unwrap() error        { return e.err }

type deadliner interface {
	SetReadDeadline(time.Time) error
}

func (s *Source) open(ctx context.Context) (io.ReadCloser, error) {
	if s.cfg.TCP != "" {
		d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		return d.DialContext(ctx, "tcp", s.cfg.TCP)
	}
	return openSerial(s.cfg.Serial)
}

// session opens the device once and reads telegrams until an error. good
// reports whether at least one telegram passed.
func (s *Source) session(ctx context.Context, last map[string]int64, emit source.Emit) (good bool, err error) {
	conn, err := s.open(ctx)
	if err != nil {
		return false, err
	}
	s.connects.Add(1)
	s.connected.Store(true)
	defer s.connected.Store(false)
	var once sync.Once
	closeConn := func() { once.Do(func() { conn.Close() }) }
	defer closeConn()
	stop := context.AfterFunc(ctx, closeConn)
	defer stop()
	s.cfg.Log.Info("p1: connected", "device", s.cfg.Device)

	f := NewFramer(conn)
	var skipped, oversize uint64
	defer func() {
		s.skipped.Add(f.Skipped - skipped)
		s.oversize.Add(f.Oversize - oversize)
	}()
	dl, _ := conn.(deadliner)
	var rs []source.Reading
	for {
		if dl != nil {
			dl.SetReadDeadline(time.Now().Add(time.Duration(s.cfg.ReadTimeout)))
		}
		frame, err := f.Next()
		s.skipped.Add(f.Skipped - skipped)
		s.oversize.Add(f.Oversize - oversize)
		skipped, oversize = f.Skipped, f.Oversize
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return good, err
		}
		t, err := Parse(frame)
		switch {
		case errors.Is(err, ErrChecksum):
			s.badCRC.Add(1)
			s.cfg.Log.Debug("p1: telegram dropped", "device", s.cfg.Device, "err", err)
			continue
		case err != nil:
			s.malformed.Add(1)
			s.cfg.Log.Debug("p1: telegram dropped", "device", s.cfg.Device, "err", err)
			continue
		}
		s.telegrams.Add(1)
		good = true
		if t.Equipment != "" {
			if p := s.equipment.Load(); p == nil || *p != t.Equipment {
				s.equipment.Store(&t.Equipment)
			}
		}
		rs = s.readings(rs[:0], &t, last)
		if len(rs) == 0 {
			continue
		}
		if err := emit(rs); err != nil {
			return good, emitError{err}
		}
	}
}

// readings appends the readings of t for the configured metrics that are
// newer than the last emitted for their key, and advances last.
func (s *Source) readings(rs []source.Reading, t *Telegram, last map[string]int64) []source.Reading {
	now := s.cfg.Now().UnixMilli()
	for _, m := range t.Measurements {
		if !s.metrics[m.Metric] {
			continue
		}
		ms := now
		if !m.Time.IsZero() {
			ms = m.Time.UnixMilli()
		}
		k := s.cfg.Device + "/" + string(m.Metric)
		if prev, ok := last[k]; ok && ms <= prev {
			continue
		}
		if ms < 0 || ms >= wire.MaxTime {
			continue
		}
		last[k] = ms
		rs = append(rs, source.Reading{Key: k, Reading: wire.Reading{Time: ms, Value: m.Value}})
	}
	return rs
}
