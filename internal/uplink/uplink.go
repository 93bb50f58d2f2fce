// Package uplink moves spooled batches from the edge agent to the hub. It
// only ever connects outwards (mutual TLS 1.3 to the hub's device
// endpoint), sends the oldest batches first, acknowledges them in the spool
// only after the hub has acknowledged them, and backs off exponentially with
// jitter while the hub is unreachable. It also enrols the agent and renews
// its certificate.
//
// It must never open a listening socket and never log reading values.
package uplink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/custos-iot/custos/internal/spool"
)

// BatchContentType is the media type of a body of wire batches.
const BatchContentType = "application/vnd.custos.batch"

// HubError is a refusal by the hub, with its message.
type HubError struct {
	Status  int
	Message string
}

func (e *HubError) Error() string { return fmt.Sprintf("hub refused (%d): %s", e.Status, e.Message) }

// Permanent reports whether resending the same request cannot succeed.
// Forbidden is not permanent: an operator may still register the stream
// or the connector may be reinstated; the sender keeps retrying slowly.
func (e *HubError) Permanent() bool {
	return e.Status == http.StatusBadRequest || e.Status == http.StatusRequestEntityTooLarge
}

// Spool is what the sender needs from the spool.
type Spool interface {
	Peek(maxRecords, maxBytes int) ([]spool.Record, error)
	Ack(through spool.Position) error
	Notify() <-chan struct{}
}

// Config configures a Sender.
type Config struct {
	// DeviceURL is the hub's device endpoint, e.g. https://hub:8444. Required.
	DeviceURL string
	// Client is the mTLS HTTP client. Required.
	Client *http.Client
	// Spool holds the batches to send. Required.
	Spool Spool
	// MaxRecords and MaxBytes bound one request. Defaults 64 and 4 MiB.
	MaxRecords, MaxBytes int
	// MinBackoff and MaxBackoff bound the wait between failed attempts.
	// Defaults 250 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// Rand draws the jitter. Default: a generator seeded from the OS.
	Rand *rand.Rand
	// Log receives errors (no payloads). Default slog.Default().
	Log *slog.Logger
}

// Sender sends spooled batches to the hub.
type Sender struct {
	cfg Config

	sent       atomic.Uint64 // batches acknowledged by the hub
	rejected   atomic.Uint64 // batches the hub refused permanently (dropped)
	failures   atomic.Uint64 // failed attempts
	lastErr    atomic.Pointer[string]
	lastSentAt atomic.Int64
}

// NewSender returns a Sender for cfg.
func NewSender(cfg Config) *Sender {
	if cfg.MaxRecords == 0 {
		cfg.MaxRecords = 64
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 4 << 20
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Sender{cfg: cfg}
}

// Stats reports the sender's counters.
type Stats struct {
	Sent, Rejected, Failures uint64
	LastError                string
}

// Stats returns the sender's counters.
func (s *Sender) Stats() Stats {
	st := Stats{Sent: s.sent.Load(), Rejected: s.rejected.Load(), Failures: s.failures.Load()}
	if p := s.lastErr.Load(); p != nil {
		st.LastError = *p
	}
	return st
}

// Run sends until ctx is done.
func (s *Sender) Run(ctx context.Context) error {
	attempt := 0
	for ctx.Err() == nil {
		recs, err := s.cfg.Spool.Peek(s.cfg.MaxRecords, s.cfg.MaxBytes)
		if err != nil {
			return fmt.Errorf("uplink: read spool: %w", err)
		}
		if len(recs) == 0 {
			select {
			case <-ctx.Done():
			case <-s.cfg.Spool.Notify():
			case <-time.After(time.Second):
			}
			continue
		}
		err = s.send(ctx, recs)
		var he *HubError
		switch {
		case err == nil:
			attempt = 0
			if err := s.cfg.Spool.Ack(recs[len(recs)-1].Pos); err != nil {
				return fmt.Errorf("uplink: ack spool: %w", err)
			}
			s.sent.Add(uint64(len(recs)))
			s.lastSentAt.Store(time.Now().UnixMilli())
			continue
		case errors.As(err, &he) && he.Permanent() && len(recs) > 1:
			// Find the bad batch: send one at a time.
			if err := s.sendEach(ctx, recs); err != nil && ctx.Err() == nil {
				s.note(err)
				attempt++
				s.sleep(ctx, attempt)
			}
			continue
		case errors.As(err, &he) && he.Permanent():
			// One batch the hub can never accept (a bug or a corrupted
			// record): drop it, count it, keep the rest flowing.
			s.cfg.Log.Error("uplink: hub refused a batch permanently; dropping it", "status", he.Status, "reason", he.Message)
			s.rejected.Add(1)
			if err := s.cfg.Spool.Ack(recs[0].Pos); err != nil {
				return fmt.Errorf("uplink: ack spool: %w", err)
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		s.note(err)
		attempt++
		s.sleep(ctx, attempt)
	}
	return nil
}

func (s *Sender) note(err error) {
	s.failures.Add(1)
	msg := err.Error()
	s.lastErr.Store(&msg)
	s.cfg.Log.Warn("uplink: send failed; will retry", "err", msg)
}

func (s *Sender) sendEach(ctx context.Context, recs []spool.Record) error {
	for _, r := range recs {
		err := s.send(ctx, recs[:1:1])
		var he *HubError
		switch {
		case err == nil:
			s.sent.Add(1)
		case errors.As(err, &he) && he.Permanent():
			s.cfg.Log.Error("uplink: hub refused a batch permanently; dropping it", "status", he.Status, "reason", he.Message)
			s.rejected.Add(1)
		default:
			return err
		}
		if err := s.cfg.Spool.Ack(r.Pos); err != nil {
			return err
		}
		recs = recs[1:]
	}
	return nil
}

// Backoff returns the wait before retry number attempt (1-based): full
// jitter over an exponentially growing window, capped. r may be nil.
func Backoff(attempt int, lo, hi time.Duration, r *rand.Rand) time.Duration {
	window := lo << min(attempt-1, 30)
	if window > hi || window <= 0 {
		window = hi
	}
	if r == nil {
		return lo/2 + time.Duration(rand.Int64N(int64(window)))
	}
	return lo/2 + time.Duration(r.Int64N(int64(window)))
}

func (s *Sender) sleep(ctx context.Context, attempt int) {
	t := time.NewTimer(Backoff(attempt, s.cfg.MinBackoff, s.cfg.MaxBackoff, s.cfg.Rand))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// send posts the records (each a wire batch) as one request.
func (s *Sender) send(ctx context.Context, recs []spool.Record) error {
	var body []byte
	if len(recs) == 1 {
		body = recs[0].Payload
	} else {
		n := 0
		for _, r := range recs {
			n += len(r.Payload)
		}
		body = make([]byte, 0, n)
		for _, r := range recs {
			body = append(body, r.Payload...)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.DeviceURL+"/v1/batches", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", BatchContentType)
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return nil
	}
	var e struct{ Error string }
	json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
	return &HubError{Status: resp.StatusCode, Message: e.Error}
}
