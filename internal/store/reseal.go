package store

import (
	"context"
	"database/sql"
	"math"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/wire"
)

// SealedKind names the place a sealed value is stored in.
type SealedKind string

// The places that hold values sealed under a data subject's key.
const (
	SealedProfile SealedKind = "profile" // subjects.profile
	SealedLanding SealedKind = "landing" // landing.data
	SealedChunk   SealedKind = "chunk"   // chunks.data
	SealedRollup  SealedKind = "rollup"  // rollups.data
	// SealedQuarantine is a quarantined block (quarantine.data).
	SealedQuarantine SealedKind = "quarantine"
	// SealedPlausibility is a stream's learned state (plausibility_state.data).
	SealedPlausibility SealedKind = "plausibility"
	// SealedCorrections is a part of a rectification request's corrections
	// (rectification_parts.data).
	SealedCorrections SealedKind = "corrections"
)

// Sealed is one value sealed under a data subject's key, with what is
// needed to rebuild its associated data. The store does not open it.
type Sealed struct {
	Kind    SealedKind
	Tenant  registry.TenantID
	Subject registry.SubjectID
	// Stream is set for landed blocks, chunks and rollups.
	Stream registry.StreamID
	// MinTime is the first reading's time of a chunk (its bucket is the
	// hour it falls in).
	MinTime int64
	// Res and Period locate a rollup row.
	Res    rollup.Resolution
	Period int64
	// Connector, Batch and Seq locate a quarantined block (its AD).
	Connector registry.ConnectorID
	Batch     wire.BatchID
	Seq       int
	// Request and Seq locate a part of a rectification request's
	// corrections.
	Request string
	// Data is the sealed value.
	Data []byte

	id int64 // landing and chunk row ID
}

// querySealed runs query and scans every row with scan.
func querySealed(ctx context.Context, s *Store, query string, scan func(*sql.Rows) (Sealed, error), args ...any) ([]Sealed, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Sealed
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// resealPages re-seals vs a page at a time, adding to st.
func (s *Store) resealPages(ctx context.Context, vs []Sealed, fn func(*Sealed) ([]byte, error), st *ResealStats) error {
	for i := 0; i < len(vs); i += resealPage {
		one, err := s.resealPage(ctx, vs[i:min(i+resealPage, len(vs))], fn)
		st.add(one)
		if err != nil {
			return err
		}
	}
	return nil
}

// ResealStats counts what Reseal did.
type ResealStats struct {
	Seen     int // sealed values visited
	Replaced int // values fn replaced and that were written
	Raced    int // replacements dropped: the value changed or went away meanwhile
}

func (a *ResealStats) add(b ResealStats) {
	a.Seen += b.Seen
	a.Replaced += b.Replaced
	a.Raced += b.Raced
}

// resealPage bounds the values read, and replaced in one transaction, per
// step, so that ingest commits slot in between.
const resealPage = 128

// Reseal visits every value sealed under the subject's key — the subject's
// profile, its landed blocks, the chunks and rollups of its streams, its
// quarantined blocks and learned state, and the corrections of its
// pending rectification requests —
// and lets fn replace each: fn returns the new sealed bytes, or nil to keep
// the value. fn runs outside any transaction. Replacements are written a
// page at a time, each as a compare-and-swap on the old bytes, so a value
// that changed meanwhile (a compaction rewrote the rollup, a purge deleted
// the row) is never clobbered: it is counted as Raced, and a later Reseal
// visits its new version. An error from fn stops the walk; pages written
// before it stay written.
//
// Values written concurrently may be missed by one walk; callers that need
// every value re-sealed walk again once no writer can seal under the old
// key any more.
func (s *Store) Reseal(ctx context.Context, t registry.TenantID, subj registry.SubjectID, fn func(*Sealed) ([]byte, error)) (ResealStats, error) {
	var st ResealStats
	// The profile.
	var prof []byte
	err := s.db.QueryRowContext(ctx, s.q(`SELECT profile FROM subjects WHERE tenant_id = ? AND id = ?`), t, subj).Scan(&prof)
	switch {
	case err == sql.ErrNoRows:
	case err != nil:
		return st, err
	default:
		one, err := s.resealPage(ctx, []Sealed{{Kind: SealedProfile, Tenant: t, Subject: subj, Data: prof}}, fn)
		st.add(one)
		if err != nil {
			return st, err
		}
	}
	// Landed blocks: the landing table is small (the compactor drains it
	// within seconds) and has no stream index, so walk it by subject.
	after := int64(math.MinInt64)
	for {
		page, err := s.sealedRows(ctx, s.q(`SELECT id, stream_id, 0, data FROM landing
			WHERE subject_id = ? AND tenant_id = ? AND id > ? ORDER BY id LIMIT ?`), SealedLanding, t, subj, subj, t, after, resealPage)
		if err != nil || len(page) == 0 {
			if err != nil {
				return st, err
			}
			break
		}
		after = page[len(page)-1].id
		one, err := s.resealPage(ctx, page, fn)
		st.add(one)
		if err != nil {
			return st, err
		}
	}
	streams, err := s.subjectStreams(ctx, t, subj)
	if err != nil {
		return st, err
	}
	for _, stream := range streams {
		one, err := s.resealStream(ctx, t, subj, stream, fn)
		st.add(one)
		if err != nil {
			return st, err
		}
	}
	// Quarantined blocks and the detector's learned state.
	after = int64(math.MinInt64)
	for {
		page, err := querySealed(ctx, s, s.q(`SELECT id, stream_id, connector_id, batch_id, seq, data FROM quarantine
			WHERE subject_id = ? AND tenant_id = ? AND id > ? ORDER BY id LIMIT ?`),
			func(rows *sql.Rows) (Sealed, error) {
				v := Sealed{Kind: SealedQuarantine, Tenant: t, Subject: subj}
				var batch []byte
				err := rows.Scan(&v.id, &v.Stream, &v.Connector, &batch, &v.Seq, &v.Data)
				copy(v.Batch[:], batch)
				return v, err
			}, subj, t, after, resealPage)
		if err != nil {
			return st, err
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1].id
		one, err := s.resealPage(ctx, page, fn)
		st.add(one)
		if err != nil {
			return st, err
		}
	}
	states, err := querySealed(ctx, s, s.q(`SELECT stream_id, data FROM plausibility_state WHERE subject_id = ? AND tenant_id = ?`),
		func(rows *sql.Rows) (Sealed, error) {
			v := Sealed{Kind: SealedPlausibility, Tenant: t, Subject: subj}
			return v, rows.Scan(&v.Stream, &v.Data)
		}, subj, t)
	if err != nil {
		return st, err
	}
	if err := s.resealPages(ctx, states, fn, &st); err != nil {
		return st, err
	}
	// Corrections waiting in rectification requests: few, short-lived.
	parts, err := querySealed(ctx, s, s.q(`SELECT request_id, seq, stream_id, data FROM rectification_parts WHERE tenant_id = ? AND subject_id = ? ORDER BY request_id, seq`),
		func(rows *sql.Rows) (Sealed, error) {
			v := Sealed{Kind: SealedCorrections, Tenant: t, Subject: subj}
			return v, rows.Scan(&v.Request, &v.Seq, &v.Stream, &v.Data)
		}, t, subj)
	if err != nil {
		return st, err
	}
	if err := s.resealPages(ctx, parts, fn, &st); err != nil {
		return st, err
	}
	return st, nil
}

func (s *Store) subjectStreams(ctx context.Context, t registry.TenantID, subj registry.SubjectID) ([]registry.StreamID, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id FROM streams WHERE tenant_id = ? AND subject_id = ? ORDER BY id`), t, subj)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []registry.StreamID
	for rows.Next() {
		var id registry.StreamID
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// resealStream walks a stream's chunks in (min_ms, id) order and its rollups
// in (res, period_ms) order, both along an index.
func (s *Store) resealStream(ctx context.Context, t registry.TenantID, subj registry.SubjectID, stream registry.StreamID, fn func(*Sealed) ([]byte, error)) (ResealStats, error) {
	var st ResealStats
	afterMin, afterID := int64(math.MinInt64), int64(math.MinInt64)
	for {
		page, err := s.sealedRows(ctx, s.q(`SELECT id, '', min_ms, data FROM chunks
			WHERE stream_id = ? AND tenant_id = ? AND subject_id = ? AND (min_ms > ? OR (min_ms = ? AND id > ?))
			ORDER BY min_ms, id LIMIT ?`), SealedChunk, t, subj, stream, t, subj, afterMin, afterMin, afterID, resealPage)
		if err != nil {
			return st, err
		}
		if len(page) == 0 {
			break
		}
		last := page[len(page)-1]
		afterMin, afterID = last.MinTime, last.id
		for i := range page {
			page[i].Stream = stream
		}
		one, err := s.resealPage(ctx, page, fn)
		st.add(one)
		if err != nil {
			return st, err
		}
	}
	afterRes, afterPeriod := "", int64(math.MinInt64)
	for {
		rows, err := s.db.QueryContext(ctx, s.q(`SELECT res, period_ms, data FROM rollups
			WHERE stream_id = ? AND tenant_id = ? AND subject_id = ? AND (res > ? OR (res = ? AND period_ms > ?))
			ORDER BY res, period_ms LIMIT ?`), stream, t, subj, afterRes, afterRes, afterPeriod, resealPage)
		if err != nil {
			return st, err
		}
		var page []Sealed
		for rows.Next() {
			v := Sealed{Kind: SealedRollup, Tenant: t, Subject: subj, Stream: stream}
			if err := rows.Scan(&v.Res, &v.Period, &v.Data); err != nil {
				rows.Close()
				return st, err
			}
			page = append(page, v)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return st, err
		}
		if len(page) == 0 {
			break
		}
		last := page[len(page)-1]
		afterRes, afterPeriod = string(last.Res), last.Period
		one, err := s.resealPage(ctx, page, fn)
		st.add(one)
		if err != nil {
			return st, err
		}
	}
	return st, nil
}

// sealedRows reads landing or chunk rows: id, stream, min_ms, data.
func (s *Store) sealedRows(ctx context.Context, query string, kind SealedKind, t registry.TenantID, subj registry.SubjectID, args ...any) ([]Sealed, error) {
	return querySealed(ctx, s, query, func(rows *sql.Rows) (Sealed, error) {
		v := Sealed{Kind: kind, Tenant: t, Subject: subj}
		err := rows.Scan(&v.id, &v.Stream, &v.MinTime, &v.Data)
		return v, err
	}, args...)
}

// resealPage calls fn for each value and writes the replacements in one
// short transaction, each a compare-and-swap on the old bytes.
func (s *Store) resealPage(ctx context.Context, page []Sealed, fn func(*Sealed) ([]byte, error)) (ResealStats, error) {
	st := ResealStats{Seen: len(page)}
	type swap struct {
		v    *Sealed
		data []byte
	}
	var swaps []swap
	for i := range page {
		data, err := fn(&page[i])
		if err != nil {
			return st, err
		}
		if data != nil {
			swaps = append(swaps, swap{&page[i], data})
		}
	}
	if len(swaps) == 0 {
		return st, nil
	}
	s.writer.lock(false)
	defer s.writer.unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return st, err
	}
	defer tx.Rollback()
	for _, w := range swaps {
		var res sql.Result
		switch v := w.v; v.Kind {
		case SealedProfile:
			res, err = tx.ExecContext(ctx, s.q(`UPDATE subjects SET profile = ? WHERE id = ? AND tenant_id = ? AND profile = ?`), w.data, v.Subject, v.Tenant, v.Data)
		case SealedLanding:
			res, err = tx.ExecContext(ctx, s.q(`UPDATE landing SET data = ? WHERE id = ? AND subject_id = ? AND data = ?`), w.data, v.id, v.Subject, v.Data)
		case SealedChunk:
			res, err = tx.ExecContext(ctx, s.q(`UPDATE chunks SET data = ? WHERE id = ? AND subject_id = ? AND data = ?`), w.data, v.id, v.Subject, v.Data)
		case SealedRollup:
			res, err = tx.ExecContext(ctx, s.q(`UPDATE rollups SET data = ? WHERE stream_id = ? AND res = ? AND period_ms = ? AND subject_id = ? AND data = ?`),
				w.data, v.Stream, string(v.Res), v.Period, v.Subject, v.Data)
		case SealedQuarantine:
			res, err = tx.ExecContext(ctx, s.q(`UPDATE quarantine SET data = ? WHERE id = ? AND subject_id = ? AND data = ?`), w.data, v.id, v.Subject, v.Data)
		case SealedPlausibility:
			res, err = tx.ExecContext(ctx, s.q(`UPDATE plausibility_state SET data = ? WHERE stream_id = ? AND subject_id = ? AND data = ?`), w.data, v.Stream, v.Subject, v.Data)
		case SealedCorrections:
			res, err = tx.ExecContext(ctx, s.q(`UPDATE rectification_parts SET data = ? WHERE tenant_id = ? AND request_id = ? AND seq = ? AND subject_id = ? AND data = ?`), w.data, v.Tenant, v.Request, v.Seq, v.Subject, v.Data)
		}
		if err != nil {
			return st, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return st, err
		} else if n == 1 {
			st.Replaced++
		} else {
			st.Raced++
		}
	}
	if err := tx.Commit(); err != nil {
		return ResealStats{Seen: st.Seen}, err
	}
	return st, nil
}
