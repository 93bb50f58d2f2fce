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

// CreateEnrolToken stores the hash of a single-use enrolment token for a connector.
func (s *Store) CreateEnrolToken(ctx context.Context, hash [32]byte, connector registry.ConnectorID, expires time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO enrol_tokens (hash, connector_id, created_ms, expires_ms) VALUES (?, ?, ?, ?)`), hash[:], connector, ms(s.now()), ms(expires))
	return err
}

// ConsumeEnrolToken marks the token with this hash used and returns its
// connector. Unknown, expired and already used tokens are refused with an
// error saying which; a token can be consumed exactly once, also when two
// enrolments race.
func (s *Store) ConsumeEnrolToken(ctx context.Context, hash [32]byte) (registry.Connector, error) {
	now := ms(s.now())
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return registry.Connector{}, err
	}
	defer tx.Rollback()
	var conn string
	var expires, used int64
	err = tx.QueryRowContext(ctx, s.q(`SELECT connector_id, expires_ms, used_ms FROM enrol_tokens WHERE hash = ?`), hash[:]).Scan(&conn, &expires, &used)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return registry.Connector{}, errs.E(errs.Unauthenticated, "unknown enrolment token")
	case err != nil:
		return registry.Connector{}, err
	case used != 0:
		return registry.Connector{}, errs.E(errs.Unauthenticated, "enrolment token already used; ask the operator for a new one")
	case expires <= now:
		return registry.Connector{}, errs.E(errs.Unauthenticated, "enrolment token expired; ask the operator for a new one")
	}
	res, err := tx.ExecContext(ctx, s.q(`UPDATE enrol_tokens SET used_ms = ? WHERE hash = ? AND used_ms = 0`), now, hash[:])
	if err != nil {
		return registry.Connector{}, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return registry.Connector{}, errs.E(errs.Unauthenticated, "enrolment token already used; ask the operator for a new one")
	}
	c, err := scanConnector(tx.QueryRowContext(ctx, s.q(`SELECT `+connectorCols+` FROM connectors WHERE id = ?`), conn))
	if err != nil {
		return registry.Connector{}, err
	}
	if c.Status == registry.ConnectorRevoked {
		return registry.Connector{}, errs.E(errs.Forbidden, "connector is revoked")
	}
	return c, tx.Commit()
}

// RecordCertificate notes a certificate issued to a connector and makes
// the connector active. how is "enrol" or "renew".
func (s *Store) RecordCertificate(ctx context.Context, connector registry.ConnectorID, serial string, expires time.Time, how string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO certificates (serial, connector_id, issued_ms, expires_ms, how) VALUES (?, ?, ?, ?, ?)`), serial, connector, ms(s.now()), ms(expires), how); err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, s.q(`UPDATE connectors SET status = ?, cert_expiry_ms = ? WHERE id = ? AND status <> ?`), registry.ConnectorActive, ms(expires), connector, registry.ConnectorRevoked)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errs.E(errs.Forbidden, "connector is revoked")
	}
	return tx.Commit()
}

// OperatorToken is an API credential of a hub operator. Only its hash is stored.
type OperatorToken struct {
	ID   string
	Name string
	// Tenant, if set, scopes the token to one tenant, where it holds Roles.
	// A token without a tenant is a platform operator's.
	Tenant  registry.TenantID
	Roles   []access.Role
	Created time.Time
	Expires time.Time // zero: does not expire
	Revoked time.Time // zero: not revoked
}

// CreateOperatorToken stores an operator token's hash.
func (s *Store) CreateOperatorToken(ctx context.Context, t OperatorToken, hash [32]byte) error {
	roles := make([]string, len(t.Roles))
	for i, r := range t.Roles {
		roles[i] = string(r)
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO operator_tokens (id, name, hash, created_ms, expires_ms, tenant_id, roles) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		t.ID, t.Name, hash[:], ms(t.Created), ms(t.Expires), t.Tenant, strings.Join(roles, ","))
	return err
}

// OperatorTokens lists the operator tokens (never their secrets).
func (s *Store) OperatorTokens(ctx context.Context) ([]OperatorToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, created_ms, expires_ms, revoked_ms, tenant_id, roles FROM operator_tokens ORDER BY created_ms, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OperatorToken
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeOperatorToken revokes a token at now; its next request is refused.
func (s *Store) RevokeOperatorToken(ctx context.Context, id string, now time.Time) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE operator_tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms = 0`), ms(now), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errs.E(errs.NotFound, "no such token, or already revoked")
	}
	return nil
}

func scanToken(row interface{ Scan(...any) error }) (OperatorToken, error) {
	var t OperatorToken
	var c, e, r int64
	var roles string
	err := row.Scan(&t.ID, &t.Name, &c, &e, &r, &t.Tenant, &roles)
	t.Created, t.Expires, t.Revoked = fromMS(c), fromMS(e), fromMS(r)
	for _, x := range strings.Split(roles, ",") {
		if x != "" {
			t.Roles = append(t.Roles, access.Role(x))
		}
	}
	return t, err
}

// OperatorTokenByHash finds the operator token with this hash.
func (s *Store) OperatorTokenByHash(ctx context.Context, hash [32]byte) (OperatorToken, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, s.q(`SELECT id, name, created_ms, expires_ms, revoked_ms, tenant_id, roles FROM operator_tokens WHERE hash = ?`), hash[:]))
	return t, notFound("operator token", err)
}

// OperatorTokenCount counts operator tokens, revoked ones included.
func (s *Store) OperatorTokenCount(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM operator_tokens`).Scan(&n)
	return n, err
}
