package ingest

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/wire"
)

// PlausibilityStore is what the plausibility checks need from the
// database: tenants' policies and the streams' learned state.
type PlausibilityStore interface {
	// PlausibilityPolicy returns a tenant's policy as JSON, nil for none.
	PlausibilityPolicy(ctx context.Context, t registry.TenantID) ([]byte, error)
	// LoadPlausibilityState returns a stream's saved state (sealed);
	// NotFound if there is none.
	LoadPlausibilityState(ctx context.Context, t registry.TenantID, st registry.StreamID) (series.PlausibilityState, error)
	// SavePlausibilityStates upserts saved states.
	SavePlausibilityStates(ctx context.Context, vs []series.PlausibilityState, now time.Time) error
}

// guard holds what the plausibility checks cache: tenants' policies and,
// per stream, whether its saved state was loaded and whether it changed
// since it was last saved.
type guard struct {
	mu       sync.RWMutex
	policies map[registry.TenantID]*policyEntry
	streams  map[registry.StreamID]*guardStream
}

type policyEntry struct {
	mu     sync.Mutex
	loaded time.Time
	p      plausibility.Policy
	err    error
}

type guardStream struct {
	once    sync.Once
	tenant  registry.TenantID
	subject registry.SubjectID
	dirty   atomic.Bool
}

// KindOf maps a stream to the plausibility kind its unit and category
// imply; ok is false for streams the checks do not cover (yet): units other
// than W, Wh and °C.
func KindOf(st registry.Stream) (k plausibility.Kind, ok bool) {
	switch st.Unit {
	case "W":
		switch st.Category {
		case "energy.heating", "energy.charging", "energy.storage":
			return plausibility.KindSwitchedPower, true
		}
		return plausibility.KindPower, true
	case "Wh":
		return plausibility.KindEnergy, true
	case "°C", "degC":
		return plausibility.KindTemperature, true
	}
	return 0, false
}

// policy returns a tenant's policy, cached for Config.PolicyTTL. A policy
// that cannot be loaded fails the request (the connector retries): the
// checks fail closed.
func (s *Service) policy(ctx context.Context, t registry.TenantID) (plausibility.Policy, error) {
	s.guard.mu.RLock()
	e := s.guard.policies[t]
	s.guard.mu.RUnlock()
	if e == nil {
		s.guard.mu.Lock()
		if e = s.guard.policies[t]; e == nil {
			e = &policyEntry{}
			s.guard.policies[t] = e
		}
		s.guard.mu.Unlock()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if now := s.cfg.Now(); e.loaded.IsZero() || now.Sub(e.loaded) >= s.cfg.PolicyTTL {
		e.err = s.loadPolicy(ctx, t, e)
		e.loaded = now
	}
	return e.p, e.err
}

func (s *Service) loadPolicy(ctx context.Context, t registry.TenantID, e *policyEntry) error {
	b, err := s.cfg.Plausibility.PlausibilityPolicy(ctx, t)
	if err != nil {
		return errs.E(errs.Unavailable, "plausibility policy cannot be loaded")
	}
	p, err := plausibility.ParsePolicy(b)
	if err != nil {
		return errs.E(errs.Integrity, "stored plausibility policy is invalid")
	}
	return s.applyPolicy(t, e, p)
}

func (s *Service) applyPolicy(t registry.TenantID, e *policyEntry, p plausibility.Policy) error {
	r, err := p.Rules()
	if err != nil {
		return errs.E(errs.Invalid, err)
	}
	if err := s.cfg.Detector.SetRules(t, r); err != nil {
		return errs.E(errs.Invalid, err)
	}
	e.p = p
	return nil
}

// SetPolicy makes a tenant's new policy effective at once on this hub (it
// must be stored already; other replicas load it within PolicyTTL).
func (s *Service) SetPolicy(t registry.TenantID, p plausibility.Policy) error {
	if s.cfg.Detector == nil {
		return nil
	}
	s.guard.mu.Lock()
	e := s.guard.policies[t]
	if e == nil {
		e = &policyEntry{}
		s.guard.policies[t] = e
	}
	s.guard.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := s.applyPolicy(t, e, p); err != nil {
		return err
	}
	e.loaded, e.err = s.cfg.Now(), nil
	return nil
}

// stream returns the guard entry of a stream, loading its saved state into
// the detector on first use.
func (s *Service) guardStream(ctx context.Context, v registry.Stream) *guardStream {
	s.guard.mu.RLock()
	gs := s.guard.streams[v.ID]
	s.guard.mu.RUnlock()
	if gs == nil {
		s.guard.mu.Lock()
		if gs = s.guard.streams[v.ID]; gs == nil {
			gs = &guardStream{tenant: v.Tenant, subject: v.Subject}
			s.guard.streams[v.ID] = gs
		}
		s.guard.mu.Unlock()
	}
	gs.once.Do(func() {
		saved, err := s.cfg.Plausibility.LoadPlausibilityState(ctx, v.Tenant, v.ID)
		if err != nil {
			if !errs.Is(errs.NotFound, err) {
				s.cfg.Log.Warn("ingest: loading plausibility state failed; the stream learns afresh", "stream", v.ID, "err", err)
			}
			return
		}
		if saved.Subject != v.Subject {
			return
		}
		pt, err := s.cfg.Sealer.Open(ctx, v.Subject, saved.Data, series.PlausibilityStateAD(v.Tenant, v.ID))
		if err == nil {
			err = s.cfg.Detector.RestoreStreamState(v.ID, pt)
		}
		if err != nil {
			s.cfg.Log.Warn("ingest: saved plausibility state unusable; the stream learns afresh", "stream", v.ID, "err", err)
		}
	})
	return gs
}

// ForgetStreams drops what the checks learned about streams (erased or
// deleted), here and in the detector.
func (s *Service) ForgetStreams(ids []registry.StreamID) {
	if s.cfg.Detector == nil {
		return
	}
	s.guard.mu.Lock()
	for _, id := range ids {
		delete(s.guard.streams, id)
		s.cfg.Detector.Forget(id)
	}
	s.guard.mu.Unlock()
}

// meterIdentity is what a batch reports as the meter of a series' device
// and the serial the device is registered with ("" bound: no binding).
type meterIdentity struct {
	reported, bound string
	previous        string // the replaced meter's serial, valid before replaced
	replaced        int64  // when the meter was last replaced, Unix ms; 0: never
}

// mismatch reports whether a binding exists and the batch's readings rs
// do not honour it (plausibility.MeterMismatch).
func (m meterIdentity) mismatch(rs []wire.Reading) bool {
	var maxT int64
	for _, r := range rs {
		maxT = max(maxT, r.Time)
	}
	return plausibility.MeterMismatch(m.reported, m.bound, m.previous, m.replaced, maxT)
}

// check runs the plausibility checks on one series of a batch. It returns
// the readings to store and, if any were flagged, the quarantined block's
// readings and verdicts (indices into that block). It touches rs only to
// read it.
func (s *Service) check(ctx context.Context, v registry.Stream, recv int64, rs []wire.Reading, meter meterIdentity) (keep, quarantined []wire.Reading, why []plausibility.Verdict, checked bool, err error) {
	kind, ok := KindOf(v)
	if (!ok && !meter.mismatch(rs)) || len(rs) == 0 {
		return rs, nil, nil, false, nil
	}
	pol, err := s.policy(ctx, v.Tenant)
	if err != nil {
		return nil, nil, nil, false, err
	}
	if pol.Disabled {
		return rs, nil, nil, false, nil
	}
	if !ok {
		// A stream of a kind the rules do not cover yet: only its
		// meter's identity is checked.
		if pol.IsOff(plausibility.RuleMeterIdentity) {
			return rs, nil, nil, false, nil
		}
		s.cfg.Log.Info("ingest: readings quarantined", "stream", v.ID, "readings", len(rs), "rules", plausibility.RuleMeterIdentity.String())
		why = make([]plausibility.Verdict, len(rs))
		for i := range why {
			why[i] = plausibility.Verdict{Index: i, Reasons: []plausibility.Reason{{Rule: plausibility.RuleMeterIdentity, Detail: "reported meter identity differs from the bound meter"}}}
		}
		return nil, rs, why, false, nil
	}
	gs := s.guardStream(ctx, v)
	sctx := plausibility.StreamContext{Tenant: v.Tenant, Stream: v.ID, Kind: kind, Site: pol.Site(), Received: recv,
		Production: v.Category == "energy.production", NoBaseline: strings.Contains(v.Metric, "export"),
		MeterID: meter.reported, BoundMeterID: meter.bound, PreviousMeterID: meter.previous, ReplacedAt: meter.replaced}
	if v.Category == "energy.storage" {
		sctx.Site.NetMetered = true // a battery charges and discharges
	}
	// The rules judge readings in time order; agents send them so, but the
	// wire format does not promise it.
	in := rs
	if !slices.IsSortedFunc(rs, byTime) {
		in = slices.Clone(rs)
		slices.SortStableFunc(in, byTime)
	}
	vs := s.cfg.Detector.Check(sctx, in)
	if !gs.dirty.Load() {
		gs.dirty.Store(true)
	}
	vs = pol.Filter(vs)
	n := 0
	for _, x := range vs {
		if x.Quarantine() {
			n++
		}
	}
	if n == 0 {
		return rs, nil, nil, true, nil
	}
	if s.cfg.Log.Enabled(ctx, slog.LevelInfo) {
		seen := map[plausibility.Rule]bool{}
		var rules []string
		for _, x := range vs {
			for _, r := range x.Reasons {
				if !seen[r.Rule] {
					seen[r.Rule] = true
					rules = append(rules, r.Rule.String())
				}
			}
		}
		s.cfg.Log.Info("ingest: readings quarantined", "stream", v.ID, "readings", n, "rules", strings.Join(rules, ","))
	}
	keep = make([]wire.Reading, 0, len(in)-n)
	quarantined = make([]wire.Reading, 0, n)
	why = make([]plausibility.Verdict, 0, n)
	j := 0
	for i, r := range in {
		for j < len(vs) && vs[j].Index < i {
			j++
		}
		if j < len(vs) && vs[j].Index == i && vs[j].Quarantine() {
			why = append(why, plausibility.Verdict{Index: len(quarantined), Reasons: vs[j].Reasons})
			quarantined = append(quarantined, r)
			continue
		}
		keep = append(keep, r)
	}
	return keep, quarantined, why, true, nil
}

func byTime(a, b wire.Reading) int { return cmp.Compare(a.Time, b.Time) }

func span(rs []wire.Reading) (lo, hi int64) {
	lo, hi = rs[0].Time, rs[0].Time
	for _, r := range rs[1:] {
		lo, hi = min(lo, r.Time), max(hi, r.Time)
	}
	return lo, hi
}

// quarantine seals a block of flagged readings with their verdicts.
func (s *Service) quarantine(ctx context.Context, v registry.Stream, c registry.ConnectorID, b wire.BatchID, seq int, recv int64, rs []wire.Reading, why []plausibility.Verdict) (series.Quarantined, error) {
	reasons, err := json.Marshal(why)
	if err != nil {
		return series.Quarantined{}, err
	}
	sealed, err := s.cfg.Sealer.Seal(ctx, v.Subject, wire.AppendBlock(nil, rs), series.QuarantineAD(v.Tenant, v.ID, c, b, seq))
	if err != nil {
		return series.Quarantined{}, err
	}
	lo, hi := span(rs)
	return series.Quarantined{Tenant: v.Tenant, Subject: v.Subject, Stream: v.ID, Connector: c, Batch: b, Seq: seq, Received: recv,
		MinTime: lo, MaxTime: hi, Count: len(rs), Reasons: reasons, Data: sealed}, nil
}

// resetStreams forgets what the checks learned from a request that was
// not stored, so that its retry is not judged a replay of itself: the
// streams reload their saved state on next use.
func (s *Service) resetStreams(ids []registry.StreamID) {
	if len(ids) > 0 {
		s.ForgetStreams(ids)
	}
}

// SavePlausibilityState saves the learned state of every stream checked
// since the last save, sealed under its subject's key.
func (s *Service) SavePlausibilityState(ctx context.Context) error {
	if s.cfg.Detector == nil {
		return nil
	}
	type item struct {
		id registry.StreamID
		gs *guardStream
	}
	var todo []item
	s.guard.mu.Lock()
	for id, gs := range s.guard.streams {
		if gs.dirty.Load() {
			todo = append(todo, item{id, gs})
		}
	}
	s.guard.mu.Unlock()
	var buf []byte
	var out []series.PlausibilityState
	flush := func() error {
		err := s.cfg.Plausibility.SavePlausibilityStates(ctx, out, s.cfg.Now())
		out = out[:0]
		return err
	}
	for _, it := range todo {
		if !it.gs.dirty.Swap(false) {
			continue
		}
		var ok bool
		if buf, ok = s.cfg.Detector.AppendStreamState(buf[:0], it.id); !ok {
			continue
		}
		sealed, err := s.cfg.Sealer.Seal(ctx, it.gs.subject, buf, series.PlausibilityStateAD(it.gs.tenant, it.id))
		if err != nil {
			if errs.Is(errs.NotFound, err) { // the subject was erased
				s.ForgetStreams([]registry.StreamID{it.id})
				continue
			}
			it.gs.dirty.Store(true)
			return err
		}
		out = append(out, series.PlausibilityState{Tenant: it.gs.tenant, Subject: it.gs.subject, Stream: it.id, Data: sealed})
		if len(out) == 200 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// saveLoop saves the learned state every Config.StateEvery and once more
// when ctx ends.
func (s *Service) saveLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.StateEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := s.SavePlausibilityState(context.Background()); err != nil {
				s.cfg.Log.Warn("ingest: saving plausibility state at shutdown failed", "err", err)
			}
			return
		case <-t.C:
			if err := s.SavePlausibilityState(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Log.Warn("ingest: saving plausibility state failed; will retry", "err", err)
			}
		}
	}
}
