package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
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
	var entries [][]byte
	for i := range bs {
		if !dup[i] && bs[i].Audit != nil {
			entries = append(entries, bs[i].Audit)
		}
	}
	if err := s.enqueueAudit(ctx, tx, entries); err != nil {
		return nil, err
	}
	if err := s.insertQuarantine(ctx, tx, bs, dup); err != nil {
		return nil, err
	}
	return dup, tx.Commit()
}

func (s *Store) insertChunks(ctx context.Context, tx *sql.Tx, table string, rows []*series.Chunk) error {
	// Landed blocks carry their hold time; chunks do not.
	cols, place := `tenant_id, subject_id, stream_id, min_ms, max_ms, n, data`, "(?, ?, ?, ?, ?, ?, ?)"
	landing := table == "landing"
	if landing {
		cols, place = cols+`, hold_ms`, "(?, ?, ?, ?, ?, ?, ?, ?)"
	}
	args := make([]any, 0, rowsPerInsert*8)
	for len(rows) > 0 {
		n := min(len(rows), rowsPerInsert)
		var b strings.Builder
		b.WriteString(`INSERT INTO ` + table + ` (` + cols + `) VALUES `)
		args = args[:0]
		for i, c := range rows[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(place)
			args = append(args, c.Tenant, c.Subject, c.Stream, c.MinTime, c.MaxTime, c.Count, c.Data)
			if landing {
				args = append(args, c.Hold)
			}
		}
		if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// FoldedChunks is StreamChunks over the compacted chunks only (indexed),
// without the landing area: for the site balance check, which has the
// landed blocks of its pass in hand.
func (s *Store) FoldedChunks(ctx context.Context, tenant registry.TenantID, stream registry.StreamID, from, to int64, fn func(*series.Chunk) (bool, error)) error {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id, subject_id, min_ms, max_ms, n, data FROM chunks
		WHERE stream_id = ? AND tenant_id = ? AND min_ms >= ? AND min_ms < ? AND max_ms >= ? ORDER BY min_ms, id`),
		stream, tenant, from-series.MaxChunkSpanMS, to, from)
	if err != nil {
		return err
	}
	defer rows.Close()
	c := series.Chunk{Tenant: tenant, Stream: stream}
	for rows.Next() {
		if err := rows.Scan(&c.ID, &c.Subject, &c.MinTime, &c.MaxTime, &c.Count, &c.Data); err != nil {
			return err
		}
		more, err := fn(&c)
		if err != nil || !more {
			return err
		}
	}
	return rows.Err()
}

// StreamChunks calls fn for each chunk of a tenant's stream that may hold
// readings in [from, to) — compacted chunks and landed blocks alike —
// ordered by MinTime, until fn returns false or an error. The chunk's Data
// is only valid during the call.
func (s *Store) StreamChunks(ctx context.Context, tenant registry.TenantID, stream registry.StreamID, from, to int64, fn func(*series.Chunk) (bool, error)) error {
	rows, err := s.db.QueryContext(ctx, s.q(`
		SELECT id, subject_id, 0, min_ms, max_ms, n, data FROM chunks
		WHERE stream_id = ? AND tenant_id = ? AND min_ms >= ? AND min_ms < ? AND max_ms >= ?
		UNION ALL
		SELECT -id, subject_id, 1, min_ms, max_ms, n, data FROM landing
		WHERE stream_id = ? AND tenant_id = ? AND min_ms < ? AND max_ms >= ?
		ORDER BY 4, 1`), stream, tenant, from-series.MaxChunkSpanMS, to, from, stream, tenant, to, from)
	if err != nil {
		return err
	}
	defer rows.Close()
	c := series.Chunk{Tenant: tenant, Stream: stream}
	for rows.Next() {
		var landed int
		if err := rows.Scan(&c.ID, &c.Subject, &landed, &c.MinTime, &c.MaxTime, &c.Count, &c.Data); err != nil {
			return err
		}
		c.Landed = landed == 1
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

// Compact moves up to limit of the oldest landed blocks into chunks: plan
// receives them and returns the chunks and rollup rows that replace them.
// On PostgreSQL one pass runs at a time across all replicas (a
// transaction-level advisory lock; a replica that does not get it skips
// the pass), in one transaction. On SQLite the pass reads under a snapshot
// and then moves a few streams per short transaction, so ingest commits
// slot in between; every stream's move is atomic. It returns the number of
// landed blocks moved.
func (s *Store) Compact(ctx context.Context, limit int, plan func(ctx context.Context, landed []series.Chunk) (series.Plan, error)) (int, error) {
	var q interface {
		QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	} = s.db
	var tx *sql.Tx
	if s.dialect == Postgres {
		var err error
		if tx, err = s.db.BeginTx(ctx, nil); err != nil {
			return 0, err
		}
		defer tx.Rollback()
		var got bool
		if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock(7420331)`).Scan(&got); err != nil {
			return 0, err
		}
		if !got {
			return 0, nil
		}
		q = tx
	} else {
		// Two passes must not read the same snapshot (the second would
		// find its blocks gone), so this process's passes take turns.
		s.compacting.Lock()
		defer s.compacting.Unlock()
	}
	// Blocks whose hold has passed, oldest first; then the held blocks of
	// the same sites' role streams, so that the site balance check sees
	// a site's streams together and a reading it blames is in this pass
	// unless it was folded before.
	now := ms(s.now())
	landed, err := s.scanLanded(ctx, q, `SELECT `+landedCols+` FROM landing l WHERE l.hold_ms <= ? ORDER BY l.id LIMIT ?`, now, limit)
	if err != nil || len(landed) == 0 {
		return 0, err
	}
	var held []any
	for _, c := range landed {
		if c.Hold > 0 {
			held = append(held, c.Stream)
		}
	}
	if len(held) > 0 && len(held) <= rowsPerInsert {
		more, err := s.scanLanded(ctx, q, `SELECT `+landedCols+` FROM landing l JOIN streams s ON s.id = l.stream_id JOIN devices d ON d.id = s.device_id
			WHERE l.hold_ms > ? AND s.role <> '' AND d.site_id IN (SELECT d2.site_id FROM streams s2 JOIN devices d2 ON d2.id = s2.device_id WHERE s2.id IN (?`+strings.Repeat(", ?", len(held)-1)+`))
			ORDER BY l.id`, append([]any{now}, held...)...)
		if err != nil {
			return 0, err
		}
		landed = append(landed, more...)
	}
	p, err := plan(ctx, landed)
	if err != nil {
		return 0, err
	}
	if tx != nil {
		if err := s.moveLanded(ctx, tx, landed, p); err != nil {
			return 0, err
		}
		return len(landed), tx.Commit()
	}
	return len(landed), s.moveInSteps(ctx, landed, p)
}

const landedCols = `l.id, l.tenant_id, l.subject_id, l.stream_id, l.min_ms, l.max_ms, l.n, l.data, l.hold_ms`

func (s *Store) scanLanded(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, query string, args ...any) ([]series.Chunk, error) {
	rows, err := q.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var landed []series.Chunk
	for rows.Next() {
		c := series.Chunk{Landed: true}
		if err := rows.Scan(&c.ID, &c.Tenant, &c.Subject, &c.Stream, &c.MinTime, &c.MaxTime, &c.Count, &c.Data, &c.Hold); err != nil {
			return nil, err
		}
		landed = append(landed, c)
	}
	return landed, rows.Err()
}

// compactStepRows bounds the landed rows moved per SQLite transaction. An
// ingest commit may wait for one step, so a step must be short: 250 rows
// (with their replacement chunks) take a few milliseconds; 1,000 took
// 5-45 ms on a busy 2-core machine.
const compactStepRows = 250

func (s *Store) moveInSteps(ctx context.Context, landed []series.Chunk, p series.Plan) error {
	type move struct {
		in   []series.Chunk
		plan series.Plan
	}
	byStream := map[registry.StreamID]*move{}
	var streams []registry.StreamID
	at := func(st registry.StreamID) *move {
		m := byStream[st]
		if m == nil {
			m = &move{}
			byStream[st] = m
			streams = append(streams, st)
		}
		return m
	}
	for _, c := range landed {
		m := at(c.Stream)
		m.in = append(m.in, c)
	}
	for _, c := range p.Chunks {
		m := at(c.Stream)
		m.plan.Chunks = append(m.plan.Chunks, c)
	}
	for _, r := range p.Rollups {
		m := at(r.Stream)
		m.plan.Rollups = append(m.plan.Rollups, r)
	}
	for _, q := range p.Quarantine {
		m := at(q.Stream)
		m.plan.Quarantine = append(m.plan.Quarantine, q)
	}
	for len(streams) > 0 {
		var in []series.Chunk
		var step series.Plan
		n := 0
		for n < len(streams) && (n == 0 || len(in)+len(byStream[streams[n]].in) <= compactStepRows) {
			m := byStream[streams[n]]
			in = append(in, m.in...)
			step.Chunks = append(step.Chunks, m.plan.Chunks...)
			step.Rollups = append(step.Rollups, m.plan.Rollups...)
			step.Quarantine = append(step.Quarantine, m.plan.Quarantine...)
			n++
		}
		streams = streams[n:]
		if err := s.moveStep(ctx, in, step); err != nil {
			return err
		}
	}
	return nil
}

// moveStep moves one step in its own transaction, taking the write lock
// only when no ingest commit is waiting for it.
func (s *Store) moveStep(ctx context.Context, in []series.Chunk, p series.Plan) error {
	s.writer.lock(false)
	defer s.writer.unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.moveLanded(ctx, tx, in, p); err != nil {
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

// moveLanded inserts the replacement chunks, upserts the rollup rows and
// deletes exactly the landed rows they replace, in tx.
func (s *Store) moveLanded(ctx context.Context, tx *sql.Tx, landed []series.Chunk, p series.Plan) error {
	rows := make([]*series.Chunk, len(p.Chunks))
	for i := range p.Chunks {
		rows[i] = &p.Chunks[i]
	}
	if err := s.insertChunks(ctx, tx, "chunks", rows); err != nil {
		return err
	}
	for _, r := range p.Rollups {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO rollups (stream_id, res, period_ms, tenant_id, subject_id, data) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (stream_id, res, period_ms) DO UPDATE SET data = excluded.data`), r.Stream, string(r.Res), r.Period, r.Tenant, r.Subject, r.Data); err != nil {
			return err
		}
	}
	for _, q := range p.Quarantine {
		if err := s.insertQuarantined(ctx, tx, q); err != nil {
			return err
		}
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

// StreamRollups calls fn for each stored rollup row of a tenant's stream at
// a resolution whose period starts in [from, to], in period order.
func (s *Store) StreamRollups(ctx context.Context, t registry.TenantID, st registry.StreamID, res rollup.Resolution, from, to int64, fn func(*series.RollupRow) error) error {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT period_ms, subject_id, data FROM rollups
		WHERE stream_id = ? AND res = ? AND period_ms >= ? AND period_ms <= ? AND tenant_id = ? ORDER BY period_ms`), st, string(res), from, to, t)
	if err != nil {
		return err
	}
	defer rows.Close()
	r := series.RollupRow{Tenant: t, Stream: st, Res: res}
	for rows.Next() {
		if err := rows.Scan(&r.Period, &r.Subject, &r.Data); err != nil {
			return err
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	return rows.Err()
}
