package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/identity"
	"github.com/custos-iot/custos/internal/registry"
)

var _ identity.Store = (*Store)(nil)

const userCols = `id, tenant_id, name, password, roles, member_of, oidc_issuer, oidc_subject, created_ms, disabled_ms`

// CreateUser inserts a user of an existing tenant. A login name, and an
// OIDC account, is unique within the tenant.
func (s *Store) CreateUser(ctx context.Context, u identity.User) error {
	if _, err := s.Tenant(ctx, u.Tenant); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO users (`+userCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		u.ID, u.Tenant, u.Name, u.PasswordHash, identity.JoinRoles(u.Roles), u.MemberOf, u.Issuer, u.ExternalID, ms(u.Created), ms(u.Disabled))
	if isUnique(err) {
		return errs.E(errs.Exists, "a user with that login name or OIDC account already exists in the tenant")
	}
	return err
}

func scanUser(sc interface{ Scan(...any) error }) (identity.User, error) {
	var u identity.User
	var roles string
	var c, d int64
	err := sc.Scan(&u.ID, &u.Tenant, &u.Name, &u.PasswordHash, &roles, &u.MemberOf, &u.Issuer, &u.ExternalID, &c, &d)
	u.Roles, u.Created, u.Disabled = identity.SplitRoles(roles), fromMS(c), fromMS(d)
	u.HasPassword = u.PasswordHash != ""
	return u, err
}

// User returns one user of a tenant.
func (s *Store) User(ctx context.Context, t registry.TenantID, id access.PrincipalID) (identity.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, s.q(`SELECT `+userCols+` FROM users WHERE tenant_id = ? AND id = ?`), t, id))
	return u, notFound("user", err)
}

// UserByName returns the user of a tenant with this login name.
func (s *Store) UserByName(ctx context.Context, t registry.TenantID, name string) (identity.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, s.q(`SELECT `+userCols+` FROM users WHERE tenant_id = ? AND name = ?`), t, name))
	return u, notFound("user", err)
}

// UserByExternal returns the user of a tenant linked to this OIDC account.
func (s *Store) UserByExternal(ctx context.Context, t registry.TenantID, issuer, externalID string) (identity.User, error) {
	if externalID == "" {
		return identity.User{}, errs.E(errs.NotFound, "user not found")
	}
	u, err := scanUser(s.db.QueryRowContext(ctx, s.q(`SELECT `+userCols+` FROM users WHERE tenant_id = ? AND oidc_issuer = ? AND oidc_subject = ?`), t, issuer, externalID))
	return u, notFound("user", err)
}

// Users lists a tenant's users, oldest first.
func (s *Store) Users(ctx context.Context, t registry.TenantID) ([]identity.User, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+userCols+` FROM users WHERE tenant_id = ? ORDER BY created_ms, id`), t)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []identity.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// SetUserPassword replaces a user's password hash and ends their sessions.
func (s *Store) SetUserPassword(ctx context.Context, t registry.TenantID, id access.PrincipalID, hash string) error {
	return s.userChange(ctx, t, id, `UPDATE users SET password = ? WHERE tenant_id = ? AND id = ?`, hash, t, id)
}

// DisableUser marks a user disabled and ends their sessions. Disabling
// twice keeps the first time.
func (s *Store) DisableUser(ctx context.Context, t registry.TenantID, id access.PrincipalID, at time.Time) error {
	return s.userChange(ctx, t, id, `UPDATE users SET disabled_ms = CASE WHEN disabled_ms = 0 THEN ? ELSE disabled_ms END WHERE tenant_id = ? AND id = ?`, ms(at), t, id)
}

// userChange runs an update of one user and deletes the user's sessions in
// the same transaction.
func (s *Store) userChange(ctx context.Context, t registry.TenantID, id access.PrincipalID, query string, args ...any) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, s.q(query), args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errs.E(errs.NotFound, "user not found")
	}
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM sessions WHERE tenant_id = ? AND user_id = ?`), t, id); err != nil {
		return err
	}
	return tx.Commit()
}

// CreateSession stores a session and deletes the user's expired ones.
func (s *Store) CreateSession(ctx context.Context, v identity.Session) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM sessions WHERE user_id = ? AND expires_ms <= ?`), v.User, ms(v.Created)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO sessions (hash, tenant_id, user_id, created_ms, seen_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?)`),
		v.Hash[:], v.Tenant, v.User, ms(v.Created), ms(v.Seen), ms(v.Expires)); err != nil {
		return err
	}
	return tx.Commit()
}

// Session returns the session with this hash.
func (s *Store) Session(ctx context.Context, hash [32]byte) (identity.Session, error) {
	v := identity.Session{Hash: hash}
	var c, seen, e int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT tenant_id, user_id, created_ms, seen_ms, expires_ms FROM sessions WHERE hash = ?`), hash[:]).Scan(&v.Tenant, &v.User, &c, &seen, &e)
	v.Created, v.Seen, v.Expires = fromMS(c), fromMS(seen), fromMS(e)
	return v, notFound("session", err)
}

// TouchSession records that a session was used.
func (s *Store) TouchSession(ctx context.Context, hash [32]byte, seen time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE sessions SET seen_ms = ? WHERE hash = ? AND seen_ms < ?`), ms(seen), hash[:], ms(seen))
	return err
}

// DeleteSession deletes a session; a missing one is no error.
func (s *Store) DeleteSession(ctx context.Context, hash [32]byte) error {
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM sessions WHERE hash = ?`), hash[:])
	return err
}

const providerCols = `id, tenant_id, issuer, client_id, client_secret, redirect_url, auto_create, default_roles, created_ms`

// CreateProvider inserts an OIDC provider of an existing tenant; an issuer
// is configured at most once per tenant.
func (s *Store) CreateProvider(ctx context.Context, p identity.Provider) error {
	if _, err := s.Tenant(ctx, p.Tenant); err != nil {
		return err
	}
	auto := 0
	if p.AutoCreate {
		auto = 1
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO oidc_providers (`+providerCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		p.ID, p.Tenant, p.Issuer, p.ClientID, p.ClientSecret, p.RedirectURL, auto, identity.JoinRoles(p.DefaultRoles), ms(p.Created))
	if isUnique(err) {
		return errs.E(errs.Exists, "that issuer is already configured for the tenant")
	}
	return err
}

func scanProvider(sc interface{ Scan(...any) error }) (identity.Provider, error) {
	var p identity.Provider
	var auto, c int64
	var roles string
	err := sc.Scan(&p.ID, &p.Tenant, &p.Issuer, &p.ClientID, &p.ClientSecret, &p.RedirectURL, &auto, &roles, &c)
	p.AutoCreate, p.DefaultRoles, p.Created = auto != 0, identity.SplitRoles(roles), fromMS(c)
	return p, err
}

// Provider returns one OIDC provider of a tenant.
func (s *Store) Provider(ctx context.Context, t registry.TenantID, id string) (identity.Provider, error) {
	p, err := scanProvider(s.db.QueryRowContext(ctx, s.q(`SELECT `+providerCols+` FROM oidc_providers WHERE tenant_id = ? AND id = ?`), t, id))
	return p, notFound("OIDC provider", err)
}

// Providers lists a tenant's OIDC providers.
func (s *Store) Providers(ctx context.Context, t registry.TenantID) ([]identity.Provider, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+providerCols+` FROM oidc_providers WHERE tenant_id = ? ORDER BY created_ms, id`), t)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []identity.Provider
	for rows.Next() {
		p, err := scanProvider(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// CreateFlow stores an OIDC login flow and deletes expired ones.
func (s *Store) CreateFlow(ctx context.Context, f identity.Flow) error {
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM oidc_flows WHERE expires_ms <= ?`), ms(s.now())); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO oidc_flows (state_hash, tenant_id, provider_id, nonce, verifier, expires_ms) VALUES (?, ?, ?, ?, ?, ?)`),
		f.StateHash[:], f.Tenant, f.Provider, f.Nonce, f.Verifier, ms(f.Expires))
	return err
}

// TakeFlow returns and deletes the flow with this state hash: of two
// callbacks with the same state, one gets it and the other NotFound.
func (s *Store) TakeFlow(ctx context.Context, stateHash [32]byte) (identity.Flow, error) {
	f := identity.Flow{StateHash: stateHash}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return f, err
	}
	defer tx.Rollback()
	var e int64
	err = tx.QueryRowContext(ctx, s.q(`SELECT tenant_id, provider_id, nonce, verifier, expires_ms FROM oidc_flows WHERE state_hash = ?`), stateHash[:]).Scan(&f.Tenant, &f.Provider, &f.Nonce, &f.Verifier, &e)
	if errors.Is(err, sql.ErrNoRows) {
		return f, errs.E(errs.NotFound, "login flow not found")
	}
	if err != nil {
		return f, err
	}
	f.Expires = fromMS(e)
	res, err := tx.ExecContext(ctx, s.q(`DELETE FROM oidc_flows WHERE state_hash = ?`), stateHash[:])
	if err != nil {
		return f, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return f, errs.E(errs.NotFound, "login flow not found")
	}
	return f, tx.Commit()
}

// SubjectUsers lists the user accounts of tenant t that are subject sub
// (member_of), for the data map's export.
func (s *Store) SubjectUsers(ctx context.Context, t registry.TenantID, sub registry.SubjectID) ([]identity.User, error) {
	us, err := s.Users(ctx, t)
	if err != nil {
		return nil, err
	}
	var out []identity.User
	for _, u := range us {
		if u.MemberOf == sub {
			out = append(out, u)
		}
	}
	return out, nil
}

// EraseSubjectUsers deletes the user accounts of tenant t that are subject
// sub, with their sessions, in one transaction, and returns how many
// accounts it deleted.
func (s *Store) EraseSubjectUsers(ctx context.Context, t registry.TenantID, sub registry.SubjectID) (int, error) {
	if s.dialect != Postgres {
		s.writer.lock(false)
		defer s.writer.unlock()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE tenant_id = ? AND member_of = ?)`), t, sub); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, s.q(`DELETE FROM users WHERE tenant_id = ? AND member_of = ?`), t, sub)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return int(n), tx.Commit()
}
