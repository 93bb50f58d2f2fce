package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// AddGrant stores a grant and raises its tenant's grant version in one
// transaction. An invalid grant (access.CheckGrant) is refused.
func (s *Store) AddGrant(ctx context.Context, g access.Grant, created time.Time) error {
	if err := access.CheckGrant(g); err != nil {
		return err
	}
	if _, err := s.Tenant(ctx, g.Tenant); err != nil {
		return err
	}
	return s.grantTx(ctx, g.Tenant, func(tx *sql.Tx) error { return s.insertGrant(ctx, tx, g, created) })
}

// AddGrants stores many grants of tenant t in one transaction (bulk
// provisioning and benchmarks); all or nothing.
func (s *Store) AddGrants(ctx context.Context, t registry.TenantID, gs []access.Grant, created time.Time) error {
	for _, g := range gs {
		if err := access.CheckGrant(g); err != nil {
			return err
		}
		if g.Tenant != t {
			return errs.E(errs.Invalid, "grant of another tenant in a bulk add")
		}
	}
	return s.grantTx(ctx, t, func(tx *sql.Tx) error {
		for _, g := range gs {
			if err := s.insertGrant(ctx, tx, g, created); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Store) insertGrant(ctx context.Context, tx *sql.Tx, g access.Grant, created time.Time) error {
	purposes := make([]string, len(g.Purposes))
	for i, p := range g.Purposes {
		purposes[i] = string(p)
	}
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO grants (tenant_id, id, principal, role, resource_kind, resource_id, finest, purposes, not_before_ms, not_after_ms, created_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		g.Tenant, g.ID, g.Principal, g.Role, g.Resource.Kind, g.Resource.ID, g.Finest, strings.Join(purposes, ","),
		ms(g.NotBefore), ms(g.NotAfter), ms(created))
	if isUnique(err) {
		return errs.E(errs.Exists, "a grant with that ID already exists in the tenant")
	}
	return err
}

// RevokeGrant deletes a grant and raises its tenant's grant version.
func (s *Store) RevokeGrant(ctx context.Context, t registry.TenantID, id string) error {
	return s.grantTx(ctx, t, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM grants WHERE tenant_id = ? AND id = ?`), t, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.E(errs.NotFound, "no such grant in the tenant")
		}
		return nil
	})
}

// grantTx runs fn and raises t's grant version in one transaction.
func (s *Store) grantTx(ctx context.Context, t registry.TenantID, fn func(*sql.Tx) error) error {
	if s.dialect != Postgres {
		s.writer.lock(false)
		defer s.writer.unlock()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO grant_versions (tenant_id, version) VALUES (?, 1)
		ON CONFLICT (tenant_id) DO UPDATE SET version = grant_versions.version + 1`), t); err != nil {
		return err
	}
	return tx.Commit()
}

// GrantVersion returns t's grant version: 0 before its first grant change.
func (s *Store) GrantVersion(ctx context.Context, t registry.TenantID) (uint64, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT version FROM grant_versions WHERE tenant_id = ?`), t).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return uint64(v), err
}

// Grants lists t's grants with the version they were read at, in one
// transaction, so the pair is consistent.
func (s *Store) Grants(ctx context.Context, t registry.TenantID) ([]access.Grant, uint64, error) {
	opts := &sql.TxOptions{}
	if s.dialect == Postgres {
		// One snapshot for both queries (SQLite's read transaction is one).
		opts = &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	}
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()
	var v int64
	err = tx.QueryRowContext(ctx, s.q(`SELECT version FROM grant_versions WHERE tenant_id = ?`), t).Scan(&v)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, 0, err
	}
	rows, err := tx.QueryContext(ctx, s.q(`SELECT id, principal, role, resource_kind, resource_id, finest, purposes, not_before_ms, not_after_ms
		FROM grants WHERE tenant_id = ? ORDER BY id`), t)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []access.Grant
	for rows.Next() {
		g := access.Grant{Tenant: t}
		var purposes string
		var nb, na int64
		if err := rows.Scan(&g.ID, &g.Principal, &g.Role, &g.Resource.Kind, &g.Resource.ID, &g.Finest, &purposes, &nb, &na); err != nil {
			return nil, 0, err
		}
		for _, p := range strings.Split(purposes, ",") {
			g.Purposes = append(g.Purposes, access.Purpose(p))
		}
		g.NotBefore, g.NotAfter = fromMS(nb), fromMS(na)
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	return out, uint64(v), nil
}
