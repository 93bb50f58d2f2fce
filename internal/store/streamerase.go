package store

import (
	"context"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// EraseStreamReadings deletes what is kept of a stream finer than keep: its
// raw readings (chunks and landing) and its rollups at resolutions finer
// than keep. With keep "" everything of the stream goes, rollups included.
// The rollups kept stay correct: the compactor folds new readings into
// stored rows and never recomputes them from raw data. It runs while no
// compaction pass does (which could otherwise write back a chunk it read
// before), and returns the number of rows deleted.
func (s *Store) EraseStreamReadings(ctx context.Context, t registry.TenantID, st registry.StreamID, keep rollup.Resolution) (int, error) {
	if s.dialect != Postgres {
		s.compacting.Lock()
		defer s.compacting.Unlock()
		s.writer.lock(false)
		defer s.writer.unlock()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if s.dialect == Postgres {
		// The compaction lock: wait for a pass in flight; passes skip
		// while this transaction holds it.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7420331)`); err != nil {
			return 0, err
		}
	}
	n := 0
	del := func(q string, args ...any) error {
		res, err := tx.ExecContext(ctx, s.q(q), args...)
		if err != nil {
			return err
		}
		k, _ := res.RowsAffected()
		n += int(k)
		return nil
	}
	// Quarantined readings are raw readings too, and the plausibility
	// state is learned from them.
	for _, table := range []string{"chunks", "landing", "quarantine", "plausibility_state"} {
		if err := del(`DELETE FROM `+table+` WHERE tenant_id = ? AND stream_id = ?`, t, st); err != nil {
			return 0, err
		}
	}
	for _, res := range rollup.Aggregated {
		if keep == "" || res.Finer(keep) {
			if err := del(`DELETE FROM rollups WHERE tenant_id = ? AND stream_id = ? AND res = ?`, t, st, string(res)); err != nil {
				return 0, err
			}
		}
	}
	return n, tx.Commit()
}
