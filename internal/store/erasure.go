package store

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// Erasure is the evidence of a data subject's erasure: what was erased and
// when, never the erased data.
type Erasure struct {
	Subject      registry.SubjectID     `json:"subject"`
	Tenant       registry.TenantID      `json:"tenant"`
	Requested    time.Time              `json:"requested"`
	KeyDestroyed time.Time              `json:"key_destroyed"`
	Purged       time.Time              `json:"purged,omitzero"`
	Streams      []registry.StreamID    `json:"streams"`
	Connectors   []registry.ConnectorID `json:"connectors,omitempty"`
	// Evidence is the key store's record (key IDs, KEK) and counts, JSON.
	Evidence json.RawMessage `json:"evidence"`
}

// EraseSubject removes a data subject from the registry — its sites,
// devices and streams, and the subject row with its sealed profile — and
// records the erasure, in one transaction. Its sealed data rows are left
// for Purge: they are unreadable already (the key is destroyed first), and
// deleting them is work proportional to their volume, which erasure itself
// must not wait for. The connectors that served the subject's devices are
// returned so the caller can refresh what it caches about them.
func (s *Store) EraseSubject(ctx context.Context, e *Erasure) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM subjects WHERE tenant_id = ? AND id = ?`), e.Tenant, e.Subject).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return errs.E(errs.NotFound, "subject not found")
	}
	rows, err := tx.QueryContext(ctx, s.q(`SELECT s.id, d.connector_id FROM streams s JOIN devices d ON d.id = s.device_id WHERE s.tenant_id = ? AND s.subject_id = ?`), e.Tenant, e.Subject)
	if err != nil {
		return err
	}
	seen := map[registry.ConnectorID]bool{}
	for rows.Next() {
		var st registry.StreamID
		var c registry.ConnectorID
		if err := rows.Scan(&st, &c); err != nil {
			rows.Close()
			return err
		}
		e.Streams = append(e.Streams, st)
		if !seen[c] {
			seen[c] = true
			e.Connectors = append(e.Connectors, c)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, q := range []string{
		`DELETE FROM streams WHERE tenant_id = ? AND subject_id = ?`,
		`DELETE FROM devices WHERE tenant_id = ? AND site_id IN (SELECT id FROM sites WHERE tenant_id = ? AND subject_id = ?)`,
		`DELETE FROM sites WHERE tenant_id = ? AND subject_id = ?`,
		`DELETE FROM subjects WHERE tenant_id = ? AND id = ?`,
	} {
		args := []any{e.Tenant, e.Subject}
		if strings.Count(q, "?") == 3 {
			args = []any{e.Tenant, e.Tenant, e.Subject}
		}
		if _, err := tx.ExecContext(ctx, s.q(q), args...); err != nil {
			return err
		}
	}
	streams, _ := json.Marshal(e.Streams)
	if e.Evidence == nil {
		e.Evidence = json.RawMessage("{}")
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO erasures (subject_id, tenant_id, requested_ms, key_destroyed_ms, streams, evidence) VALUES (?, ?, ?, ?, ?, ?)`),
		e.Subject, e.Tenant, ms(e.Requested), ms(e.KeyDestroyed), string(streams), string(e.Evidence)); err != nil {
		if isUnique(err) {
			return errs.E(errs.Exists, "subject already erased")
		}
		return err
	}
	return tx.Commit()
}

// Erasures lists a tenant's erasure evidence, newest first.
func (s *Store) Erasures(ctx context.Context, t registry.TenantID) ([]Erasure, error) {
	return s.erasures(ctx, s.q(`SELECT subject_id, tenant_id, requested_ms, key_destroyed_ms, purged_ms, streams, evidence FROM erasures WHERE tenant_id = ? ORDER BY requested_ms DESC`), t)
}

// PendingPurges lists erasures whose data rows are not all deleted yet.
func (s *Store) PendingPurges(ctx context.Context) ([]Erasure, error) {
	return s.erasures(ctx, `SELECT subject_id, tenant_id, requested_ms, key_destroyed_ms, purged_ms, streams, evidence FROM erasures WHERE purged_ms = 0`)
}

func (s *Store) erasures(ctx context.Context, q string, args ...any) ([]Erasure, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Erasure
	for rows.Next() {
		var e Erasure
		var r, k, p int64
		var streams, ev string
		if err := rows.Scan(&e.Subject, &e.Tenant, &r, &k, &p, &streams, &ev); err != nil {
			return nil, err
		}
		e.Requested, e.KeyDestroyed, e.Purged = fromMS(r), fromMS(k), fromMS(p)
		json.Unmarshal([]byte(streams), &e.Streams)
		e.Evidence = json.RawMessage(ev)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Purge deletes up to limit stored rows (chunks, landed blocks,
// quarantined blocks, rollups, plausibility state) of an erased subject's streams and reports how many it deleted; when
// none are left it marks the erasure purged. Call it until it reports 0.
func (s *Store) Purge(ctx context.Context, e Erasure, limit int, now time.Time) (int, error) {
	deleted := 0
	for _, st := range e.Streams {
		for _, table := range []string{"chunks", "landing", "quarantine"} {
			q := `DELETE FROM ` + table + ` WHERE id IN (SELECT id FROM ` + table + ` WHERE stream_id = ? AND tenant_id = ? LIMIT ?)`
			n, err := s.purgeStep(ctx, q, st, e.Tenant, limit-deleted)
			if err != nil {
				return deleted, err
			}
			deleted += n
			if deleted >= limit {
				return deleted, nil
			}
		}
		for _, q := range []string{`DELETE FROM rollups WHERE stream_id = ? AND tenant_id = ?`, `DELETE FROM plausibility_state WHERE stream_id = ? AND tenant_id = ?`} {
			n, err := s.purgeStep(ctx, q, st, e.Tenant)
			if err != nil {
				return deleted, err
			}
			deleted += n
		}
	}
	if deleted == 0 {
		_, err := s.db.ExecContext(ctx, s.q(`UPDATE erasures SET purged_ms = ? WHERE subject_id = ?`), ms(now), e.Subject)
		return 0, err
	}
	return deleted, nil
}

func (s *Store) purgeStep(ctx context.Context, q string, args ...any) (int, error) {
	s.writer.lock(false)
	defer s.writer.unlock()
	res, err := s.db.ExecContext(ctx, s.q(q), args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}
