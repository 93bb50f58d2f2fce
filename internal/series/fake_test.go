package series_test

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/custos-iot/custos/internal/registry"
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

func (m *memStore) Compact(ctx context.Context, limit int, fn func(landed []series.Chunk) ([]series.Chunk, error)) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := min(limit, len(m.landing))
	if n == 0 {
		return 0, nil
	}
	in := make([]series.Chunk, n)
	for i, c := range m.landing[:n] {
		c.Data = slices.Clone(c.Data)
		in[i] = c
	}
	out, err := fn(in)
	if err != nil {
		return 0, err
	}
	for _, c := range out {
		m.next++
		c.ID = m.next
		c.Data = slices.Clone(c.Data)
		m.chunks = append(m.chunks, c)
	}
	m.landing = slices.Delete(m.landing, 0, n)
	return n, nil
}
