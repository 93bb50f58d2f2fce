package series_test

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
)

// memStore is an in-memory ChunkSource and CompactStore with the store's
// semantics: landed blocks and chunks in two tables, chunks yielded in the
// order of the SQL query (MinTime, then chunk ID, then newest landed block
// first), a compaction pass moving the oldest landed blocks atomically.
type memStore struct {
	mu      sync.Mutex
	next    int64
	landing []series.Chunk
	chunks  []series.Chunk
	rollups map[rollupKey]series.RollupRow
}

func (m *memStore) land(c series.Chunk) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	c.ID = m.next
	c.Data = slices.Clone(c.Data)
	m.landing = append(m.landing, c)
}

func (m *memStore) StreamChunks(ctx context.Context, tenant registry.TenantID, stream registry.StreamID, from, to int64, fn func(*series.Chunk) (bool, error)) error {
	m.mu.Lock()
	type row struct {
		key int64
		c   series.Chunk
	}
	var rows []row
	for _, c := range m.chunks {
		if c.Tenant == tenant && c.Stream == stream && c.MinTime >= from-series.MaxChunkSpanMS && c.MinTime < to && c.MaxTime >= from {
			rows = append(rows, row{c.ID, c})
		}
	}
	for _, c := range m.landing {
		if c.Tenant == tenant && c.Stream == stream && c.MinTime < to && c.MaxTime >= from {
			rows = append(rows, row{-c.ID, c})
		}
	}
	m.mu.Unlock()
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(cmp.Compare(a.c.MinTime, b.c.MinTime), cmp.Compare(a.key, b.key))
	})
	for _, r := range rows {
		// Data is only valid during the call: hand out a copy and spoil it
		// afterwards, so a reader that keeps it fails.
		c := r.c
		c.Data = slices.Clone(c.Data)
		more, err := fn(&c)
		clear(c.Data)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

func (m *memStore) Compact(ctx context.Context, limit int, plan func(context.Context, []series.Chunk) (series.Plan, error)) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := min(limit, len(m.landing))
	if n == 0 {
		return 0, nil
	}
	in := make([]series.Chunk, n)
	for i, c := range m.landing[:n] {
		c.Data = slices.Clone(c.Data)
		c.Landed = true
		in[i] = c
	}
	m.mu.Unlock()
	p, err := plan(ctx, in)
	m.mu.Lock()
	if err != nil {
		return 0, err
	}
	for _, c := range p.Chunks {
		m.next++
		c.ID = m.next
		c.Landed = false
		c.Data = slices.Clone(c.Data)
		m.chunks = append(m.chunks, c)
	}
	if m.rollups == nil {
		m.rollups = map[rollupKey]series.RollupRow{}
	}
	for _, r := range p.Rollups {
		r.Data = slices.Clone(r.Data)
		m.rollups[rollupKey{r.Stream, r.Res, r.Period}] = r
	}
	m.landing = slices.Delete(m.landing, 0, n)
	return n, nil
}

type rollupKey struct {
	stream registry.StreamID
	res    rollup.Resolution
	period int64
}

func (m *memStore) StreamRollups(ctx context.Context, t registry.TenantID, s registry.StreamID, res rollup.Resolution, from, to int64, fn func(*series.RollupRow) error) error {
	m.mu.Lock()
	var rows []series.RollupRow
	for k, r := range m.rollups {
		if k.stream == s && k.res == res && k.period >= from && k.period <= to && r.Tenant == t {
			r.Data = slices.Clone(r.Data)
			rows = append(rows, r)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(rows, func(a, b series.RollupRow) int { return int(a.Period - b.Period) })
	for i := range rows {
		if err := fn(&rows[i]); err != nil {
			return err
		}
	}
	return nil
}
