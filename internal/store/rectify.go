package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
)

// RectificationPart is one part of the corrections submitted with a
// rectification request: a wire block of corrected readings sealed under
// the subject's key (series.CorrectionsAD). The store does not open it.
type RectificationPart struct {
	Tenant  registry.TenantID
	Request rights.RequestID
	Seq     int // 1, 2, ... in the order the parts were submitted
	Subject registry.SubjectID
	Stream  registry.StreamID
	Count   int
	Data    []byte
}

func (s *Store) insertParts(ctx context.Context, tx *sql.Tx, parts []RectificationPart) error {
	for _, p := range parts {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO rectification_parts (tenant_id, request_id, seq, subject_id, stream_id, n, data) VALUES (?, ?, ?, ?, ?, ?, ?)`),
			p.Tenant, p.Request, p.Seq, p.Subject, p.Stream, p.Count, p.Data)
		if isUnique(err) {
			return errs.E(errs.Conflict, "another part of the corrections was submitted at the same moment; submit this one again")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// AddRectificationPart stores a further part of a rectification request's
// corrections (none if p.Data is nil: a part of delete ranges only)
// together with the request's updated details (r, as
// rights.Request.AddCorrections left it), in one transaction, unless the
// request was completed or refused meanwhile (errs.Conflict).
func (s *Store) AddRectificationPart(ctx context.Context, r rights.Request, p RectificationPart) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.updateRights(ctx, tx, r); err != nil {
		return err
	}
	if p.Data != nil {
		if err := s.insertParts(ctx, tx, []RectificationPart{p}); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// RectificationParts returns a request's parts in the order submitted.
func (s *Store) RectificationParts(ctx context.Context, t registry.TenantID, id rights.RequestID) ([]RectificationPart, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT seq, subject_id, stream_id, n, data FROM rectification_parts WHERE tenant_id = ? AND request_id = ? ORDER BY seq`), t, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RectificationPart
	for rows.Next() {
		p := RectificationPart{Tenant: t, Request: id}
		if err := rows.Scan(&p.Seq, &p.Subject, &p.Stream, &p.Count, &p.Data); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Rectify runs fn in one transaction on a tenant's stream in which no
// compaction pass runs — on SQLite this process's compaction passes and
// other writers wait for it; on PostgreSQL it holds the compaction lock,
// so passes of every replica skip until it is done. Everything fn writes
// through tx is committed together if fn returns nil; nothing otherwise.
// A crash at any point leaves the stream as it was before or after.
func (s *Store) Rectify(ctx context.Context, t registry.TenantID, st registry.StreamID, fn func(context.Context, *RectifyTx) error) error {
	if s.dialect != Postgres {
		s.compacting.Lock()
		defer s.compacting.Unlock()
		s.writer.lock(false)
		defer s.writer.unlock()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if s.dialect == Postgres {
		// Wait for a pass in flight; passes skip while this is held.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7420331)`); err != nil {
			return err
		}
	}
	if err := fn(ctx, &RectifyTx{s: s, tx: tx, tenant: t, stream: st}); err != nil {
		return err
	}
	return tx.Commit()
}

// RectifyTx is a stream's data inside Rectify's transaction. It
// implements series.RectifyTx.
type RectifyTx struct {
	s      *Store
	tx     *sql.Tx
	tenant registry.TenantID
	stream registry.StreamID
}

var _ series.RectifyTx = (*RectifyTx)(nil)

// Chunks implements series.RectifyTx.
func (x *RectifyTx) Chunks(ctx context.Context, from, to int64, data bool) ([]series.Chunk, error) {
	col := "data"
	if !data {
		col = "NULL"
	}
	rows, err := x.tx.QueryContext(ctx, x.s.q(`SELECT id, subject_id, min_ms, max_ms, n, `+col+` FROM chunks
		WHERE stream_id = ? AND tenant_id = ? AND min_ms >= ? AND min_ms < ? AND max_ms >= ? ORDER BY min_ms, id`),
		x.stream, x.tenant, from-series.MaxChunkSpanMS, to, from)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []series.Chunk
	for rows.Next() {
		c := series.Chunk{Tenant: x.tenant, Stream: x.stream}
		if err := rows.Scan(&c.ID, &c.Subject, &c.MinTime, &c.MaxTime, &c.Count, &c.Data); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Landed implements series.RectifyTx. The landing table is small (the
// compactor drains it within seconds) and has no stream index.
func (x *RectifyTx) Landed(ctx context.Context) ([]series.Chunk, error) {
	rows, err := x.tx.QueryContext(ctx, x.s.q(`SELECT min_ms, max_ms FROM landing WHERE stream_id = ? AND tenant_id = ?`), x.stream, x.tenant)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []series.Chunk
	for rows.Next() {
		c := series.Chunk{Tenant: x.tenant, Stream: x.stream, Landed: true}
		if err := rows.Scan(&c.MinTime, &c.MaxTime); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ReplaceChunks implements series.RectifyTx.
func (x *RectifyTx) ReplaceChunks(ctx context.Context, del []int64, cs []series.Chunk) error {
	for i := 0; i < len(del); i += rowsPerInsert {
		part := del[i:min(i+rowsPerInsert, len(del))]
		args := []any{x.stream, x.tenant}
		for _, id := range part {
			args = append(args, id)
		}
		res, err := x.tx.ExecContext(ctx, x.s.q(`DELETE FROM chunks WHERE stream_id = ? AND tenant_id = ? AND id IN (?`+strings.Repeat(", ?", len(part)-1)+`)`), args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != int64(len(part)) {
			return fmt.Errorf("store: rectification: %d of %d chunks to replace are not the stream's", int64(len(part))-n, len(part))
		}
	}
	rows := make([]*series.Chunk, len(cs))
	for i := range cs {
		if cs[i].Tenant != x.tenant || cs[i].Stream != x.stream {
			return fmt.Errorf("store: rectification: a chunk of another stream")
		}
		rows[i] = &cs[i]
	}
	return x.s.insertChunks(ctx, x.tx, "chunks", rows)
}

// Rollups implements series.RectifyTx.
func (x *RectifyTx) Rollups(ctx context.Context, res rollup.Resolution, from, to int64, fn func(*series.RollupRow) error) error {
	rows, err := x.tx.QueryContext(ctx, x.s.q(`SELECT period_ms, subject_id, data FROM rollups
		WHERE stream_id = ? AND res = ? AND period_ms >= ? AND period_ms <= ? AND tenant_id = ? ORDER BY period_ms`), x.stream, string(res), from, to, x.tenant)
	if err != nil {
		return err
	}
	var got []series.RollupRow
	for rows.Next() {
		r := series.RollupRow{Tenant: x.tenant, Stream: x.stream, Res: res}
		if err := rows.Scan(&r.Period, &r.Subject, &r.Data); err != nil {
			rows.Close()
			return err
		}
		got = append(got, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// fn runs with the rows closed: it may use the transaction.
	for i := range got {
		if err := fn(&got[i]); err != nil {
			return err
		}
	}
	return nil
}

// PutRollups implements series.RectifyTx.
func (x *RectifyTx) PutRollups(ctx context.Context, rows []series.RollupRow) error {
	for _, r := range rows {
		if r.Tenant != x.tenant || r.Stream != x.stream {
			return fmt.Errorf("store: rectification: a rollup row of another stream")
		}
		var err error
		if r.Data == nil {
			_, err = x.tx.ExecContext(ctx, x.s.q(`DELETE FROM rollups WHERE stream_id = ? AND res = ? AND period_ms = ? AND tenant_id = ?`), r.Stream, string(r.Res), r.Period, r.Tenant)
		} else {
			_, err = x.tx.ExecContext(ctx, x.s.q(`INSERT INTO rollups (stream_id, res, period_ms, tenant_id, subject_id, data) VALUES (?, ?, ?, ?, ?, ?)
				ON CONFLICT (stream_id, res, period_ms) DO UPDATE SET data = excluded.data`), r.Stream, string(r.Res), r.Period, r.Tenant, r.Subject, r.Data)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// FinishRequest records the rectification request r as carried out, in
// the same transaction: its parts are deleted — exactly parts of them,
// as read before, or it fails with errs.Conflict (a part was added
// meanwhile: apply again to include it) — and its status, evidence and
// details are written, unless it was completed or refused meanwhile
// (errs.Conflict).
func (x *RectifyTx) FinishRequest(ctx context.Context, r rights.Request, parts int) error {
	res, err := x.tx.ExecContext(ctx, x.s.q(`DELETE FROM rectification_parts WHERE tenant_id = ? AND request_id = ?`), r.Tenant, r.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != int64(parts) {
		return errs.E(errs.Conflict, "corrections were added to the request while it was applied; apply it again")
	}
	return x.s.updateRights(ctx, x.tx, r)
}
