package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/custos-iot/custos/internal/collection"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

const policyCols = `stream_id, send, finest, prev_send, prev_finest, version, reason, updated_ms, refused_readings, last_refused_ms`

func scanPolicy(row interface{ Scan(...any) error }) (collection.Record, error) {
	var r collection.Record
	var fin, prev string
	var upd, last int64
	err := row.Scan(&r.Stream, &r.Send, &fin, &r.Previous.Send, &prev, &r.Version, &r.Reason, &upd, &r.Refused, &last)
	r.Finest, r.Previous.Finest = rollup.Resolution(fin), rollup.Resolution(prev)
	r.Updated, r.LastRefused = fromMS(upd), fromMS(last)
	return r, err
}

// CollectionPolicy returns a stream's collection policy: the default
// (raw, sent; Version 0) if none was set. The stream must exist in the
// tenant.
func (s *Store) CollectionPolicy(ctx context.Context, t registry.TenantID, id registry.StreamID) (collection.Record, error) {
	if _, err := s.Stream(ctx, t, id); err != nil {
		return collection.Record{}, err
	}
	r, err := scanPolicy(s.db.QueryRowContext(ctx, s.q(`SELECT `+policyCols+` FROM collection_policies WHERE tenant_id = ? AND stream_id = ?`), t, id))
	if errors.Is(err, sql.ErrNoRows) {
		return collection.Record{Stream: string(id), Policy: collection.Default, Previous: collection.Default}, nil
	}
	return r, err
}

// SetCollectionPolicy sets a stream's collection policy; reason says why
// (free text without personal data, e.g. "consent to real-time monitoring
// withdrawn"). It is what consent code calls. Setting the policy a stream
// already has changes nothing (the version and the grace period stay).
// The agent learns of a change at its next policy refresh; the hub
// enforces it on readings timed after the change plus its grace period.
func (s *Store) SetCollectionPolicy(ctx context.Context, t registry.TenantID, id registry.StreamID, p collection.Policy, reason string) (collection.Record, error) {
	return s.SetCollectionPolicyIf(ctx, t, id, p, reason, -1)
}

// SetCollectionPolicyIf is SetCollectionPolicy that succeeds only if the
// stored version is ifVersion (0: never set), else fails with
// errs.Conflict. A negative ifVersion matches any version.
func (s *Store) SetCollectionPolicyIf(ctx context.Context, t registry.TenantID, id registry.StreamID, p collection.Policy, reason string, ifVersion int64) (collection.Record, error) {
	const op errs.Op = "store.SetCollectionPolicy"
	if err := p.Check(); err != nil {
		return collection.Record{}, errs.E(op, err)
	}
	if err := collection.CheckReason(reason); err != nil {
		return collection.Record{}, errs.E(op, err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return collection.Record{}, err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM streams WHERE tenant_id = ? AND id = ?`), t, id).Scan(&n); err != nil {
		return collection.Record{}, err
	}
	if n == 0 {
		return collection.Record{}, errs.E(op, errs.NotFound, "stream not found")
	}
	lock := ""
	if s.dialect == Postgres {
		lock = " FOR UPDATE"
	}
	cur, err := scanPolicy(tx.QueryRowContext(ctx, s.q(`SELECT `+policyCols+` FROM collection_policies WHERE tenant_id = ? AND stream_id = ?`+lock), t, id))
	exists := err == nil
	switch {
	case errors.Is(err, sql.ErrNoRows):
		cur = collection.Record{Stream: string(id), Policy: collection.Default, Previous: collection.Default}
	case err != nil:
		return collection.Record{}, err
	}
	if ifVersion >= 0 && cur.Version != ifVersion {
		return collection.Record{}, errs.E(op, errs.Conflict, fmt.Sprintf("the policy is at version %d, not %d: read it again", cur.Version, ifVersion))
	}
	if cur.Policy == p && exists {
		return cur, tx.Commit()
	}
	next := cur
	next.Previous, next.Policy, next.Version, next.Reason, next.Updated = cur.Policy, p, cur.Version+1, reason, s.now().UTC().Truncate(1e6)
	if exists {
		_, err = tx.ExecContext(ctx, s.q(`UPDATE collection_policies SET send = ?, finest = ?, prev_send = ?, prev_finest = ?, version = ?, reason = ?, updated_ms = ? WHERE tenant_id = ? AND stream_id = ?`),
			p.Send, string(p.Finest), next.Previous.Send, string(next.Previous.Finest), next.Version, reason, ms(next.Updated), t, id)
	} else {
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO collection_policies (stream_id, tenant_id, send, finest, prev_send, prev_finest, version, reason, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			id, t, p.Send, string(p.Finest), next.Previous.Send, string(next.Previous.Finest), next.Version, reason, ms(next.Updated))
	}
	if isUnique(err) {
		return collection.Record{}, errs.E(op, errs.Conflict, "the policy changed concurrently: try again")
	}
	if err != nil {
		return collection.Record{}, err
	}
	return next, tx.Commit()
}

// ConnectorCollectionPolicies returns the stored policies of a
// connector's streams, by stream ID; streams without one are absent (they
// have the default).
func (s *Store) ConnectorCollectionPolicies(ctx context.Context, connector registry.ConnectorID) (map[registry.StreamID]collection.Record, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT p.stream_id, p.send, p.finest, p.prev_send, p.prev_finest, p.version, p.reason, p.updated_ms, p.refused_readings, p.last_refused_ms
		FROM collection_policies p JOIN streams s ON s.id = p.stream_id JOIN devices d ON d.id = s.device_id
		WHERE d.connector_id = ? AND p.tenant_id = s.tenant_id`), connector)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[registry.StreamID]collection.Record{}
	for rows.Next() {
		r, err := scanPolicy(rows)
		if err != nil {
			return nil, err
		}
		out[registry.StreamID(r.Stream)] = r
	}
	return out, rows.Err()
}

// CountPolicyRefusals adds n to the readings of a stream the hub refused
// under its collection policy, at Unix ms at.
func (s *Store) CountPolicyRefusals(ctx context.Context, id registry.StreamID, n int64, at int64) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE collection_policies SET refused_readings = refused_readings + ?, last_refused_ms = ? WHERE stream_id = ?`), n, at, id)
	return err
}
