package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/series"
)

// insertQuarantine stores the quarantined blocks of the batches that are
// not duplicates, in tx (the batches' own transaction).
func (s *Store) insertQuarantine(ctx context.Context, tx *sql.Tx, bs []series.Batch, dup []bool) error {
	for i := range bs {
		if dup[i] {
			continue
		}
		for _, q := range bs[i].Quarantine {
			if err := s.insertQuarantined(ctx, tx, q); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) insertQuarantined(ctx context.Context, tx *sql.Tx, q series.Quarantined) error {
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO quarantine (tenant_id, subject_id, stream_id, connector_id, batch_id, seq, received_ms, min_ms, max_ms, n, reasons, data)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		q.Tenant, q.Subject, q.Stream, q.Connector, q.Batch[:], q.Seq, q.Received, q.MinTime, q.MaxTime, q.Count, string(q.Reasons), q.Data)
	return err
}

const quarantineCols = `id, tenant_id, subject_id, stream_id, connector_id, batch_id, seq, received_ms, min_ms, max_ms, n, reasons, data`

func scanQuarantined(rows interface{ Scan(...any) error }) (series.Quarantined, error) {
	var q series.Quarantined
	var batch []byte
	var reasons string
	if err := rows.Scan(&q.ID, &q.Tenant, &q.Subject, &q.Stream, &q.Connector, &batch, &q.Seq, &q.Received, &q.MinTime, &q.MaxTime, &q.Count, &reasons, &q.Data); err != nil {
		return q, err
	}
	if len(batch) != len(q.Batch) {
		return q, errs.E(errs.Integrity, "quarantined block has a malformed batch ID")
	}
	copy(q.Batch[:], batch)
	q.Reasons = []byte(reasons)
	return q, nil
}

// Quarantine lists a tenant's quarantined blocks with ID above after, in
// ID order, at most limit; only those of stream if it is not empty.
func (s *Store) Quarantine(ctx context.Context, t registry.TenantID, stream registry.StreamID, after int64, limit int) ([]series.Quarantined, error) {
	q := `SELECT ` + quarantineCols + ` FROM quarantine WHERE tenant_id = ? AND id > ?`
	args := []any{t, after}
	if stream != "" {
		q += ` AND stream_id = ?`
		args = append(args, stream)
	}
	q += ` ORDER BY id LIMIT ?`
	args = append(args, limit)
	return queryQuarantined(ctx, s.db, s.q(q), args...)
}

// QuarantineCount counts a tenant stream's quarantined readings.
func (s *Store) QuarantineCount(ctx context.Context, t registry.TenantID, stream registry.StreamID) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT COALESCE(SUM(n), 0) FROM quarantine WHERE tenant_id = ? AND stream_id = ?`), t, stream).Scan(&n)
	return n, err
}

// ReleaseQuarantine moves a tenant's quarantined blocks ids into the
// landing area, whence the compactor moves them into chunks and rollups:
// reseal turns each (still sealed with QuarantineAD) into a landed block
// (sealed with LandingAD). All or nothing, in one transaction; an ID that
// is not the tenant's quarantined block is NotFound and nothing changes.
func (s *Store) ReleaseQuarantine(ctx context.Context, t registry.TenantID, ids []int64, reseal func(*series.Quarantined) (series.Chunk, error)) (readings int, err error) {
	return s.takeQuarantine(ctx, t, ids, func(tx *sql.Tx, qs []series.Quarantined) error {
		rows := make([]*series.Chunk, len(qs))
		for i := range qs {
			c, err := reseal(&qs[i])
			if err != nil {
				return err
			}
			rows[i] = &c
		}
		return s.insertChunks(ctx, tx, "landing", rows)
	})
}

// RejectQuarantine deletes a tenant's quarantined blocks ids for good. All
// or nothing; an unknown ID is NotFound and nothing changes.
func (s *Store) RejectQuarantine(ctx context.Context, t registry.TenantID, ids []int64) (readings int, err error) {
	return s.takeQuarantine(ctx, t, ids, func(*sql.Tx, []series.Quarantined) error { return nil })
}

// takeQuarantine reads and deletes the quarantined blocks ids of tenant t
// and runs fn on them, in one transaction.
func (s *Store) takeQuarantine(ctx context.Context, t registry.TenantID, ids []int64, fn func(*sql.Tx, []series.Quarantined) error) (int, error) {
	if len(ids) == 0 {
		return 0, errs.E(errs.Invalid, "no quarantine IDs given")
	}
	if len(ids) > rowsPerInsert {
		return 0, errs.E(errs.Invalid, "at most 400 quarantine IDs per request")
	}
	seen := map[int64]bool{}
	args := []any{t}
	for _, id := range ids {
		if seen[id] {
			return 0, errs.E(errs.Invalid, "a quarantine ID is given twice")
		}
		seen[id] = true
		args = append(args, id)
	}
	s.writer.lock(true)
	defer s.writer.unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	in := `(?` + strings.Repeat(", ?", len(ids)-1) + `)`
	sel := `SELECT ` + quarantineCols + ` FROM quarantine WHERE tenant_id = ? AND id IN ` + in + ` ORDER BY id`
	if s.dialect == Postgres {
		sel += ` FOR UPDATE`
	}
	qs, err := queryQuarantined(ctx, tx, s.q(sel), args...)
	if err != nil {
		return 0, err
	}
	if len(qs) != len(ids) {
		return 0, errs.E(errs.NotFound, "quarantined block not found (released or rejected already, or another tenant's)")
	}
	if err := fn(tx, qs); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, s.q(`DELETE FROM quarantine WHERE tenant_id = ? AND id IN `+in), args...)
	if err != nil {
		return 0, err
	}
	if n, _ := res.RowsAffected(); n != int64(len(ids)) {
		return 0, errs.E(errs.Conflict, "quarantined blocks changed concurrently; retry")
	}
	readings := 0
	for _, q := range qs {
		readings += q.Count
	}
	return readings, tx.Commit()
}

// PlausibilityPolicy returns a tenant's stored plausibility policy (JSON),
// nil if it has none.
func (s *Store) PlausibilityPolicy(ctx context.Context, t registry.TenantID) ([]byte, error) {
	var p string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT policy FROM plausibility_policies WHERE tenant_id = ?`), t).Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return []byte(p), err
}

// SetPlausibilityPolicy stores a tenant's plausibility policy (JSON).
func (s *Store) SetPlausibilityPolicy(ctx context.Context, t registry.TenantID, policy []byte, now time.Time) error {
	s.writer.lock(false)
	defer s.writer.unlock()
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO plausibility_policies (tenant_id, policy, updated_ms) VALUES (?, ?, ?)
		ON CONFLICT (tenant_id) DO UPDATE SET policy = excluded.policy, updated_ms = excluded.updated_ms`), t, string(policy), ms(now))
	return err
}

// LoadPlausibilityState returns a stream's persisted state; NotFound if
// there is none.
func (s *Store) LoadPlausibilityState(ctx context.Context, t registry.TenantID, st registry.StreamID) (series.PlausibilityState, error) {
	v := series.PlausibilityState{Tenant: t, Stream: st}
	err := s.db.QueryRowContext(ctx, s.q(`SELECT subject_id, data FROM plausibility_state WHERE stream_id = ? AND tenant_id = ?`), st, t).Scan(&v.Subject, &v.Data)
	return v, notFound("plausibility state", err)
}

// SavePlausibilityStates upserts streams' states in one transaction. The
// last writer wins: with several hub replicas, each saves what it learned.
func (s *Store) SavePlausibilityStates(ctx context.Context, vs []series.PlausibilityState, now time.Time) error {
	if len(vs) == 0 {
		return nil
	}
	s.writer.lock(false)
	defer s.writer.unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, v := range vs {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO plausibility_state (stream_id, tenant_id, subject_id, data, updated_ms) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (stream_id) DO UPDATE SET data = excluded.data, updated_ms = excluded.updated_ms
			WHERE plausibility_state.tenant_id = excluded.tenant_id`), v.Stream, v.Tenant, v.Subject, v.Data, ms(now)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// EraseSubjectQuarantine deletes a data subject's quarantined blocks and
// saved plausibility state (sealed, so unreadable already once the key is
// destroyed) and reports how many rows it deleted.
func (s *Store) EraseSubjectQuarantine(ctx context.Context, t registry.TenantID, sub registry.SubjectID) (int, error) {
	n := 0
	for _, table := range []string{"quarantine", "plausibility_state"} {
		k, err := s.purgeStep(ctx, `DELETE FROM `+table+` WHERE tenant_id = ? AND subject_id = ?`, t, sub)
		if err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

// SubjectQuarantine lists the quarantined blocks of a data subject, for
// its export.
func (s *Store) SubjectQuarantine(ctx context.Context, t registry.TenantID, sub registry.SubjectID) ([]series.Quarantined, error) {
	return queryQuarantined(ctx, s.db, s.q(`SELECT `+quarantineCols+` FROM quarantine WHERE tenant_id = ? AND subject_id = ? ORDER BY id`), t, sub)
}

// queryQuarantined runs a query selecting quarantineCols on db or a
// transaction and scans every row.
func queryQuarantined(ctx context.Context, db interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, query string, args ...any) ([]series.Quarantined, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []series.Quarantined
	for rows.Next() {
		v, err := scanQuarantined(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
