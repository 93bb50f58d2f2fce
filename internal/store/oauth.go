package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// OAuthApp is an OAuth2 client registered by a tenant: a service using
// client credentials, or an app acting for users through the
// authorization-code flow. Only the hash of its secret is stored.
type OAuthApp struct {
	ID     access.PrincipalID `json:"id"`
	Tenant registry.TenantID  `json:"tenant"`
	Name   string             `json:"name"`
	// Kind is "service" (client credentials) or "user" (authorization
	// code with PKCE, acting for a user).
	Kind string `json:"kind"`
	// Public clients hold no secret (native and browser apps).
	Public       bool      `json:"public"`
	RedirectURIs []string  `json:"redirect_uris,omitempty"`
	Scopes       []string  `json:"scopes"`
	Created      time.Time `json:"created"`
	Revoked      time.Time `json:"revoked,omitzero"`
}

const appCols = `id, tenant_id, name, kind, public, secret_hash, redirect_uris, scopes, created_ms, revoked_ms`

func scanApp(row interface{ Scan(...any) error }) (OAuthApp, []byte, error) {
	var a OAuthApp
	var public int64
	var hash []byte
	var uris, scopes string
	var c, r int64
	err := row.Scan(&a.ID, &a.Tenant, &a.Name, &a.Kind, &public, &hash, &uris, &scopes, &c, &r)
	if err != nil {
		return a, nil, notFound("app", err)
	}
	a.Public = public != 0
	if err := json.Unmarshal([]byte(uris), &a.RedirectURIs); err != nil {
		return a, nil, errs.E(errs.Integrity, "app redirect URIs cannot be decoded")
	}
	a.Scopes = splitScopes(scopes)
	a.Created, a.Revoked = fromMS(c), fromMS(r)
	return a, hash, nil
}

func splitScopes(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, " ")
}

func joinScopes(s []string) string { return strings.Join(s, " ") }

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// CreateOAuthApp stores a new app with the hash of its secret (empty for
// public clients). A second app of the same name in a tenant is refused.
func (s *Store) CreateOAuthApp(ctx context.Context, a OAuthApp, secretHash []byte) error {
	uris, err := json.Marshal(a.RedirectURIs)
	if err != nil {
		return err
	}
	if secretHash == nil {
		secretHash = []byte{}
	}
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO oauth_apps (`+appCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)`),
		a.ID, a.Tenant, a.Name, a.Kind, boolInt(a.Public), secretHash, string(uris), joinScopes(a.Scopes), ms(a.Created))
	if isUnique(err) {
		return errs.E(errs.Exists, "an app of this name already exists in the tenant")
	}
	return err
}

// OAuthApp returns an app and the hash of its secret, revoked or not.
func (s *Store) OAuthApp(ctx context.Context, id access.PrincipalID) (OAuthApp, []byte, error) {
	return scanApp(s.db.QueryRowContext(ctx, s.q(`SELECT `+appCols+` FROM oauth_apps WHERE id = ?`), id))
}

// OAuthApps lists a tenant's apps, revoked ones included, oldest first.
func (s *Store) OAuthApps(ctx context.Context, t registry.TenantID) ([]OAuthApp, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+appCols+` FROM oauth_apps WHERE tenant_id = ? ORDER BY created_ms, id`), t)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OAuthApp
	for rows.Next() {
		a, _, err := scanApp(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// RevokeOAuthApp revokes an app of tenant t with every token family and
// access token it holds. Revoking a revoked app changes nothing.
func (s *Store) RevokeOAuthApp(ctx context.Context, t registry.TenantID, id access.PrincipalID) (OAuthApp, error) {
	now := ms(s.now())
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return OAuthApp{}, err
	}
	defer tx.Rollback()
	a, _, err := scanApp(tx.QueryRowContext(ctx, s.q(`SELECT `+appCols+` FROM oauth_apps WHERE id = ? AND tenant_id = ?`), id, t))
	if err != nil {
		return a, err
	}
	for _, q := range []string{
		`UPDATE oauth_apps SET revoked_ms = ? WHERE id = ? AND revoked_ms = 0`,
		`UPDATE oauth_families SET revoked_ms = ?, revoke_why = 'app revoked' WHERE app_id = ? AND revoked_ms = 0`,
		`UPDATE oauth_access_tokens SET revoked_ms = ? WHERE app_id = ? AND revoked_ms = 0`,
	} {
		if _, err := tx.ExecContext(ctx, s.q(q), now, id); err != nil {
			return a, err
		}
	}
	if a.Revoked.IsZero() {
		a.Revoked = fromMS(now)
	}
	return a, tx.Commit()
}

// OAuthAuthRequest is a pending authorization-code request.
type OAuthAuthRequest struct {
	ID  string
	App access.PrincipalID
	// Params is the request as the authorization server parsed it; the
	// store does not look inside.
	Params []byte
	// User is the user who logged in for it; empty until then.
	User     access.PrincipalID
	AuthTime time.Time
	Created  time.Time
	Expires  time.Time
}

const authReqCols = `id, app_id, params, user_id, auth_time_ms, created_ms, expires_ms`

func scanAuthRequest(row interface{ Scan(...any) error }) (OAuthAuthRequest, error) {
	var r OAuthAuthRequest
	var params string
	var at, c, e int64
	err := row.Scan(&r.ID, &r.App, &params, &r.User, &at, &c, &e)
	r.Params = []byte(params)
	r.AuthTime, r.Created, r.Expires = fromMS(at), fromMS(c), fromMS(e)
	return r, notFound("authorization request", err)
}

// CreateOAuthAuthRequest stores a pending authorization request.
func (s *Store) CreateOAuthAuthRequest(ctx context.Context, r OAuthAuthRequest) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO oauth_auth_requests (id, app_id, params, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)`),
		r.ID, r.App, string(r.Params), ms(r.Created), ms(r.Expires))
	return err
}

// OAuthAuthRequestByID returns a pending authorization request that has not
// expired and whose code has not been issued yet.
func (s *Store) OAuthAuthRequestByID(ctx context.Context, id string) (OAuthAuthRequest, error) {
	return scanAuthRequest(s.db.QueryRowContext(ctx, s.q(`SELECT `+authReqCols+` FROM oauth_auth_requests WHERE id = ? AND expires_ms > ? AND code_hash IS NULL`), id, ms(s.now())))
}

// CompleteOAuthAuthRequest records the user who logged in for a pending
// request. A request completes once: a second login for it is refused.
func (s *Store) CompleteOAuthAuthRequest(ctx context.Context, id string, user access.PrincipalID, authTime time.Time) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE oauth_auth_requests SET user_id = ?, auth_time_ms = ? WHERE id = ? AND user_id = '' AND expires_ms > ? AND code_hash IS NULL`),
		user, ms(authTime), id, ms(s.now()))
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errs.E(errs.NotFound, "authorization request not found, expired or already completed")
	}
	return nil
}

// SaveOAuthCode records the hash of the code issued for a completed request.
// A request gets one code.
func (s *Store) SaveOAuthCode(ctx context.Context, id string, codeHash [32]byte) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE oauth_auth_requests SET code_hash = ? WHERE id = ? AND user_id <> '' AND code_hash IS NULL AND expires_ms > ?`),
		codeHash[:], id, ms(s.now()))
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errs.E(errs.NotFound, "authorization request not found, not completed, expired or already holds a code")
	}
	return nil
}

// ClaimOAuthCode returns the request a code was issued for and marks the
// code used, so that it can be exchanged once only, also when two
// exchanges race. An unknown, expired or used code is refused.
func (s *Store) ClaimOAuthCode(ctx context.Context, codeHash [32]byte) (OAuthAuthRequest, error) {
	now := ms(s.now())
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return OAuthAuthRequest{}, err
	}
	defer tx.Rollback()
	var used int64
	r, err := scanAuthRequest(withExtra{tx.QueryRowContext(ctx, s.q(`SELECT `+authReqCols+`, code_used_ms FROM oauth_auth_requests WHERE code_hash = ?`), codeHash[:]), []any{&used}})
	switch {
	case err != nil:
		return r, errs.E(errs.Unauthenticated, "unknown authorization code")
	case used != 0:
		return r, errs.E(errs.Unauthenticated, "authorization code already used")
	case r.Expires.UnixMilli() <= now:
		return r, errs.E(errs.Unauthenticated, "authorization code expired")
	}
	res, err := tx.ExecContext(ctx, s.q(`UPDATE oauth_auth_requests SET code_used_ms = ? WHERE code_hash = ? AND code_used_ms = 0`), now, codeHash[:])
	if err != nil {
		return r, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return r, errs.E(errs.Unauthenticated, "authorization code already used")
	}
	return r, tx.Commit()
}

// withExtra scans a row's trailing columns into extra.
type withExtra struct {
	row   *sql.Row
	extra []any
}

func (w withExtra) Scan(dst ...any) error { return w.row.Scan(append(dst, w.extra...)...) }

// DeleteOAuthAuthRequest forgets a request.
func (s *Store) DeleteOAuthAuthRequest(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM oauth_auth_requests WHERE id = ?`), id)
	return err
}

// OAuthAccessToken is an issued access token, known by its ID.
type OAuthAccessToken struct {
	ID     string
	App    access.PrincipalID
	Tenant registry.TenantID
	// User is the user the app acts for; empty for client credentials.
	User access.PrincipalID
	// Family is the token family of a refresh-token grant; empty if none.
	Family  string
	Scopes  []string
	Created time.Time
	Expires time.Time
	// Revoked is set if the token, its family or its app was revoked.
	Revoked time.Time
}

// CreateOAuthAccessToken stores an access token issued without a refresh
// token (client credentials, or a code exchange without offline access).
func (s *Store) CreateOAuthAccessToken(ctx context.Context, t OAuthAccessToken) error {
	return s.insertAccessToken(ctx, s.db, t)
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (s *Store) insertAccessToken(ctx context.Context, db execer, t OAuthAccessToken) error {
	_, err := db.ExecContext(ctx, s.q(`INSERT INTO oauth_access_tokens (id, app_id, tenant_id, user_id, family_id, scopes, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		t.ID, t.App, t.Tenant, t.User, t.Family, joinScopes(t.Scopes), ms(t.Created), ms(t.Expires))
	return err
}

// OAuthAccessTokenByID returns an access token with its revocation state,
// which includes the revocation of its family and of its app: one query,
// made on every request an app's token authenticates.
func (s *Store) OAuthAccessTokenByID(ctx context.Context, id string) (OAuthAccessToken, error) {
	var t OAuthAccessToken
	var scopes string
	var c, e, r, ar, fr int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT t.id, t.app_id, t.tenant_id, t.user_id, t.family_id, t.scopes, t.created_ms, t.expires_ms, t.revoked_ms, a.revoked_ms, COALESCE(f.revoked_ms, 0)
		FROM oauth_access_tokens t JOIN oauth_apps a ON a.id = t.app_id LEFT JOIN oauth_families f ON f.id = t.family_id WHERE t.id = ?`), id).
		Scan(&t.ID, &t.App, &t.Tenant, &t.User, &t.Family, &scopes, &c, &e, &r, &ar, &fr)
	if err != nil {
		return t, notFound("access token", err)
	}
	t.Scopes = splitScopes(scopes)
	t.Created, t.Expires = fromMS(c), fromMS(e)
	t.Revoked = fromMS(firstNonZero(r, ar, fr))
	return t, nil
}

func firstNonZero(vs ...int64) int64 {
	var m int64
	for _, v := range vs {
		if v != 0 && (m == 0 || v < m) {
			m = v
		}
	}
	return m
}

// RevokeOAuthAccessToken revokes an access token of app. A token of
// another app, or none, is reported as not found.
func (s *Store) RevokeOAuthAccessToken(ctx context.Context, id string, app access.PrincipalID) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE oauth_access_tokens SET revoked_ms = ? WHERE id = ? AND app_id = ? AND revoked_ms = 0`), ms(s.now()), id, app)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errs.E(errs.NotFound, "access token not found")
	}
	return nil
}

// OAuthFamily is the lineage of tokens from one authorization.
type OAuthFamily struct {
	ID       string
	App      access.PrincipalID
	Tenant   registry.TenantID
	User     access.PrincipalID
	Scopes   []string
	AuthTime time.Time
	Created  time.Time
	// Revoked is set if the family or its app was revoked.
	Revoked time.Time
}

// OAuthRefreshToken is a refresh token, known by the hash of its value.
type OAuthRefreshToken struct {
	ID      string
	Family  string
	Scopes  []string
	Created time.Time
	Expires time.Time
	// Used is when the token was rotated; a used token must not be
	// presented again.
	Used time.Time
}

func (s *Store) insertRefreshToken(ctx context.Context, db execer, rt OAuthRefreshToken, hash [32]byte) error {
	_, err := db.ExecContext(ctx, s.q(`INSERT INTO oauth_refresh_tokens (hash, id, family_id, scopes, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?)`),
		hash[:], rt.ID, rt.Family, joinScopes(rt.Scopes), ms(rt.Created), ms(rt.Expires))
	return err
}

// CreateOAuthFamily starts a token family with its first refresh and
// access tokens, all or nothing.
func (s *Store) CreateOAuthFamily(ctx context.Context, f OAuthFamily, rt OAuthRefreshToken, rtHash [32]byte, at OAuthAccessToken) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO oauth_families (id, app_id, tenant_id, user_id, scopes, auth_time_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		f.ID, f.App, f.Tenant, f.User, joinScopes(f.Scopes), ms(f.AuthTime), ms(f.Created)); err != nil {
		return err
	}
	if err := s.insertRefreshToken(ctx, tx, rt, rtHash); err != nil {
		return err
	}
	if err := s.insertAccessToken(ctx, tx, at); err != nil {
		return err
	}
	return tx.Commit()
}

// OAuthRefreshTokenByHash returns a refresh token and its family (whose
// Revoked includes its app's revocation), used or not.
func (s *Store) OAuthRefreshTokenByHash(ctx context.Context, hash [32]byte) (OAuthRefreshToken, OAuthFamily, error) {
	var rt OAuthRefreshToken
	var f OAuthFamily
	var rs, fs string
	var rc, re, ru, fa, fc, fr, ar int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT r.id, r.family_id, r.scopes, r.created_ms, r.expires_ms, r.used_ms,
		f.id, f.app_id, f.tenant_id, f.user_id, f.scopes, f.auth_time_ms, f.created_ms, f.revoked_ms, a.revoked_ms
		FROM oauth_refresh_tokens r JOIN oauth_families f ON f.id = r.family_id JOIN oauth_apps a ON a.id = f.app_id WHERE r.hash = ?`), hash[:]).
		Scan(&rt.ID, &rt.Family, &rs, &rc, &re, &ru, &f.ID, &f.App, &f.Tenant, &f.User, &fs, &fa, &fc, &fr, &ar)
	if err != nil {
		return rt, f, notFound("refresh token", err)
	}
	rt.Scopes, f.Scopes = splitScopes(rs), splitScopes(fs)
	rt.Created, rt.Expires, rt.Used = fromMS(rc), fromMS(re), fromMS(ru)
	f.AuthTime, f.Created, f.Revoked = fromMS(fa), fromMS(fc), fromMS(firstNonZero(fr, ar))
	return rt, f, nil
}

// ErrRefreshReused is returned (wrapped, kind Conflict) by
// RotateOAuthRefreshToken when the token was already rotated: the caller
// must revoke the family.
var ErrRefreshReused = errors.New("refresh token already used")

// RotateOAuthRefreshToken marks the refresh token with oldHash used and
// stores its successor and a new access token in the same family, all or
// nothing. If the old token was used already (two rotations raced, or a
// stolen token is replayed) or its family is revoked, nothing is stored
// and the error says which.
func (s *Store) RotateOAuthRefreshToken(ctx context.Context, oldHash [32]byte, rt OAuthRefreshToken, rtHash [32]byte, at OAuthAccessToken) error {
	now := ms(s.now())
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, s.q(`UPDATE oauth_refresh_tokens SET used_ms = ? WHERE hash = ? AND family_id = ? AND used_ms = 0 AND expires_ms > ?
		AND family_id IN (SELECT id FROM oauth_families WHERE revoked_ms = 0)`), now, oldHash[:], rt.Family, now)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errs.E(errs.Conflict, ErrRefreshReused)
	}
	if err := s.insertRefreshToken(ctx, tx, rt, rtHash); err != nil {
		return err
	}
	if err := s.insertAccessToken(ctx, tx, at); err != nil {
		return err
	}
	return tx.Commit()
}

// RevokeOAuthFamily revokes a token family and every access token in it.
// why is recorded for the operator ("refresh token reused", "revoked by
// the app"). Revoking a revoked family changes nothing.
func (s *Store) RevokeOAuthFamily(ctx context.Context, id, why string) error {
	now := ms(s.now())
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE oauth_families SET revoked_ms = ?, revoke_why = ? WHERE id = ? AND revoked_ms = 0`), now, why, id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE oauth_access_tokens SET revoked_ms = ? WHERE family_id = ? AND revoked_ms = 0`), now, id); err != nil {
		return err
	}
	return tx.Commit()
}

// RevokeOAuthUserFamilies revokes every token family of app acting for
// user (a logout).
func (s *Store) RevokeOAuthUserFamilies(ctx context.Context, app, user access.PrincipalID) error {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id FROM oauth_families WHERE app_id = ? AND user_id = ? AND revoked_ms = 0`), app, user)
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		if err := s.RevokeOAuthFamily(ctx, id, "session terminated"); err != nil {
			return err
		}
	}
	return nil
}

// PruneOAuth deletes what expired before t: access tokens, authorization
// requests and refresh tokens. Families stay, as evidence of what was
// issued and revoked.
func (s *Store) PruneOAuth(ctx context.Context, t time.Time) (int64, error) {
	var total int64
	for _, q := range []string{
		`DELETE FROM oauth_access_tokens WHERE expires_ms < ?`,
		`DELETE FROM oauth_auth_requests WHERE expires_ms < ?`,
		`DELETE FROM oauth_refresh_tokens WHERE expires_ms < ?`,
	} {
		res, err := s.db.ExecContext(ctx, s.q(q), ms(t))
		if err != nil {
			return total, err
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}
