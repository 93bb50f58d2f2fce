package store

import (
	"context"
	"strings"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/series"
)

// rowsPerInsert bounds the rows of one multi-row INSERT (SQLite allows
// 32766 bound variables per statement; PostgreSQL 65535).
const rowsPerInsert = 400

// WriteBatches stores the batches in one transaction, so a single fsync
// covers all of them (group commit). A batch whose ID its connector has
// used before is not stored again; dup[i] reports it. Either every
// non-duplicate batch is stored or, on error, none is.
func (s *Store) WriteBatches(ctx context.Context, received int64, bs []series.Batch) (dup []bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	dup = make([]bool, len(bs))
	for i := range bs {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO batches (connector_id, batch_id, received_ms, readings) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`),
			bs[i].Connector, bs[i].ID[:], received, bs[i].Readings)
		if err != nil {
			return nil, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, err
		}
		dup[i] = n == 0
	}

	var rows []*series.Chunk
	for i := range bs {
		if dup[i] {
			continue
		}
		for j := range bs[i].Chunks {
			rows = append(rows, &bs[i].Chunks[j])
		}
	}
	const cols = 6
	args := make([]any, 0, rowsPerInsert*cols)
	for len(rows) > 0 {
		n := min(len(rows), rowsPerInsert)
		var b strings.Builder
		b.WriteString(`INSERT INTO chunks (tenant_id, stream_id, min_ms, max_ms, n, data) VALUES `)
		args = args[:0]
		for i, c := range rows[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?, ?, ?)")
			args = append(args, c.Tenant, c.Stream, c.MinTime, c.MaxTime, c.Count, c.Data)
		}
		if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
			return nil, err
		}
		rows = rows[n:]
	}
	return dup, tx.Commit()
}

// StreamChunks calls fn for each chunk of a tenant's stream that may hold
// readings in [from, to), ordered by MinTime then ID, until fn returns
// false or an error. The chunk's Data is only valid during the call.
func (s *Store) StreamChunks(ctx context.Context, tenant registry.TenantID, stream registry.StreamID, from, to int64, fn func(*series.Chunk) (bool, error)) error {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id, min_ms, max_ms, n, data FROM chunks
		WHERE stream_id = ? AND tenant_id = ? AND min_ms >= ? AND min_ms < ? AND max_ms >= ?
		ORDER BY min_ms, id`), stream, tenant, from-series.MaxChunkSpanMS, to, from)
	if err != nil {
		return err
	}
	defer rows.Close()
	c := series.Chunk{Tenant: tenant, Stream: stream}
	for rows.Next() {
		if err := rows.Scan(&c.ID, &c.MinTime, &c.MaxTime, &c.Count, &c.Data); err != nil {
			return err
		}
		more, err := fn(&c)
		if err != nil || !more {
			return err
		}
	}
	return rows.Err()
}

// ReadingCount counts the readings stored for a tenant's stream.
func (s *Store) ReadingCount(ctx context.Context, tenant registry.TenantID, stream registry.StreamID) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT COALESCE(SUM(n), 0) FROM chunks WHERE stream_id = ? AND tenant_id = ?`), stream, tenant).Scan(&n)
	return n, err
}
