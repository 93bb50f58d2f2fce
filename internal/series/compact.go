package series

import (
	"cmp"
	"context"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/wire"
)

// BucketMS is the time bucket of compacted chunks: one hour. A compacted
// chunk never spans two buckets.
const BucketMS = 3600_000

// Compact turns landed blocks (in arrival order) into chunks: one per
// stream and hour bucket, readings in read order (see Before). A block that cannot be decoded is carried
// over unchanged, so reads keep reporting it as an integrity error instead
// of it disappearing.
func Compact(landed []Chunk) []Chunk {
	type key struct {
		tenant registry.TenantID
		stream registry.StreamID
		bucket int64
	}
	// Size every group first, so each gets one allocation.
	size := map[key]int{}
	var order []key
	for _, c := range landed {
		lo, hi := floorDiv(c.MinTime, BucketMS), floorDiv(c.MaxTime, BucketMS)
		for b := lo; b <= hi && b-lo < 2; b++ {
			k := key{c.Tenant, c.Stream, b}
			if _, ok := size[k]; !ok {
				order = append(order, k)
			}
			size[k] += c.Count
		}
	}
	groups := make(map[key][]wire.Reading, len(size))
	var out []Chunk
	var buf []wire.Reading
	for _, c := range landed {
		lo, hi := floorDiv(c.MinTime, BucketMS), floorDiv(c.MaxTime, BucketMS)
		if lo == hi {
			// The common case: the whole block falls in one bucket and
			// decodes straight into its group.
			k := key{c.Tenant, c.Stream, lo}
			g := groups[k]
			if g == nil {
				g = make([]wire.Reading, 0, size[k])
			}
			var err error
			if g, err = wire.DecodeBlock(c.Data, g); err != nil {
				out = append(out, carry(c))
				continue
			}
			groups[k] = g
			continue
		}
		var err error
		if buf, err = wire.DecodeBlock(c.Data, buf[:0]); err != nil {
			out = append(out, carry(c))
			continue
		}
		for _, r := range buf {
			k := key{c.Tenant, c.Stream, floorDiv(r.Time, BucketMS)}
			if _, ok := size[k]; !ok {
				size[k] = 0
				order = append(order, k)
			}
			groups[k] = append(groups[k], r)
		}
	}
	for _, k := range order {
		rs := groups[k]
		if len(rs) == 0 {
			continue
		}
		if !slices.IsSortedFunc(rs, compareReadings) {
			slices.SortFunc(rs, compareReadings)
		}
		out = append(out, Chunk{
			Tenant: k.tenant, Stream: k.stream,
			MinTime: rs[0].Time, MaxTime: rs[len(rs)-1].Time, Count: len(rs),
			Data: wire.AppendBlock(nil, rs),
		})
	}
	return out
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

// carry keeps an undecodable block as it is.
func carry(c Chunk) Chunk {
	c.ID = 0
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

// CompactStore is what the compactor needs from the database.
type CompactStore interface {
	Compact(ctx context.Context, limit int, fn func(landed []Chunk) ([]Chunk, error)) (int, error)
}

// Compactor moves landed blocks into chunks in the background.
type Compactor struct {
	// Store is the database. Must be non-nil.
	Store CompactStore
	// Every is the pause between passes when there is little to do. Default 2 s.
	Every time.Duration
	// Limit is the most landed blocks moved per pass. Default 4,000.
	Limit int
	// Log receives failures. Default slog.Default().
	Log *slog.Logger
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
		n, err := c.Store.Compact(ctx, limit, func(landed []Chunk) ([]Chunk, error) { return Compact(landed), nil })
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

// Once runs one full compaction: passes until nothing is left. For tests,
// benchmarks and shutdown.
func (c *Compactor) Once(ctx context.Context) error {
	limit := c.Limit
	if limit == 0 {
		limit = 4_000
	}
	for {
		n, err := c.Store.Compact(ctx, limit, func(landed []Chunk) ([]Chunk, error) { return Compact(landed), nil })
		if err != nil || n < limit {
			return err
		}
	}
}
