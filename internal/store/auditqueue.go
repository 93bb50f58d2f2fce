package store

import (
	"context"
	"database/sql"
	"strings"
	"sync"

	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/errs"
)

// AuditQueue holds audit entries written in the same transaction as the
// action they record (WriteBatches' entries), until an audit.Integrator
// moves them into the log. On PostgreSQL, replicas share the queue; one of
// them leads (a session-level advisory lock) and integrates.
type AuditQueue struct {
	s *Store

	mu   sync.Mutex
	lead *sql.Conn // PostgreSQL: the connection holding the lead lock
}

var (
	_ audit.Queue  = (*AuditQueue)(nil)
	_ audit.Leader = (*AuditQueue)(nil)
)

// AuditQueue returns the store's audit queue. Call it once per process and
// Close it when done (it may hold a connection).
func (s *Store) AuditQueue() *AuditQueue { return &AuditQueue{s: s} }

// auditQueueLock is the advisory lock key of the integrating replica.
const auditQueueLock = 7420333

// enqueueAudit writes encoded entries (time 0) into the queue within tx.
func (s *Store) enqueueAudit(ctx context.Context, tx *sql.Tx, leaves [][]byte) error {
	for i := 0; i < len(leaves); i += rowsPerInsert {
		part := leaves[i:min(i+rowsPerInsert, len(leaves))]
		var b strings.Builder
		b.WriteString(`INSERT INTO audit_queue (entry) VALUES `)
		args := make([]any, 0, len(part))
		for j, leaf := range part {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?)")
			args = append(args, leaf)
		}
		if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
			return err
		}
	}
	return nil
}

// Pending implements audit.Queue.
func (q *AuditQueue) Pending(ctx context.Context, max int) ([]audit.Queued, error) {
	rows, err := q.s.db.QueryContext(ctx, q.s.q(`SELECT seq, entry FROM audit_queue ORDER BY seq LIMIT ?`), max)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []audit.Queued
	for rows.Next() {
		var seq int64
		var leaf []byte
		if err := rows.Scan(&seq, &leaf); err != nil {
			return nil, err
		}
		e, err := audit.ParseEntry(leaf)
		if err != nil {
			return nil, errs.E(errs.Integrity, err)
		}
		out = append(out, audit.Queued{Seq: uint64(seq), Entry: e})
	}
	return out, rows.Err()
}

// Remove implements audit.Queue.
func (q *AuditQueue) Remove(ctx context.Context, upTo uint64) error {
	if q.s.dialect != Postgres {
		q.s.writer.lock(false)
		defer q.s.writer.unlock()
	}
	_, err := q.s.db.ExecContext(ctx, q.s.q(`DELETE FROM audit_queue WHERE seq <= ?`), int64(upTo))
	return err
}

// Len is the number of entries waiting.
func (q *AuditQueue) Len(ctx context.Context) (int, error) {
	var n int
	err := q.s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_queue`).Scan(&n)
	return n, err
}

// Lead implements audit.Leader: on SQLite the one process always leads; on
// PostgreSQL the replica holding the advisory lock does, on a connection
// kept for the purpose (the lock goes with the connection if the replica
// dies).
func (q *AuditQueue) Lead(ctx context.Context) (bool, error) {
	if q.s.dialect != Postgres {
		return true, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.lead != nil {
		if err := q.lead.PingContext(ctx); err == nil {
			return true, nil
		}
		q.lead.Close()
		q.lead = nil
	}
	c, err := q.s.db.Conn(ctx)
	if err != nil {
		return false, err
	}
	var got bool
	if err := c.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, auditQueueLock).Scan(&got); err != nil || !got {
		c.Close()
		return false, err
	}
	q.lead = c
	return true, nil
}

// Close gives up the lead.
func (q *AuditQueue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.lead == nil {
		return nil
	}
	q.lead.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, auditQueueLock)
	err := q.lead.Close()
	q.lead = nil
	return err
}
