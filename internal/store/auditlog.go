package store

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"

	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/errs"
)

// AuditLog is the audit log's storage in the database, shared by every hub
// replica: appends are sequenced under a transaction-level lock, so there
// is exactly one log however many replicas write to it.
type AuditLog struct{ s *Store }

// AuditLog returns the database's audit log storage.
func (s *Store) AuditLog() *AuditLog { return &AuditLog{s} }

var _ audit.SharedStorage = (*AuditLog)(nil)

// Append stores the leaves after every stored leaf, whoever wrote it, and
// refuses a batch timed before the newest stored entry.
func (a *AuditLog) Append(ctx context.Context, leaves [][]byte) (uint64, error) {
	if len(leaves) == 0 {
		return 0, errs.E(errs.Invalid, "empty batch")
	}
	e, err := audit.ParseEntry(leaves[0])
	if err != nil {
		return 0, errs.E(errs.Invalid, err)
	}
	return a.AppendStamped(ctx, func(lastWhen int64) ([][]byte, error) {
		if e.When < lastWhen {
			return nil, errs.E(errs.Conflict, "batch timed before the newest stored entry")
		}
		return leaves, nil
	})
}

// AppendStamped stores the leaves build returns after every stored leaf,
// whoever wrote it. build runs under the transaction-level lock that orders
// the replicas, with the newest stored entry's time, so the batch it builds
// can be stamped no earlier: times never decrease along the log.
func (a *AuditLog) AppendStamped(ctx context.Context, build func(lastWhen int64) ([][]byte, error)) (uint64, error) {
	s := a.s
	if s.dialect != Postgres {
		s.writer.lock(false)
		defer s.writer.unlock()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if s.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7420332)`); err != nil {
			return 0, err
		}
	}
	var last, lastWhen int64 = -1, 0
	err = tx.QueryRowContext(ctx, `SELECT idx, when_ms FROM audit_leaves ORDER BY idx DESC LIMIT 1`).Scan(&last, &lastWhen)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	leaves, err := build(lastWhen)
	if err != nil {
		return 0, err
	}
	if len(leaves) == 0 {
		return 0, errs.E(errs.Invalid, "empty batch")
	}
	e, err := audit.ParseEntry(leaves[0])
	if err != nil {
		return 0, errs.E(errs.Invalid, err)
	}
	when := e.When
	first := uint64(last + 1)
	for i := 0; i < len(leaves); i += rowsPerInsert {
		part := leaves[i:min(i+rowsPerInsert, len(leaves))]
		var b strings.Builder
		b.WriteString(`INSERT INTO audit_leaves (idx, when_ms, leaf) VALUES `)
		args := make([]any, 0, 3*len(part))
		for j, leaf := range part {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?)")
			args = append(args, int64(first)+int64(i+j), when, leaf)
		}
		if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
			return 0, err
		}
	}
	return first, tx.Commit()
}

// Leaves returns the leaves [from, to).
func (a *AuditLog) Leaves(ctx context.Context, from, to uint64) ([][]byte, error) {
	rows, err := a.s.db.QueryContext(ctx, a.s.q(`SELECT leaf FROM audit_leaves WHERE idx >= ? AND idx < ? ORDER BY idx`), int64(from), int64(to))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([][]byte, 0, to-from)
	for rows.Next() {
		var leaf []byte
		if err := rows.Scan(&leaf); err != nil {
			return nil, err
		}
		out = append(out, leaf)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if uint64(len(out)) != to-from {
		return nil, errs.E(errs.Integrity, "audit leaves missing from the database")
	}
	return out, nil
}

// Size is the number of stored leaves.
func (a *AuditLog) Size(ctx context.Context) (uint64, error) {
	var n int64
	err := a.s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_leaves`).Scan(&n)
	return uint64(n), err
}

// StoreCheckpoint keeps note if its tree is at least as large as the stored
// one's: a replica that lags never rolls the stored checkpoint back.
func (a *AuditLog) StoreCheckpoint(ctx context.Context, note []byte) error {
	lines := strings.SplitN(string(note), "\n", 3)
	if len(lines) < 3 {
		return errs.E(errs.Invalid, "malformed checkpoint")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return errs.E(errs.Invalid, "malformed checkpoint size")
	}
	_, err = a.s.db.ExecContext(ctx, a.s.q(`INSERT INTO audit_checkpoint (id, size, note) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET size = excluded.size, note = excluded.note WHERE audit_checkpoint.size <= excluded.size`), size, note)
	return err
}

// LatestCheckpoint returns the stored checkpoint, or nil.
func (a *AuditLog) LatestCheckpoint(ctx context.Context) ([]byte, error) {
	var note []byte
	err := a.s.db.QueryRowContext(ctx, `SELECT note FROM audit_checkpoint WHERE id = 1`).Scan(&note)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return note, err
}
