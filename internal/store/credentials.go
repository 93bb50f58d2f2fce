package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

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
	ID      string
	Name    string
	Created time.Time
	Expires time.Time // zero: does not expire
	Revoked time.Time // zero: not revoked
}

// CreateOperatorToken stores an operator token's hash.
func (s *Store) CreateOperatorToken(ctx context.Context, t OperatorToken, hash [32]byte) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO operator_tokens (id, name, hash, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)`), t.ID, t.Name, hash[:], ms(t.Created), ms(t.Expires))
	return err
}

// OperatorTokenByHash finds the operator token with this hash.
func (s *Store) OperatorTokenByHash(ctx context.Context, hash [32]byte) (OperatorToken, error) {
	var t OperatorToken
	var c, e, r int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT id, name, created_ms, expires_ms, revoked_ms FROM operator_tokens WHERE hash = ?`), hash[:]).Scan(&t.ID, &t.Name, &c, &e, &r)
	t.Created, t.Expires, t.Revoked = fromMS(c), fromMS(e), fromMS(r)
	return t, notFound("operator token", err)
}

// OperatorTokenCount counts operator tokens, revoked ones included.
func (s *Store) OperatorTokenCount(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM operator_tokens`).Scan(&n)
	return n, err
}
