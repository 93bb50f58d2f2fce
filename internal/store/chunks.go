package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/series"
)

// rowsPerInsert bounds the rows of one multi-row statement (SQLite allows
// 32766 bound variables per statement; PostgreSQL 65535).
const rowsPerInsert = 400

// WriteBatches stores the batches in one transaction, so a single fsync
// covers all of them (group commit). Their chunks go to the landing table,
// which the compactor drains. A batch whose ID its connector has used
// before is not stored again; dup[i] reports it. Either every
// non-duplicate batch is stored or, on error, none is.
func (s *Store) WriteBatches(ctx context.Context, received int64, bs []series.Batch) (dup []bool, err error) {
	s.writer.lock(true)
	defer s.writer.unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	dup = make([]bool, len(bs))
	for i := range bs {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO batches (batch_id, connector_id, received_ms, readings) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`),
			bs[i].ID[:], bs[i].Connector, received, bs[i].Readings)
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
	if err := s.insertChunks(ctx, tx, "landing", rows); err != nil {
		return nil, err
	}
	return dup, tx.Commit()
}

func (s *Store) insertChunks(ctx context.Context, tx *sql.Tx, table string, rows []*series.Chunk) error {
	const cols = 6
	args := make([]any, 0, rowsPerInsert*cols)
	for len(rows) > 0 {
		n := min(len(rows), rowsPerInsert)
		var b strings.Builder
		b.WriteString(`INSERT INTO ` + table + ` (tenant_id, stream_id, min_ms, max_ms, n, data) VALUES `)
		args = args[:0]
		for i, c := range rows[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?, ?, ?)")
			args = append(args, c.Tenant, c.Stream, c.MinTime, c.MaxTime, c.Count, c.Data)
		}
		if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// StreamChunks calls fn for each chunk of a tenant's stream that may hold
// readings in [from, to) — compacted chunks and landed blocks alike —
// ordered by MinTime, until fn returns false or an error. The chunk's Data
// is only valid during the call.
func (s *Store) StreamChunks(ctx context.Context, tenant registry.TenantID, stream registry.StreamID, from, to int64, fn func(*series.Chunk) (bool, error)) error {
	rows, err := s.db.QueryContext(ctx, s.q(`
		SELECT id, min_ms, max_ms, n, data FROM chunks
		WHERE stream_id = ? AND tenant_id = ? AND min_ms >= ? AND min_ms < ? AND max_ms >= ?
		UNION ALL
		SELECT -id, min_ms, max_ms, n, data FROM landing
		WHERE stream_id = ? AND tenant_id = ? AND min_ms < ? AND max_ms >= ?
		ORDER BY 2, 1`), stream, tenant, from-series.MaxChunkSpanMS, to, from, stream, tenant, to, from)
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
	err := s.db.QueryRowContext(ctx, s.q(`SELECT
		(SELECT COALESCE(SUM(n), 0) FROM chunks WHERE stream_id = ? AND tenant_id = ?) +
		(SELECT COALESCE(SUM(n), 0) FROM landing WHERE stream_id = ? AND tenant_id = ?)`), stream, tenant, stream, tenant).Scan(&n)
	return n, err
}

// LandingCount counts the landed blocks not yet compacted.
func (s *Store) LandingCount(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM landing`).Scan(&n)
	return n, err
}

// Compact moves up to limit of the oldest landed blocks into chunks: fn
// receives them and returns the chunks that replace them. The move is one
// transaction; on PostgreSQL the landed rows are locked (SKIP LOCKED), so
// compactors on several replicas never move a block twice. It returns the
// number of landed blocks moved.
func (s *Store) Compact(ctx context.Context, limit int, fn func(landed []series.Chunk) ([]series.Chunk, error)) (int, error) {
	lock := ""
	if s.dialect == Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	// SQLite: read under a snapshot first, then take the write lock only
	// for the short moves, so ingest commits are not held up by decoding.
	// Two passes must not read the same snapshot (the second would find
	// its blocks gone and fail), so passes of this process take turns.
	if s.dialect != Postgres {
		s.compacting.Lock()
		defer s.compacting.Unlock()
	}
	var landed []series.Chunk
	read := func(q interface {
		QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	}) error {
		rows, err := q.QueryContext(ctx, s.q(`SELECT id, tenant_id, stream_id, min_ms, max_ms, n, data FROM landing ORDER BY id LIMIT ?`+lock), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var c series.Chunk
			if err := rows.Scan(&c.ID, &c.Tenant, &c.Stream, &c.MinTime, &c.MaxTime, &c.Count, &c.Data); err != nil {
				return err
			}
			landed = append(landed, c)
		}
		return rows.Err()
	}
	var tx *sql.Tx
	var err error
	if s.dialect == Postgres {
		if tx, err = s.db.BeginTx(ctx, nil); err != nil {
			return 0, err
		}
		defer tx.Rollback()
		err = read(tx)
	} else {
		err = read(s.db)
	}
	if err != nil || len(landed) == 0 {
		return 0, err
	}
	out, err := fn(landed)
	if err != nil {
		return 0, err
	}
	if tx != nil {
		// PostgreSQL: one transaction; the landed rows are locked, other
		// writers are not held up.
		if err := s.moveLanded(ctx, tx, landed, out); err != nil {
			return 0, err
		}
		return len(landed), tx.Commit()
	}
	// SQLite has one writer at a time: move a few streams per short
	// transaction so that ingest commits slot in between.
	return len(landed), s.moveInSteps(ctx, landed, out)
}

// compactStepRows bounds the landed rows moved per SQLite transaction. An
// ingest commit may wait for one step, so a step must be short: 250 rows
// (with their replacement chunks) take a few milliseconds; 1,000 took
// 5-45 ms on a busy 2-core machine.
const compactStepRows = 250

func (s *Store) moveInSteps(ctx context.Context, landed, out []series.Chunk) error {
	type move struct{ in, out []series.Chunk }
	byStream := map[registry.StreamID]*move{}
	var streams []registry.StreamID
	for _, c := range landed {
		m := byStream[c.Stream]
		if m == nil {
			m = &move{}
			byStream[c.Stream] = m
			streams = append(streams, c.Stream)
		}
		m.in = append(m.in, c)
	}
	for _, c := range out {
		if m := byStream[c.Stream]; m != nil {
			m.out = append(m.out, c)
		}
	}
	for len(streams) > 0 {
		var in, repl []series.Chunk
		n := 0
		for n < len(streams) && (n == 0 || len(in)+len(byStream[streams[n]].in) <= compactStepRows) {
			m := byStream[streams[n]]
			in, repl = append(in, m.in...), append(repl, m.out...)
			n++
		}
		streams = streams[n:]
		if err := s.moveStep(ctx, in, repl); err != nil {
			return err
		}
	}
	return nil
}

// moveStep moves one step in its own transaction, taking the write lock
// only when no ingest commit is waiting for it.
func (s *Store) moveStep(ctx context.Context, in, repl []series.Chunk) error {
	s.writer.lock(false)
	defer s.writer.unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.moveLanded(ctx, tx, in, repl); err != nil {
		return err
	}
	return tx.Commit()
}

// writeLock serializes this process's writes to the SQLite file in Go, so
// that writers queue instead of polling SQLite's busy handler, which
// sleeps 1, 2, 5, 10, 15… ms between attempts and lets a stream of short
// compaction transactions starve an ingest commit for tens of
// milliseconds. Urgent holders (ingest commits, which connectors wait
// for) go before the others (compaction steps, which can wait).
type writeLock struct {
	mu     sync.Mutex
	cond   sync.Cond
	held   bool
	urgent int // urgent holders waiting
}

func (w *writeLock) lock(urgent bool) {
	w.mu.Lock()
	if w.cond.L == nil {
		w.cond.L = &w.mu
	}
	if urgent {
		w.urgent++
	}
	for w.held || (!urgent && w.urgent > 0) {
		w.cond.Wait()
	}
	if urgent {
		w.urgent--
	}
	w.held = true
	w.mu.Unlock()
}

func (w *writeLock) unlock() {
	w.mu.Lock()
	w.held = false
	w.mu.Unlock()
	w.cond.Broadcast()
}

// moveLanded inserts the replacement chunks and deletes exactly the landed
// rows they replace, in tx.
func (s *Store) moveLanded(ctx context.Context, tx *sql.Tx, landed, out []series.Chunk) error {
	rows := make([]*series.Chunk, len(out))
	for i := range out {
		rows[i] = &out[i]
	}
	if err := s.insertChunks(ctx, tx, "chunks", rows); err != nil {
		return err
	}
	// Delete exactly the rows read: on PostgreSQL a row with a smaller ID
	// may commit after a larger one, so an ID range would be wrong.
	deleted := int64(0)
	for i := 0; i < len(landed); i += rowsPerInsert {
		part := landed[i:min(i+rowsPerInsert, len(landed))]
		args := make([]any, len(part))
		for j, c := range part {
			args[j] = c.ID
		}
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM landing WHERE id IN (?`+strings.Repeat(", ?", len(part)-1)+`)`), args...)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		deleted += n
	}
	if deleted != int64(len(landed)) {
		return fmt.Errorf("store: compaction raced: %d of %d landed blocks were already moved", int64(len(landed))-deleted, len(landed))
	}
	return nil
}
