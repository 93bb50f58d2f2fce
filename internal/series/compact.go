package series

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/wire"
)

// BucketMS is the time bucket of compacted chunks: one hour. A compacted
// chunk never spans two buckets.
const BucketMS = 3600_000

// Compact turns landed blocks (in arrival order, plaintext) into chunks:
// one per stream and hour bucket, readings in read order (see
// compareReadings). A block that cannot be decoded is carried over
// unchanged, so reads keep reporting it as an integrity error instead of it
// disappearing.
func Compact(landed []Chunk) []Chunk {
	groups, out := regroup(landed)
	for _, g := range groups {
		out = append(out, g.chunk(wire.AppendBlock(nil, g.readings)))
	}
	return out
}

// group is the readings of one stream in one hour bucket.
type group struct {
	tenant   registry.TenantID
	subject  registry.SubjectID
	stream   registry.StreamID
	bucket   int64 // bucket number (hours since the epoch)
	readings []wire.Reading
}

func (g *group) chunk(data []byte) Chunk {
	rs := g.readings
	return Chunk{
		Tenant: g.tenant, Subject: g.subject, Stream: g.stream,
		MinTime: rs[0].Time, MaxTime: rs[len(rs)-1].Time, Count: len(rs),
		Data: data,
	}
}

// regroup decodes plaintext landed blocks into per-stream, per-hour groups
// in read order. Blocks that cannot be decoded come back as carried chunks.
func regroup(landed []Chunk) ([]*group, []Chunk) {
	type key struct {
		stream registry.StreamID
		bucket int64
	}
	// Size every group first, so each gets one allocation.
	size := map[key]int{}
	for _, c := range landed {
		lo, hi := floorDiv(c.MinTime, BucketMS), floorDiv(c.MaxTime, BucketMS)
		for b := lo; b <= hi && b-lo < 2; b++ {
			size[key{c.Stream, b}] += c.Count
		}
	}
	groups := make(map[key]*group, len(size))
	var order []*group
	get := func(c *Chunk, b int64) *group {
		k := key{c.Stream, b}
		g := groups[k]
		if g == nil {
			g = &group{tenant: c.Tenant, subject: c.Subject, stream: c.Stream, bucket: b, readings: make([]wire.Reading, 0, size[k])}
			groups[k] = g
			order = append(order, g)
		}
		return g
	}
	var carried []Chunk
	var buf []wire.Reading
	for i := range landed {
		c := &landed[i]
		lo, hi := floorDiv(c.MinTime, BucketMS), floorDiv(c.MaxTime, BucketMS)
		if lo == hi {
			// The common case: the whole block falls in one bucket and
			// decodes straight into its group.
			g := get(c, lo)
			rs, err := wire.DecodeBlock(c.Data, g.readings)
			if err != nil {
				carried = append(carried, carry(*c))
				continue
			}
			g.readings = rs
			continue
		}
		var err error
		if buf, err = wire.DecodeBlock(c.Data, buf[:0]); err != nil {
			carried = append(carried, carry(*c))
			continue
		}
		for _, r := range buf {
			g := get(c, floorDiv(r.Time, BucketMS))
			g.readings = append(g.readings, r)
		}
	}
	out := order[:0]
	for _, g := range order {
		if len(g.readings) == 0 {
			continue
		}
		if !slices.IsSortedFunc(g.readings, compareReadings) {
			slices.SortFunc(g.readings, compareReadings)
		}
		out = append(out, g)
	}
	return out, carried
}

// compareReadings is the order in which readings are read: by time, then
// readings of equal time by value bits and quality. A total order on
// what a reading holds (not where it is stored) is what lets a cursor name
// a reading by its rank among those of its time: the rank stays the same
// when the compactor moves readings between landing and chunks while a
// reader pages. Readings that compare equal are identical.
func compareReadings(a, b wire.Reading) int {
	if c := cmp.Compare(a.Time, b.Time); c != 0 {
		return c
	}
	if c := cmp.Compare(math.Float64bits(a.Value), math.Float64bits(b.Value)); c != 0 {
		return c
	}
	return cmp.Compare(a.Quality, b.Quality)
}

// carry keeps an undecodable block as it is (still sealed as it was, so
// reading it reports an integrity error).
func carry(c Chunk) Chunk {
	c.ID = 0
	c.Landed = false
	c.Data = append([]byte(nil), c.Data...)
	return c
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// RollupRow is a sealed rollup.Row of one stream as stored.
type RollupRow struct {
	Tenant  registry.TenantID
	Subject registry.SubjectID
	Stream  registry.StreamID
	Res     rollup.Resolution
	Period  int64
	Data    []byte
}

// RollupSource yields a stream's stored rollup rows at a resolution whose
// period start is in [from, to].
type RollupSource interface {
	StreamRollups(ctx context.Context, t registry.TenantID, s registry.StreamID, res rollup.Resolution, from, to int64, fn func(*RollupRow) error) error
}

// Plan is what one compaction pass writes in place of the landed blocks it
// read: their chunks and the rollup rows they change.
type Plan struct {
	Chunks  []Chunk
	Rollups []RollupRow
	// Quarantine holds readings a Screen took out of the landed blocks:
	// they are stored in quarantine in the same transaction as the
	// stream's chunks, so each reading is in exactly one place.
	Quarantine []Quarantined
}

// Screen judges landed blocks before the compactor folds them into chunks
// and rollups. It receives the opened (plaintext) blocks of one pass and
// returns those to fold — the same blocks, some with readings taken out —
// and the readings it took out, sealed as quarantined blocks. It MUST
// account for every reading: each one is either returned in a block or
// quarantined. An error fails the pass (nothing moves; it is retried).
type Screen interface {
	Screen(ctx context.Context, landed []Chunk) (keep []Chunk, quarantined []Quarantined, err error)
}

// CompactStore is what the compactor needs from the database.
type CompactStore interface {
	// Compact reads up to limit landed blocks (sealed), lets plan turn them
	// into a Plan and writes it in their place, atomically per stream.
	Compact(ctx context.Context, limit int, plan func(ctx context.Context, landed []Chunk) (Plan, error)) (int, error)
	RollupSource
}

// Compactor moves landed blocks into sealed hourly chunks in the
// background and keeps every stream's rollups up to date as it goes, late
// and out-of-order readings included.
type Compactor struct {
	// Store is the database. Must be non-nil.
	Store CompactStore
	// Sealer seals and opens. nil means Plain.
	Sealer Sealer
	// Every is the pause between passes when there is little to do. Default 2 s.
	Every time.Duration
	// Limit is the most landed blocks moved per pass. Default 4,000.
	Limit int
	// Log receives failures. Default slog.Default().
	Log *slog.Logger
	// Screen, if set, judges each pass's landed blocks before they are
	// folded (the site balance check). nil folds everything.
	Screen Screen
}

// plan opens the landed blocks, regroups them into hourly chunks, folds
// their readings into the rollups and seals everything. Blocks of erased
// subjects (key destroyed) are dropped: their data is gone already.
func (c *Compactor) plan(ctx context.Context, landed []Chunk) (Plan, error) {
	sealer := c.Sealer
	if sealer == nil {
		sealer = Plain{}
	}
	var plan Plan
	open := make([]Chunk, 0, len(landed))
	for _, l := range landed {
		pt, err := sealer.Open(ctx, l.Subject, l.Data, LandingAD(l.Tenant, l.Stream))
		switch {
		case errs.Is(errs.NotFound, err):
			continue // erased
		case errs.Is(errs.Integrity, err):
			plan.Chunks = append(plan.Chunks, carry(l))
			continue
		case err != nil:
			return Plan{}, err
		}
		l.Data = pt
		open = append(open, l)
	}
	if c.Screen != nil {
		keep, q, err := c.Screen.Screen(ctx, open)
		if err != nil {
			return Plan{}, err
		}
		open, plan.Quarantine = keep, q
	}
	groups, carried := regroup(open)
	for _, ch := range carried {
		// Undecodable plaintext: keep it sealed, so it stays unreadable
		// at rest and reads report it.
		ct, err := sealer.Seal(ctx, ch.Subject, ch.Data, ChunkAD(ch.Tenant, ch.Stream, floorDiv(ch.MinTime, BucketMS)*BucketMS))
		if err != nil {
			return Plan{}, err
		}
		ch.Data = ct
		plan.Chunks = append(plan.Chunks, ch)
	}
	byStream := map[registry.StreamID][]*group{}
	var streams []registry.StreamID
	for _, g := range groups {
		ct, err := sealer.Seal(ctx, g.subject, wire.AppendBlock(nil, g.readings), ChunkAD(g.tenant, g.stream, g.bucket*BucketMS))
		if err != nil {
			return Plan{}, err
		}
		plan.Chunks = append(plan.Chunks, g.chunk(ct))
		if _, ok := byStream[g.stream]; !ok {
			streams = append(streams, g.stream)
		}
		byStream[g.stream] = append(byStream[g.stream], g)
	}
	for _, st := range streams {
		rows, err := c.rollups(ctx, sealer, byStream[st])
		if err != nil {
			return Plan{}, err
		}
		plan.Rollups = append(plan.Rollups, rows...)
	}
	return plan, nil
}

// rollups folds one stream's new readings into its stored rollup rows.
func (c *Compactor) rollups(ctx context.Context, sealer Sealer, gs []*group) ([]RollupRow, error) {
	g0 := gs[0]
	rows := map[rollup.Key]*rollup.Row{}
	for _, g := range gs {
		rollup.Apply(rows, g.readings, rollup.Aggregated)
	}
	// Merge with what is stored, per resolution over the touched periods.
	for _, res := range rollup.Aggregated {
		lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
		for k := range rows {
			if k.Res == res {
				lo, hi = min(lo, k.Period), max(hi, k.Period)
			}
		}
		if lo > hi {
			continue
		}
		err := c.Store.StreamRollups(ctx, g0.tenant, g0.stream, res, lo, hi, func(r *RollupRow) error {
			k := rollup.Key{Res: res, Period: r.Period}
			row := rows[k]
			if row == nil {
				return nil
			}
			pt, err := sealer.Open(ctx, r.Subject, r.Data, RollupAD(r.Tenant, r.Stream, res, r.Period))
			if err != nil {
				return err
			}
			old, err := rollup.DecodeRow(pt)
			if err != nil {
				return errs.E(errs.Integrity, fmt.Sprintf("rollup %s of stream %s cannot be decoded", res, r.Stream))
			}
			row.Merge(old)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	out := make([]RollupRow, 0, len(rows))
	for k, row := range rows {
		ct, err := sealer.Seal(ctx, g0.subject, rollup.AppendRow(nil, row), RollupAD(g0.tenant, g0.stream, k.Res, k.Period))
		if err != nil {
			return nil, err
		}
		out = append(out, RollupRow{Tenant: g0.tenant, Subject: g0.subject, Stream: g0.stream, Res: k.Res, Period: k.Period, Data: ct})
	}
	return out, nil
}

// Run compacts until ctx is done. A pass that moved a full Limit is
// followed at once by another.
func (c *Compactor) Run(ctx context.Context) {
	every, limit, log := c.Every, c.Limit, c.Log
	if every == 0 {
		every = 2 * time.Second
	}
	if limit == 0 {
		limit = 4_000
	}
	if log == nil {
		log = slog.Default()
	}
	for {
		n, err := c.Store.Compact(ctx, limit, c.plan)
		if err != nil && ctx.Err() == nil {
			log.Error("compaction failed; will retry", "err", err)
		}
		if n == limit && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// Pass runs one compaction pass of at most Limit landed blocks and reports
// how many it moved.
func (c *Compactor) Pass(ctx context.Context) (int, error) {
	limit := c.Limit
	if limit == 0 {
		limit = 4_000
	}
	return c.Store.Compact(ctx, limit, c.plan)
}

// Once runs one full compaction: passes until nothing is left. For tests,
// benchmarks and shutdown.
func (c *Compactor) Once(ctx context.Context) error {
	limit := c.Limit
	if limit == 0 {
		limit = 4_000
	}
	for {
		n, err := c.Store.Compact(ctx, limit, c.plan)
		if err != nil || n < limit {
			return err
		}
	}
}
