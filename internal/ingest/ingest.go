// Package ingest accepts batches of readings from connectors and makes them
// durable: it decodes the wire format, checks that the connector may write
// every stream it names, cuts the batch into chunks and hands them to a
// group-committing writer, which acknowledges a batch only once it is on
// disk. A replayed batch ID is acknowledged without being stored twice.
//
// Ingest knows nothing of HTTP; the device endpoint in internal/api calls
// Accept. It must never log reading values.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-iot/custos/internal/collection"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/wire"
)

// Store is what ingest needs from the database.
type Store interface {
	// WriteBatches stores the batches in one transaction and reports which
	// were duplicates of batches stored before.
	WriteBatches(ctx context.Context, received int64, bs []series.Batch) (dup []bool, err error)
	// ConnectorStreams lists the streams a connector may write.
	ConnectorStreams(ctx context.Context, c registry.ConnectorID) ([]registry.Stream, error)
	// ConnectorDevices lists the devices a connector serves (for their
	// meter serials).
	ConnectorDevices(ctx context.Context, c registry.ConnectorID) ([]registry.Device, error)
	// Connector returns a connector, to check its status.
	Connector(ctx context.Context, t registry.TenantID, c registry.ConnectorID) (registry.Connector, error)
	// TouchConnector records when a connector was last seen (Unix ms).
	TouchConnector(ctx context.Context, c registry.ConnectorID, seen int64) error
	// ConnectorCollectionPolicies returns the stored collection policies
	// of a connector's streams (streams without one are absent).
	ConnectorCollectionPolicies(ctx context.Context, c registry.ConnectorID) (map[registry.StreamID]collection.Record, error)
	// CountPolicyRefusals adds n refused readings to a stream's count.
	CountPolicyRefusals(ctx context.Context, s registry.StreamID, n int64, at int64) error
}

// Config configures a Service.
type Config struct {
	// Store is the database. Must be non-nil.
	Store Store
	// Sealer seals every block under its data subject's key before it is
	// stored. Must be non-nil (series.Plain only in benchmarks).
	Sealer series.Sealer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Log receives operational messages (IDs and counts only). Default slog.Default().
	Log *slog.Logger
	// MaxGroupReadings bounds the readings committed in one transaction.
	// Default 200,000.
	MaxGroupReadings int
	// PolicyGrace is how long after a change of a stream's collection
	// policy readings timed before then are still judged by the previous
	// policy too: the agent learns of the change only at its next refresh.
	// Default 5 minutes.
	PolicyGrace time.Duration
	// StatusTTL is how long a connector's status, stream list and
	// collection policies are cached.
	// A revocation made on another hub replica takes effect within it.
	// Default 500 ms.
	StatusTTL time.Duration
	// Detector, if set, checks every reading before it is stored: readings
	// it flags are quarantined (stored sealed, with their reasons, outside
	// the series) instead of stored. nil stores every reading as received.
	Detector *plausibility.Detector
	// Plausibility holds tenants' policies and the detector's saved
	// state. Must be non-nil when Detector is set.
	Plausibility PlausibilityStore
	// PolicyTTL is how long a tenant's plausibility policy is cached; a
	// change made on another replica takes effect within it. Default 5 s.
	PolicyTTL time.Duration
	// StateEvery is how often the detector's learned state is saved.
	// Default 1 minute.
	StateEvery time.Duration
	// Sites, with a Detector, enables the site balance check (see
	// Screen): blocks of streams with a site role are landed with a hold
	// and judged with their site's other role streams before the
	// compactor folds them. nil disables it.
	Sites SiteStore
	// SiteGrace is how long a block of a stream with a site role waits
	// in landing for the site's other streams before it is judged and
	// folded. Default 2 minutes.
	SiteGrace time.Duration
}

// Service accepts batches. Create it with New, start its writer with Run.
type Service struct {
	cfg     Config
	pending chan *commit

	refused atomic.Uint64 // readings refused under collection policies

	mu sync.Mutex
	// conns is keyed by the whole identity, not the connector ID alone: a
	// certificate naming a connector under another tenant must not be
	// answered from the real tenant's entry.
	conns map[Identity]*connState

	guard guard
}

type connState struct {
	mu      sync.Mutex
	loaded  time.Time
	view    *connView // replaced, never modified, by a reload
	err     error
	touched time.Time // when last-seen was last written
}

// connView is what was loaded about a connector; immutable once loaded,
// so requests read it without holding the lock while a reload replaces it.
type connView struct {
	status  registry.ConnectorStatus
	streams map[string]registry.Stream
	rules   map[string]collection.Rule // by key; absent: collection.DefaultRule
	meters  map[string]meterIdentity   // device name → registered serial and replacement, for devices with either
}

type commit struct {
	batches     []series.Batch
	quarantined []int // readings quarantined, per batch
	readings    int
	dup         []bool
	err         error
	done        chan struct{}
}

// New returns a Service; call Run to start committing.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxGroupReadings == 0 {
		cfg.MaxGroupReadings = 200_000
	}
	if cfg.PolicyGrace == 0 {
		cfg.PolicyGrace = 5 * time.Minute
	}
	if cfg.StatusTTL == 0 {
		cfg.StatusTTL = 500 * time.Millisecond
	}
	if cfg.PolicyTTL == 0 {
		cfg.PolicyTTL = 5 * time.Second
	}
	if cfg.StateEvery == 0 {
		cfg.StateEvery = time.Minute
	}
	if cfg.SiteGrace == 0 {
		cfg.SiteGrace = 2 * time.Minute
	}
	return &Service{
		cfg:     cfg,
		pending: make(chan *commit, 1024),
		conns:   map[Identity]*connState{},
		guard:   guard{policies: map[registry.TenantID]*policyEntry{}, streams: map[registry.StreamID]*guardStream{}},
	}
}

// Result reports what Accept did with a request.
type Result struct {
	Batches    int `json:"batches"`
	Readings   int `json:"readings"`   // readings newly stored or quarantined
	Duplicates int `json:"duplicates"` // batches already stored before (replays)
	// Refused lists the series whose readings were refused, wholly or in
	// part, under their collection policy: they are not stored, and the
	// rest of the batch is.
	Refused []Refusal `json:"refused,omitempty"`
	// Quarantined counts the readings, of Readings, that the plausibility
	// checks flagged: they were stored in quarantine, not in the series.
	Quarantined int `json:"quarantined,omitempty"`
	// IDs are the request's batch IDs, in order, for the audit log.
	IDs []wire.BatchID `json:"-"`
}

// Refusal reports readings of one series refused under the stream's
// collection policy.
type Refusal struct {
	Key      string             `json:"key"`
	Readings int                `json:"readings"`
	Reason   collection.Refusal `json:"reason"`
	stream   registry.StreamID
	batch    int
}

// Identity names the connector that sent a request, as its certificate says.
type Identity struct {
	Tenant    registry.TenantID
	Connector registry.ConnectorID
}

// Check reports whether the connector may use the device endpoint now:
// it must exist in its tenant and not be revoked. The answer is cached for
// Config.StatusTTL; Forget drops the cache entry at once.
func (s *Service) Check(ctx context.Context, id Identity) error {
	_, v, err := s.state(ctx, id)
	if err != nil {
		return err
	}
	if v.status == registry.ConnectorRevoked {
		return errs.E(errs.Forbidden, "connector is revoked")
	}
	return nil
}

// Forget drops what is cached about a connector, e.g. after its revocation
// or a change to its streams, so the next request sees the change.
func (s *Service) Forget(c registry.ConnectorID) {
	s.mu.Lock()
	for id := range s.conns {
		if id.Connector == c {
			delete(s.conns, id)
		}
	}
	s.mu.Unlock()
}

func (s *Service) state(ctx context.Context, id Identity) (*connState, *connView, error) {
	s.mu.Lock()
	st := s.conns[id]
	if st == nil {
		st = &connState{}
		s.conns[id] = st
	}
	s.mu.Unlock()

	st.mu.Lock()
	defer st.mu.Unlock()
	if now := s.cfg.Now(); st.loaded.IsZero() || now.Sub(st.loaded) >= s.cfg.StatusTTL {
		v, err := s.load(ctx, id)
		st.err = err
		if err == nil {
			st.view = v
		}
		st.loaded = now
	}
	if st.err != nil {
		return nil, nil, st.err
	}
	return st, st.view, nil
}

func (s *Service) load(ctx context.Context, id Identity) (*connView, error) {
	c, err := s.cfg.Store.Connector(ctx, id.Tenant, id.Connector)
	if err != nil {
		if errs.Is(errs.NotFound, err) {
			return nil, errs.E(errs.Forbidden, "unknown connector")
		}
		return nil, err
	}
	st := &connView{status: c.Status}
	list, err := s.cfg.Store.ConnectorStreams(ctx, id.Connector)
	if err != nil {
		return nil, err
	}
	pols, err := s.cfg.Store.ConnectorCollectionPolicies(ctx, id.Connector)
	if err != nil {
		return nil, err
	}
	devs, err := s.cfg.Store.ConnectorDevices(ctx, id.Connector)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		if (d.MeterSerial != "" || !d.MeterReplaced.IsZero()) && d.Tenant == id.Tenant {
			if st.meters == nil {
				st.meters = map[string]meterIdentity{}
			}
			m := meterIdentity{bound: d.MeterSerial, previous: d.PreviousMeterSerial}
			if !d.MeterReplaced.IsZero() {
				m.replaced = d.MeterReplaced.UnixMilli()
			}
			st.meters[d.Name] = m
		}
	}
	st.streams = make(map[string]registry.Stream, len(list))
	st.rules = make(map[string]collection.Rule, len(pols))
	for _, v := range list {
		if v.Tenant == id.Tenant {
			st.streams[v.Key] = v
			if p, ok := pols[v.ID]; ok {
				st.rules[v.Key] = p.Rule(s.cfg.PolicyGrace)
			}
		}
	}
	return st, nil
}

// Accept decodes a request body of one or more wire batches from a
// connector and stores them (in the landing area, see store). It returns
// only when every batch is durable (or was stored before). If any batch is
// malformed or names a stream the connector may not write, nothing of the
// request is stored. It is Prepare followed by Commit.
func (s *Service) Accept(ctx context.Context, id Identity, body []byte) (Result, error) {
	p, err := s.Prepare(ctx, id, body)
	if err != nil {
		return Result{}, err
	}
	return p.Commit(ctx)
}

// Pending is a request that passed every check and is sealed, ready to be
// committed. IDs are its batch IDs, in order.
type Pending struct {
	s   *Service
	st  *connState
	id  Identity
	c   *commit
	IDs []wire.BatchID
	// refused are the series readings refused under their policy.
	refused []Refusal
	// checked are the streams the plausibility checks learned from.
	checked []registry.StreamID
}

// Record attaches encoded audit entries to the request's batches, one per
// batch in order (see series.Batch.Audit): each is stored with its batch
// in one transaction. A replayed batch (stored before) gets no new entry.
func (p *Pending) Record(leaves [][]byte) {
	for i := range p.c.batches {
		if i < len(leaves) {
			p.c.batches[i].Audit = leaves[i]
		}
	}
}

// Prepare decodes, authorises, checks and seals a request without storing
// it: a caller can record the request (e.g. in the audit log) while it
// commits. With a Detector, readings it flags go to the batch's quarantine
// blocks instead of its chunks.
func (s *Service) Prepare(ctx context.Context, id Identity, body []byte) (_ *Pending, err error) {
	const op errs.Op = "ingest.Accept"
	batches, err := wire.DecodeBatches(body)
	if err != nil {
		kind := errs.Invalid
		if errors.Is(err, wire.ErrTooLarge) {
			kind = errs.TooLarge
		}
		return nil, errs.E(op, kind, err)
	}
	st, view, err := s.state(ctx, id)
	if err != nil {
		return nil, errs.E(op, err)
	}
	if view.status == registry.ConnectorRevoked {
		return nil, errs.E(op, errs.Forbidden, "connector is revoked")
	}
	// Every stream is authorised before any reading is checked, so that a
	// refused request teaches the checks nothing.
	for i := range batches {
		b := &batches[i]
		for j := range b.Series {
			if _, ok := view.streams[b.Series[j].Key]; !ok {
				return nil, errs.E(op, errs.Forbidden, fmt.Sprintf("batch %s: stream %q is not a stream of this connector's devices", b.ID, b.Series[j].Key))
			}
		}
	}
	p := &Pending{s: s, st: st, id: id, IDs: make([]wire.BatchID, len(batches))}
	defer func() {
		if err != nil {
			s.resetStreams(p.checked)
		}
	}()
	recv := s.cfg.Now().UnixMilli()
	c := &commit{batches: make([]series.Batch, len(batches)), quarantined: make([]int, len(batches)), done: make(chan struct{})}
	for i := range batches {
		b := &batches[i]
		p.IDs[i] = b.ID
		out := &c.batches[i]
		out.Connector, out.ID = id.Connector, b.ID
		for j := range b.Series {
			sr := &b.Series[j]
			v := view.streams[sr.Key]
			rs, block, minT, maxT := sr.Readings, sr.Block, sr.MinTime, sr.MaxTime
			// Readings the stream's collection policy does not allow
			// are not stored at all, not even in quarantine: the hub has
			// no basis to keep them. The rest of the batch is stored.
			if rule, ok := view.rules[sr.Key]; ok {
				keep, refused, why := rule.Filter(rs)
				if refused > 0 {
					p.refused = append(p.refused, Refusal{Key: sr.Key, Readings: refused, Reason: why, stream: v.ID, batch: i})
					rs, block = keep, nil
				}
			}
			// The plausibility checks judge the rest: what they flag is
			// quarantined with the batch, the others are stored.
			if s.cfg.Detector != nil && len(rs) > 0 {
				m := view.meters[wire.KeyDevice(sr.Key)]
				if m.bound != "" {
					m.reported = b.MeterOf(wire.KeyDevice(sr.Key))
				}
				keep, bad, why, checked, err := s.check(ctx, v, recv, rs, m)
				if err != nil {
					return nil, errs.E(op, err)
				}
				if checked {
					p.checked = append(p.checked, v.ID)
				}
				if len(bad) > 0 {
					q, err := s.quarantine(ctx, v, id.Connector, b.ID, len(out.Quarantine), recv, bad, why)
					if err != nil {
						return nil, sealErr(op, sr.Key, err)
					}
					out.Quarantine = append(out.Quarantine, q)
					out.Readings += len(bad)
					c.quarantined[i] += len(bad)
					rs, block = keep, nil
				}
			}
			if len(rs) == 0 {
				continue
			}
			if block == nil {
				block = wire.AppendBlock(nil, rs)
				minT, maxT = span(rs)
			}
			n := len(rs)
			out.Readings += n
			// Sealed under the subject's key before anything is stored;
			// the compactor later re-cuts it by time bucket.
			sealed, err := s.cfg.Sealer.Seal(ctx, v.Subject, block, series.LandingAD(v.Tenant, v.ID))
			if err != nil {
				return nil, sealErr(op, sr.Key, err)
			}
			ch := series.Chunk{Tenant: v.Tenant, Subject: v.Subject, Stream: v.ID, MinTime: minT, MaxTime: maxT, Count: n, Data: sealed}
			if v.Role != registry.RoleNone && s.cfg.Detector != nil && s.cfg.Sites != nil {
				ch.Hold = recv + s.cfg.SiteGrace.Milliseconds() // judged with its site first (Screen)
			}
			out.Chunks = append(out.Chunks, ch)
		}
		c.readings += out.Readings
	}
	p.c = c
	return p, nil
}

func sealErr(op errs.Op, key string, err error) error {
	if errs.Is(errs.NotFound, err) {
		return errs.E(op, errs.Forbidden, fmt.Sprintf("stream %q belongs to an erased data subject", key))
	}
	return errs.E(op, err)
}

// Commit stores the prepared batches in the next group commit and returns
// when they are durable (or were stored before).
func (p *Pending) Commit(ctx context.Context) (Result, error) {
	const op errs.Op = "ingest.Accept"
	s, c := p.s, p.c
	select {
	case s.pending <- c:
	case <-ctx.Done():
		return Result{}, errs.E(op, errs.Unavailable, ctx.Err())
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		// The commit may still land; the connector retries with the same
		// batch ID, which the store then answers as a duplicate.
		return Result{}, errs.E(op, errs.Unavailable, ctx.Err())
	}
	if c.err != nil {
		// Not stored: the retry must not be judged a replay of itself.
		s.resetStreams(p.checked)
		return Result{}, errs.E(op, errs.Unavailable, c.err)
	}
	s.touch(p.st, p.id)
	res := Result{Batches: len(c.batches), IDs: p.IDs}
	for i, d := range c.dup {
		if d {
			res.Duplicates++
		} else {
			res.Readings += c.batches[i].Readings
			res.Quarantined += c.quarantined[i]
		}
	}
	s.countRefused(p, c.dup)
	res.Refused = p.refused
	return res, nil
}

// countRefused records readings refused under collection policies (of
// batches stored now, not of replays), in the log and on the stream.
func (s *Service) countRefused(p *Pending, dup []bool) {
	for _, r := range p.refused {
		if dup[r.batch] {
			continue
		}
		s.refused.Add(uint64(r.Readings))
		s.cfg.Log.Warn("ingest: readings refused under the stream's collection policy",
			"connector", p.id.Connector, "stream", r.stream, "readings", r.Readings, "reason", string(r.Reason))
		if err := s.cfg.Store.CountPolicyRefusals(context.Background(), r.stream, int64(r.Readings), s.cfg.Now().UnixMilli()); err != nil {
			s.cfg.Log.Error("ingest: count refused readings", "stream", r.stream, "err", err)
		}
	}
}

// Refused returns how many readings this hub refused under collection
// policies since it started.
func (s *Service) Refused() uint64 { return s.refused.Load() }

// touchEvery bounds how often a connector's last-seen time is written.
const touchEvery = 30 * time.Second

// touch records, at most every touchEvery, that the connector delivered.
func (s *Service) touch(st *connState, id Identity) {
	now := s.cfg.Now()
	st.mu.Lock()
	stale := now.Sub(st.touched) >= touchEvery
	if stale {
		st.touched = now
	}
	st.mu.Unlock()
	if stale {
		go func() {
			if err := s.cfg.Store.TouchConnector(context.Background(), id.Connector, now.UnixMilli()); err != nil {
				s.cfg.Log.Debug("ingest: record last seen", "connector", id.Connector, "err", err)
			}
		}()
	}
}

// Run commits pending batches in groups until ctx is done. Every request
// waiting when Run returns gets an error.
func (s *Service) Run(ctx context.Context) error {
	if s.cfg.Detector != nil {
		saved := make(chan struct{})
		go func() {
			s.saveLoop(ctx)
			close(saved)
		}()
		defer func() { <-saved }()
	}
	for {
		var first *commit
		select {
		case first = <-s.pending:
		case <-ctx.Done():
			s.drain(ctx.Err())
			return nil
		}
		group := []*commit{first}
		n := first.readings
	gather:
		for n < s.cfg.MaxGroupReadings {
			select {
			case c := <-s.pending:
				group = append(group, c)
				n += c.readings
			default:
				break gather
			}
		}
		s.write(group)
	}
}

func (s *Service) write(group []*commit) {
	var all []series.Batch
	for _, c := range group {
		all = append(all, c.batches...)
	}
	// The commit runs to completion even if the hub is shutting down:
	// an abandoned transaction would only be retried by the connector.
	dup, err := s.cfg.Store.WriteBatches(context.Background(), s.cfg.Now().UnixMilli(), all)
	if err != nil {
		s.cfg.Log.Error("ingest: commit failed", "batches", len(all), "err", err)
	}
	for _, c := range group {
		c.err = err
		if err == nil {
			c.dup, dup = dup[:len(c.batches)], dup[len(c.batches):]
		}
		close(c.done)
	}
}

func (s *Service) drain(err error) {
	for {
		select {
		case c := <-s.pending:
			c.err = err
			close(c.done)
		default:
			return
		}
	}
}
