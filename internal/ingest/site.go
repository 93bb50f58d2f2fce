package ingest

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/wire"
)

// The site balance check.
//
// A site's power streams (import, export, production, sub-metered loads)
// arrive in different batches, possibly from different connectors and on
// different replicas, so no single request sees them together. The check
// therefore runs where they meet: in the compactor, before landed blocks
// are folded into chunks and rollups.
//
//   - At ingest, a block of a stream with a role is landed with a hold
//     (Config.SiteGrace after receipt, 2 minutes by default). Nothing else
//     changes: the batch is acknowledged as before, and the hold costs
//     ingest nothing.
//   - The compactor folds a held block only once its hold has passed, and
//     then takes in every held block of the same site with it (store
//     Compact), so a site's streams of the last minutes are judged together.
//   - Screen then runs plausibility.Detector.CheckSite per site over the
//     span of those blocks, with each role stream's stored readings of the
//     span (landing and chunks). A reading it blames that is in the pass is
//     taken out of its block and quarantined in the same transaction as the
//     block's chunks: it never reaches the chunks or the rollups. A blamed
//     reading folded before (its stream arrived earlier than the grace
//     allows for) cannot be taken back; the readings of this pass at that
//     time are quarantined instead, as not balancing with what was stored.
//
// So the window per site is bounded by the grace, the check never sees a
// half-arrived site unless a stream is later than the grace, and a
// reading is in exactly one place at every moment.

// SiteStore is what the site balance check needs from the database.
type SiteStore interface {
	// SiteRoleStreams lists the streams of a site that have a role.
	SiteRoleStreams(ctx context.Context, t registry.TenantID, site registry.SiteID) ([]registry.Stream, error)
	// Stream returns one stream (with its site and role).
	Stream(ctx context.Context, t registry.TenantID, id registry.StreamID) (registry.Stream, error)
	// FoldedChunks is series.ChunkSource over the compacted chunks only,
	// without the landing area.
	FoldedChunks(ctx context.Context, t registry.TenantID, st registry.StreamID, from, to int64, fn func(*series.Chunk) (bool, error)) error
}

// folded reads the compacted chunks only (see SiteStore.FoldedChunks).
type folded struct{ SiteStore }

func (f folded) StreamChunks(ctx context.Context, t registry.TenantID, st registry.StreamID, from, to int64, fn func(*series.Chunk) (bool, error)) error {
	return f.FoldedChunks(ctx, t, st, from, to, fn)
}

// siteKey names a site across tenants.
type siteKey struct {
	tenant registry.TenantID
	site   registry.SiteID
}

// pluckKey names one reading of one stream.
type pluckKey struct {
	stream registry.StreamID
	time   int64
}

// Screen implements series.Screen: the site balance check of the landed
// blocks of one compaction pass. Blocks without a hold (streams without a
// role, released quarantine) pass untouched and unopened by it.
func (s *Service) Screen(ctx context.Context, landed []series.Chunk) ([]series.Chunk, []series.Quarantined, error) {
	if s.cfg.Detector == nil || s.cfg.Sites == nil {
		return landed, nil, nil
	}
	bySite := map[siteKey][]int{}
	var sites []siteKey
	known := map[registry.StreamID]registry.Stream{}
	for i := range landed {
		c := &landed[i]
		if c.Hold == 0 {
			continue
		}
		st, ok := known[c.Stream]
		if !ok {
			var err error
			st, err = s.cfg.Sites.Stream(ctx, c.Tenant, c.Stream)
			if errs.Is(errs.NotFound, err) {
				continue // deleted or erased: the compactor drops or keeps it as usual
			}
			if err != nil {
				return nil, nil, err
			}
			known[c.Stream] = st
		}
		if st.Role == registry.RoleNone || st.Site == "" {
			continue
		}
		k := siteKey{c.Tenant, st.Site}
		if _, ok := bySite[k]; !ok {
			sites = append(sites, k)
		}
		bySite[k] = append(bySite[k], i)
	}
	if len(sites) == 0 {
		return landed, nil, nil
	}
	// Readings to take out, per landed block index, with their reasons.
	out := map[int]map[int64][]plausibility.Reason{}
	for _, k := range sites {
		if err := s.screenSite(ctx, k, landed, bySite[k], out); err != nil {
			return nil, nil, err
		}
	}
	if len(out) == 0 {
		return landed, nil, nil
	}
	keep := make([]series.Chunk, 0, len(landed))
	var qs []series.Quarantined
	for i, c := range landed {
		why, ok := out[i]
		if !ok {
			keep = append(keep, c)
			continue
		}
		rest, q, err := s.pluck(ctx, c, why)
		if err != nil {
			return nil, nil, err
		}
		if rest.Count > 0 {
			keep = append(keep, rest)
		}
		qs = append(qs, q)
	}
	return keep, qs, nil
}

// screenSite checks one site over the span of its blocks in the pass and
// records in out the readings of the pass to take out.
func (s *Service) screenSite(ctx context.Context, k siteKey, landed []series.Chunk, idx []int, out map[int]map[int64][]plausibility.Reason) error {
	pol, err := s.policy(ctx, k.tenant)
	if err != nil {
		return err
	}
	if pol.Disabled || pol.IsOff(plausibility.RuleBalance) {
		return nil
	}
	roles, err := s.cfg.Sites.SiteRoleStreams(ctx, k.tenant, k.site)
	if err != nil {
		return err
	}
	hasImport := false
	for _, r := range roles {
		hasImport = hasImport || r.Role == registry.RoleImport
	}
	if !hasImport {
		return nil // nothing to balance against: a site without a grid meter
	}
	lo, hi := landed[idx[0]].MinTime, landed[idx[0]].MaxTime
	// Where each reading of the pass is: (stream, time) → block index;
	// and the pass's readings per stream.
	inPass := map[pluckKey]int{}
	passed := map[registry.StreamID][]wire.Reading{}
	for _, i := range idx {
		c := &landed[i]
		lo, hi = min(lo, c.MinTime), max(hi, c.MaxTime)
		rs, err := wire.DecodeBlock(c.Data, nil)
		if err != nil {
			continue // undecodable: the compactor carries it as it is
		}
		for _, r := range rs {
			inPass[pluckKey{c.Stream, r.Time}] = i
		}
		passed[c.Stream] = append(passed[c.Stream], rs...)
	}
	if hi-lo > maxSiteSpan {
		// A backfill of weeks in one pass: judging it would read weeks of
		// every role stream. It is folded unjudged, and said so.
		s.cfg.Log.Warn("ingest: site balance not checked: the landed span is too long", "site", k.site, "days", (hi-lo)/86_400_000)
		return nil
	}
	ss := make([]plausibility.SiteSeries, 0, len(roles))
	ids := make([]registry.StreamID, 0, len(roles))
	for _, r := range roles {
		// The pass holds every landed block of the site's role streams
		// that is due (store Compact takes a site's held blocks along);
		// the rest of the span is in the chunks.
		rs, err := s.storedReadings(ctx, k.tenant, r.ID, lo, hi+1, passed[r.ID])
		if errs.Is(errs.Integrity, err) || errs.Is(errs.NotFound, err) {
			// A tampered chunk or an erased key: reads report it; the
			// compaction of everything else must not stall on it.
			s.cfg.Log.Warn("ingest: site balance not checked: a role stream cannot be read", "site", k.site, "stream", r.ID, "err", err)
			return nil
		}
		if err != nil {
			return err
		}
		if len(rs) == 0 {
			// A role that is silent over the span (a meter offline, a
			// stream not yet arrived after the grace) is left out: the
			// others are judged without it, which can only be more lenient.
			continue
		}
		ss = append(ss, plausibility.SiteSeries{Role: roleOf(r.Role), Readings: rs})
		ids = append(ids, r.ID)
	}
	take := func(i int, t int64, why []plausibility.Reason) {
		m := out[i]
		if m == nil {
			m = map[int64][]plausibility.Reason{}
			out[i] = m
		}
		m[t] = append(m[t], why...)
	}
	for _, v := range s.cfg.Detector.CheckSite(k.tenant, ss) {
		if !v.Quarantine() {
			continue
		}
		t := ss[v.Series].Readings[v.Index].Time
		if i, ok := inPass[pluckKey{ids[v.Series], t}]; ok {
			take(i, t, v.Reasons)
			continue
		}
		// The blamed reading was folded before: blame what this pass
		// brings for that time instead.
		why := []plausibility.Reason{{Rule: plausibility.RuleBalance, Detail: "the site does not balance with readings stored before this one"}}
		for _, id := range ids {
			if i, ok := inPass[pluckKey{id, t}]; ok {
				take(i, t, why)
			}
		}
	}
	return nil
}

// maxSiteSpan bounds the span of a site's blocks in one pass that the
// check judges: 31 days.
const maxSiteSpan = 31 * 86_400_000

// storedReadings returns a stream's readings in [from, to) in time order:
// those folded into chunks and those of the pass (inPass).
func (s *Service) storedReadings(ctx context.Context, t registry.TenantID, st registry.StreamID, from, to int64, inPass []wire.Reading) ([]wire.Reading, error) {
	q := series.Query{Tenant: t, Stream: st, From: from, To: to, Limit: series.MaxLimit, Sealer: s.cfg.Sealer}
	out := slices.Clone(inPass)
	for {
		p, err := series.Read(ctx, folded{s.cfg.Sites}, q)
		if err != nil {
			return nil, err
		}
		for _, r := range p.Readings {
			out = append(out, wire.Reading{Time: r.Time, Value: r.Value, Quality: r.Quality})
		}
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	slices.SortStableFunc(out, func(a, b wire.Reading) int { return cmp.Compare(a.Time, b.Time) })
	return out, nil
}

// pluck takes the readings at the times in why out of an opened landed
// block: it returns the block without them and them, sealed as a
// quarantined block with their reasons.
func (s *Service) pluck(ctx context.Context, c series.Chunk, why map[int64][]plausibility.Reason) (series.Chunk, series.Quarantined, error) {
	rs, err := wire.DecodeBlock(c.Data, nil)
	if err != nil {
		return series.Chunk{}, series.Quarantined{}, errs.E(errs.Integrity, fmt.Sprintf("landed block %d cannot be decoded", c.ID))
	}
	var keep, bad []wire.Reading
	var vs []plausibility.Verdict
	for _, r := range rs {
		if w, ok := why[r.Time]; ok {
			vs = append(vs, plausibility.Verdict{Index: len(bad), Reasons: w})
			bad = append(bad, r)
			continue
		}
		keep = append(keep, r)
	}
	rest := c
	rest.Count = len(keep)
	if len(keep) > 0 {
		rest.Data = wire.AppendBlock(nil, keep)
		rest.MinTime, rest.MaxTime = span(keep)
	}
	reasons, err := json.Marshal(vs)
	if err != nil {
		return series.Chunk{}, series.Quarantined{}, err
	}
	now := s.cfg.Now().UnixMilli()
	b := siteCheckBatch(c, now)
	sealed, err := s.cfg.Sealer.Seal(ctx, c.Subject, wire.AppendBlock(nil, bad), series.QuarantineAD(c.Tenant, c.Stream, "", b, 0))
	if err != nil {
		return series.Chunk{}, series.Quarantined{}, err
	}
	lo, hi := span(bad)
	s.cfg.Log.Info("ingest: readings quarantined by the site balance check", "stream", c.Stream, "readings", len(bad))
	return rest, series.Quarantined{Tenant: c.Tenant, Subject: c.Subject, Stream: c.Stream, Batch: b, Received: now,
		MinTime: lo, MaxTime: hi, Count: len(bad), Reasons: reasons, Data: sealed}, nil
}

// siteCheckBatch is the batch ID under which the site check quarantines
// readings of an opened landed block: a hash of the block (its row, which
// the database may reuse once the row is gone, its stream and its
// readings) and the time of the check, so the quarantine row is unique.
func siteCheckBatch(c series.Chunk, now int64) wire.BatchID {
	h := sha256.New()
	fmt.Fprintf(h, "custos/site-check\x00%s\x00%s\x00%d\x00%d\x00", c.Tenant, c.Stream, c.ID, now)
	h.Write(c.Data)
	var b wire.BatchID
	copy(b[:], h.Sum(nil))
	return b
}

func roleOf(r registry.Role) plausibility.Role {
	switch r {
	case registry.RoleImport:
		return plausibility.RoleImport
	case registry.RoleExport:
		return plausibility.RoleExport
	case registry.RoleProduction:
		return plausibility.RoleProduction
	case registry.RoleLoad:
		return plausibility.RoleLoad
	}
	return 0
}
