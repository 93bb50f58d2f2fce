package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/wire"
)

// QuarantinedReading is a reading held in quarantine, with why.
type QuarantinedReading struct {
	series.Reading
	Reasons []plausibility.Reason `json:"reasons"`
}

// QuarantineEntry is one quarantined block: the flagged readings of one
// stream from one batch.
type QuarantineEntry struct {
	ID        int64                `json:"id"`
	Stream    registry.StreamID    `json:"stream"`
	Connector registry.ConnectorID `json:"connector"`
	Batch     string               `json:"batch"`
	Received  int64                `json:"received_ms"`
	Count     int                  `json:"count"`
	// Readings are the flagged readings with their reasons; only in a
	// listing with a purpose (an authorized read of the stream).
	Readings []QuarantinedReading `json:"readings,omitempty"`
	// Reasons, in the overview (no purpose), are the reasons of the
	// block's readings in reading order, without their times or values.
	Reasons []plausibility.Reason `json:"reasons,omitempty"`
}

// QuarantinePage is a page of a tenant's quarantine, oldest first. Next,
// if set, is the after parameter of the next page.
type QuarantinePage struct {
	Entries []QuarantineEntry `json:"entries"`
	Next    string            `json:"next,omitempty"`
}

// QuarantineIDs names quarantined blocks to release or reject.
type QuarantineIDs struct {
	IDs []int64 `json:"ids"`
}

// QuarantineResult reports a release or rejection.
type QuarantineResult struct {
	Entries  int `json:"entries"`
	Readings int `json:"readings"`
}

// quarantineKey carries what authorizeQuarantine decided for
// listQuarantine.
type quarantineKey struct{}

// quarantineView is what a quarantine listing may show: the overview (no
// readings) or, with a purpose, the readings of one authorized stream.
type quarantineView struct {
	stream registry.Stream // set when readings are opened
	open   bool
}

// authorizeQuarantine decides a quarantine listing. Quarantined readings
// are personal data, so opening them is a read like any other: it needs a
// purpose and a stream (one stream at a time, so the audit entry names its
// data subject), and the principal's grants and the purpose's lawful basis
// decide, exactly as for the stream's raw readings. Without a purpose the
// listing is an overview that opens nothing (entry IDs, streams, counts and
// the reasons, which hold no values or times), visible to those who may
// see the tenant's registry: tenant admins, operators, auditors.
func (a *API) authorizeQuarantine(r *http.Request) (*http.Request, error) {
	const op errs.Op = "api.authorizeQuarantine"
	t, err := a.tenantOf(r)
	if err != nil {
		return r, err
	}
	p, ok := principalOf(r)
	if !ok {
		return r, errs.E(op, errs.Unauthenticated, "no principal")
	}
	v := r.URL.Query()
	stream := registry.StreamID(v.Get("stream"))
	var view quarantineView
	if stream != "" {
		if view.stream, err = a.cfg.Store.Stream(r.Context(), t, stream); err != nil {
			return r, err
		}
	}
	if v.Get("purpose") == "" {
		if p.Tenant != "" && !p.Has(access.RoleTenantAdmin) && !p.Has(access.RoleOperator) && !p.Has(access.RoleAuditor) {
			return r, errs.E(op, errs.Forbidden, "the quarantine overview is visible to tenant admins, operators and auditors; to open readings give a stream and a purpose you hold a grant for")
		}
		return r.WithContext(context.WithValue(r.Context(), quarantineKey{}, view)), nil
	}
	if stream == "" {
		return r, errs.E(op, errs.Invalid, "quarantined readings are opened one stream at a time: give stream with purpose")
	}
	if _, err := a.authorizeRead(r, view.stream, rollup.Raw); err != nil {
		return r, err
	}
	view.open = true
	r = r.WithContext(context.WithValue(r.Context(), readKey{}, authorizedRead{stream: view.stream, res: rollup.Raw}))
	return r.WithContext(context.WithValue(r.Context(), quarantineKey{}, view)), nil
}

// listQuarantine serves a page of a tenant's quarantine: with a purpose,
// one stream's flagged readings opened with their reasons; without, the
// overview (see authorizeQuarantine). Query parameters: stream, purpose,
// after (the previous page's next), limit (entries, default 100, at most
// 1000).
func (a *API) listQuarantine(w http.ResponseWriter, r *http.Request) error {
	view, ok := r.Context().Value(quarantineKey{}).(quarantineView)
	if !ok { // only reachable through authorizeQuarantine: fail closed
		return errs.E(errs.Forbidden, "quarantine listing not authorized")
	}
	t := pathTenant(r)
	v := r.URL.Query()
	var err error
	after, limit := int64(0), 100
	if s := v.Get("after"); s != "" {
		if after, err = strconv.ParseInt(s, 10, 64); err != nil || after < 0 {
			return errs.E(errs.Invalid, "after must be the next value of the previous page")
		}
	}
	if s := v.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 1000 {
			return errs.E(errs.Invalid, "limit must be between 1 and 1000")
		}
	}
	qs, err := a.cfg.Store.Quarantine(r.Context(), t, view.stream.ID, after, limit+1)
	if err != nil {
		return err
	}
	page := QuarantinePage{Entries: []QuarantineEntry{}}
	if len(qs) > limit {
		qs = qs[:limit]
		page.Next = strconv.FormatInt(qs[limit-1].ID, 10)
	}
	live := map[registry.StreamID]bool{}
	for i := range qs {
		q := &qs[i]
		if !view.open {
			// An erased subject's streams have left the registry: their
			// entries are unreadable and await the purge.
			alive, seen := live[q.Stream]
			if !seen {
				_, err := a.cfg.Store.Stream(r.Context(), t, q.Stream)
				if err != nil && !errs.Is(errs.NotFound, err) {
					return err
				}
				alive = err == nil
				live[q.Stream] = alive
			}
			if !alive {
				continue
			}
			e, err := overviewEntry(q)
			if err != nil {
				return err
			}
			page.Entries = append(page.Entries, e)
			continue
		}
		e, err := a.openQuarantined(r, q)
		if errs.Is(errs.NotFound, err) {
			continue // an erased subject's, unreadable and awaiting purge
		}
		if err != nil {
			return err
		}
		page.Entries = append(page.Entries, e)
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// overviewEntry describes a quarantined block without opening it: its
// readings carry only their reasons (index order), no time or value.
func overviewEntry(q *series.Quarantined) (QuarantineEntry, error) {
	e := QuarantineEntry{ID: q.ID, Stream: q.Stream, Connector: q.Connector, Batch: q.Batch.String(), Received: q.Received, Count: q.Count}
	var why []plausibility.Verdict
	if err := json.Unmarshal(q.Reasons, &why); err != nil {
		return e, errs.E(errs.Integrity, fmt.Sprintf("reasons of quarantined block %d cannot be decoded", q.ID))
	}
	e.Reasons = make([]plausibility.Reason, 0, len(why))
	for _, v := range why {
		e.Reasons = append(e.Reasons, v.Reasons...)
	}
	return e, nil
}

func (a *API) openQuarantined(r *http.Request, q *series.Quarantined) (QuarantineEntry, error) {
	e := QuarantineEntry{ID: q.ID, Stream: q.Stream, Connector: q.Connector, Batch: q.Batch.String(), Received: q.Received, Count: q.Count}
	rs, err := a.quarantinedReadings(r, q)
	if err != nil {
		return e, err
	}
	var why []plausibility.Verdict
	if err := json.Unmarshal(q.Reasons, &why); err != nil {
		return e, errs.E(errs.Integrity, fmt.Sprintf("reasons of quarantined block %d cannot be decoded", q.ID))
	}
	e.Readings = make([]QuarantinedReading, len(rs))
	for i, x := range rs {
		e.Readings[i] = QuarantinedReading{Reading: series.Reading{Time: x.Time, Value: x.Value, Quality: x.Quality}, Reasons: []plausibility.Reason{}}
	}
	for _, v := range why {
		if v.Index >= 0 && v.Index < len(e.Readings) {
			e.Readings[v.Index].Reasons = v.Reasons
		}
	}
	return e, nil
}

// quarantinedReadings opens and decodes a quarantined block.
func (a *API) quarantinedReadings(r *http.Request, q *series.Quarantined) ([]wire.Reading, error) {
	pt, err := a.cfg.Sealer.Open(r.Context(), q.Subject, q.Data, series.QuarantineAD(q.Tenant, q.Stream, q.Connector, q.Batch, q.Seq))
	if err != nil {
		if errs.KindOf(err) == errs.Other {
			return nil, errs.E(errs.Integrity, fmt.Sprintf("quarantined block %d cannot be opened", q.ID))
		}
		return nil, err
	}
	rs, err := wire.DecodeBlock(pt, nil)
	if err != nil {
		return nil, errs.E(errs.Integrity, fmt.Sprintf("quarantined block %d cannot be decoded", q.ID))
	}
	return rs, nil
}

// releaseQuarantine moves quarantined blocks into their streams: they land
// like a new batch and the compactor adds them to chunks and rollups.
func (a *API) releaseQuarantine(w http.ResponseWriter, r *http.Request) error {
	t, ids, err := a.quarantineIDs(w, r)
	if err != nil {
		return err
	}
	n, err := a.cfg.Store.ReleaseQuarantine(r.Context(), t, ids, func(q *series.Quarantined) (series.Chunk, error) {
		rs, err := a.quarantinedReadings(r, q)
		if err != nil {
			return series.Chunk{}, err
		}
		sealed, err := a.cfg.Sealer.Seal(r.Context(), q.Subject, wire.AppendBlock(nil, rs), series.LandingAD(q.Tenant, q.Stream))
		if err != nil {
			return series.Chunk{}, err
		}
		return series.Chunk{Tenant: q.Tenant, Subject: q.Subject, Stream: q.Stream, Landed: true, MinTime: q.MinTime, MaxTime: q.MaxTime, Count: len(rs), Data: sealed}, nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, QuarantineResult{Entries: len(ids), Readings: n})
	return nil
}

// rejectQuarantine deletes quarantined blocks for good.
func (a *API) rejectQuarantine(w http.ResponseWriter, r *http.Request) error {
	t, ids, err := a.quarantineIDs(w, r)
	if err != nil {
		return err
	}
	n, err := a.cfg.Store.RejectQuarantine(r.Context(), t, ids)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, QuarantineResult{Entries: len(ids), Readings: n})
	return nil
}

func (a *API) quarantineIDs(w http.ResponseWriter, r *http.Request) (registry.TenantID, []int64, error) {
	t, err := a.tenantOf(r)
	if err != nil {
		return "", nil, err
	}
	var in QuarantineIDs
	if err := decodeJSON(w, r, &in); err != nil {
		return "", nil, err
	}
	return t, in.IDs, nil
}

// plausibilityPolicy serves a tenant's plausibility policy (the default if
// it has none).
func (a *API) plausibilityPolicy(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	b, err := a.cfg.Store.PlausibilityPolicy(r.Context(), t)
	if err != nil {
		return err
	}
	p, err := plausibility.ParsePolicy(b)
	if err != nil {
		return errs.E(errs.Integrity, "stored plausibility policy is invalid")
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

// setPlausibilityPolicy replaces a tenant's plausibility policy. It takes
// effect at once on this hub and within seconds on other replicas.
func (a *API) setPlausibilityPolicy(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var p plausibility.Policy
	if err := decodeJSON(w, r, &p); err != nil {
		return err
	}
	if err := p.Check(); err != nil {
		return errs.E(errs.Invalid, err)
	}
	b, _ := json.Marshal(p)
	if err := a.cfg.Store.SetPlausibilityPolicy(r.Context(), t, b, a.cfg.Now()); err != nil {
		return err
	}
	if err := a.cfg.Ingest.SetPolicy(t, p); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}
