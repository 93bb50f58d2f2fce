package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/store"
)

// storage implements op.Storage (and op.ClientCredentialsStorage) on the
// hub's store. Unknown clients and wrong secrets are plain errors (op
// answers invalid_client); only database failures are server errors.
type storage struct {
	s   *Server
	key *signingKey
}

var (
	_ op.Storage                        = (*storage)(nil)
	_ op.ClientCredentialsStorage       = (*storage)(nil)
	_ op.CanGetPrivateClaimsFromRequest = (*storage)(nil)
)

var (
	errUnknownClient = errors.New("unknown client or wrong secret")
	errRevokedClient = errors.New("app revoked")
)

func (st *storage) now() time.Time { return st.s.cfg.Now() }

// app loads an app that may take part in a flow: known and not revoked.
func (st *storage) app(ctx context.Context, id string) (store.OAuthApp, []byte, error) {
	if !access.PrincipalID(id).Valid() || !strings.HasPrefix(id, "app_") {
		return store.OAuthApp{}, nil, errUnknownClient
	}
	a, hash, err := st.s.cfg.Store.OAuthApp(ctx, access.PrincipalID(id))
	if errs.Is(errs.NotFound, err) {
		return a, nil, errUnknownClient
	}
	if err != nil {
		return a, nil, oidc.ErrServerError().WithParent(err)
	}
	if !a.Revoked.IsZero() {
		return a, nil, errRevokedClient
	}
	return a, hash, nil
}

// clientErr makes an app lookup's refusal an invalid_client error (op
// would answer a plain error from some grants as a server error).
func clientErr(err error) error {
	var oe *oidc.Error
	if errors.As(err, &oe) {
		return err
	}
	return oidc.ErrInvalidClient().WithParent(err)
}

func (st *storage) client(a store.OAuthApp) *client {
	return &client{app: a, issuer: st.s.cfg.Issuer, idTTL: st.s.cfg.AccessTTL}
}

func (st *storage) audience(app access.PrincipalID) []string {
	return []string{string(app), st.s.cfg.Audience}
}

// --- clients ---

func (st *storage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	a, _, err := st.app(ctx, id)
	if err != nil {
		return nil, clientErr(err)
	}
	return st.client(a), nil
}

func (st *storage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	a, hash, err := st.app(ctx, id)
	if err != nil {
		return err
	}
	if a.Public || !checkSecret(hash, secret) {
		return errUnknownClient
	}
	return nil
}

func (st *storage) ClientCredentials(ctx context.Context, id, secret string) (op.Client, error) {
	if err := st.AuthorizeClientIDSecret(ctx, id, secret); err != nil {
		return nil, err
	}
	a, _, err := st.app(ctx, id)
	if err != nil {
		return nil, err
	}
	if a.Kind != KindService {
		return nil, errors.New("only service apps use client credentials")
	}
	return st.client(a), nil
}

func (st *storage) ClientCredentialsTokenRequest(ctx context.Context, id string, scopes []string) (op.TokenRequest, error) {
	a, _, err := st.app(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(scopes) == 0 {
		scopes = a.Scopes
	}
	for _, s := range scopes {
		if !slices.Contains(a.Scopes, s) {
			return nil, oidc.ErrInvalidScope().WithDescription("the app is not registered for scope %q", truncate(s))
		}
	}
	return &serviceRequest{app: a, scopes: scopes, audience: st.audience(a.ID)}, nil
}

// --- authorization requests ---

func (st *storage) CreateAuthRequest(ctx context.Context, r *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	a, _, err := st.app(ctx, r.ClientID)
	if err != nil {
		return nil, oidc.ErrInvalidClient().WithParent(err)
	}
	if a.Kind != KindUser {
		return nil, oidc.ErrUnauthorizedClient().WithDescription("only user apps use the authorization-code flow")
	}
	if r.CodeChallenge == "" || r.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE is required: send code_challenge with code_challenge_method S256")
	}
	if r.ResponseType != oidc.ResponseTypeCode {
		return nil, oidc.ErrInvalidRequest().WithDescription("only response_type code is supported")
	}
	if !slices.ContainsFunc(r.Scopes, func(s string) bool { return slices.Contains(a.Scopes, s) }) {
		return nil, oidc.ErrInvalidScope().WithDescription("none of the requested scopes is registered for the app")
	}
	id, err := randomToken(st.s.cfg.Rand, "oar_")
	if err != nil {
		return nil, err
	}
	p := authParams{
		Tenant: a.Tenant, Scopes: r.Scopes, ResponseType: r.ResponseType, ResponseMode: r.ResponseMode,
		RedirectURI: r.RedirectURI, State: r.State, Nonce: r.Nonce, Challenge: r.CodeChallenge, ChallengeMeth: r.CodeChallengeMethod,
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	now := st.now().UTC()
	row := store.OAuthAuthRequest{ID: id, App: a.ID, Params: b, Created: now, Expires: now.Add(st.s.cfg.AuthRequestTTL)}
	if err := st.s.cfg.Store.CreateOAuthAuthRequest(ctx, row); err != nil {
		return nil, err
	}
	return st.authRequest(row)
}

func (st *storage) authRequest(row store.OAuthAuthRequest) (*authRequest, error) {
	r := &authRequest{id: row.ID, app: row.App, user: row.User, authTime: row.AuthTime, audience: st.audience(row.App)}
	if err := json.Unmarshal(row.Params, &r.p); err != nil {
		return nil, errs.E(errs.Integrity, "stored authorization request cannot be decoded")
	}
	return r, nil
}

func (st *storage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	row, err := st.s.cfg.Store.OAuthAuthRequestByID(ctx, id)
	if err != nil {
		return nil, err
	}
	return st.authRequest(row)
}

func hashString(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// AuthRequestByCode claims the code: it can be exchanged once, also if the
// exchange then fails (a wrong PKCE verifier burns the code).
func (st *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	row, err := st.s.cfg.Store.ClaimOAuthCode(ctx, hashString(code))
	if err != nil {
		return nil, err
	}
	return st.authRequest(row)
}

func (st *storage) SaveAuthCode(ctx context.Context, id, code string) error {
	return st.s.cfg.Store.SaveOAuthCode(ctx, id, hashString(code))
}

func (st *storage) DeleteAuthRequest(ctx context.Context, id string) error {
	return st.s.cfg.Store.DeleteOAuthAuthRequest(ctx, id)
}

// --- tokens ---

func (st *storage) newAccessToken(app store.OAuthApp, tenant registry.TenantID, user access.PrincipalID, family string, scopes []string) (store.OAuthAccessToken, error) {
	id, err := registry.NewID(st.s.cfg.Rand, "oat")
	if err != nil {
		return store.OAuthAccessToken{}, err
	}
	now := st.now().UTC()
	return store.OAuthAccessToken{
		ID: id, App: app.ID, Tenant: tenant, User: user, Family: family,
		Scopes: appScopes(scopes), Created: now, Expires: now.Add(st.s.cfg.AccessTTL),
	}, nil
}

// appScopes drops the OpenID scopes (openid, offline_access, ...), which
// say nothing about what the token may read.
func appScopes(scopes []string) []string {
	var out []string
	for _, s := range scopes {
		if CheckScope(s) == nil {
			out = append(out, s)
		}
	}
	return out
}

func (st *storage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	var at store.OAuthAccessToken
	var err error
	switch r := req.(type) {
	case *serviceRequest:
		at, err = st.newAccessToken(r.app, r.app.Tenant, "", "", r.scopes)
	case *authRequest:
		// A code exchange without offline_access: no refresh token.
		a, _, aerr := st.app(ctx, string(r.app))
		if aerr != nil {
			return "", time.Time{}, clientErr(aerr)
		}
		at, err = st.newAccessToken(a, a.Tenant, r.user, "", r.p.Scopes)
	default:
		return "", time.Time{}, oidc.ErrUnsupportedGrantType()
	}
	if err != nil {
		return "", time.Time{}, err
	}
	if err := st.s.cfg.Store.CreateOAuthAccessToken(ctx, at); err != nil {
		return "", time.Time{}, err
	}
	return at.ID, at.Expires, nil
}

func (st *storage) newRefreshToken(family string, scopes []string) (store.OAuthRefreshToken, string, error) {
	tok, err := randomToken(st.s.cfg.Rand, "crt_")
	if err != nil {
		return store.OAuthRefreshToken{}, "", err
	}
	id, err := registry.NewID(st.s.cfg.Rand, "ort")
	if err != nil {
		return store.OAuthRefreshToken{}, "", err
	}
	now := st.now().UTC()
	return store.OAuthRefreshToken{ID: id, Family: family, Scopes: scopes, Created: now, Expires: now.Add(st.s.cfg.RefreshTTL)}, tok, nil
}

func (st *storage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	switch r := req.(type) {
	case *authRequest:
		a, _, err := st.app(ctx, string(r.app))
		if err != nil {
			return "", "", time.Time{}, clientErr(err)
		}
		fid, err := registry.NewID(st.s.cfg.Rand, "otf")
		if err != nil {
			return "", "", time.Time{}, err
		}
		f := store.OAuthFamily{ID: fid, App: a.ID, Tenant: a.Tenant, User: r.user, Scopes: r.p.Scopes, AuthTime: r.authTime, Created: st.now().UTC()}
		rt, tok, err := st.newRefreshToken(fid, r.p.Scopes)
		if err != nil {
			return "", "", time.Time{}, err
		}
		at, err := st.newAccessToken(a, a.Tenant, r.user, fid, r.p.Scopes)
		if err != nil {
			return "", "", time.Time{}, err
		}
		if err := st.s.cfg.Store.CreateOAuthFamily(ctx, f, rt, hashString(tok), at); err != nil {
			return "", "", time.Time{}, err
		}
		return at.ID, tok, at.Expires, nil
	case *refreshRequest:
		a, _, err := st.app(ctx, string(r.family.App))
		if err != nil {
			return "", "", time.Time{}, clientErr(err)
		}
		rt, tok, err := st.newRefreshToken(r.family.ID, r.scopes)
		if err != nil {
			return "", "", time.Time{}, err
		}
		at, err := st.newAccessToken(a, r.family.Tenant, r.family.User, r.family.ID, r.scopes)
		if err != nil {
			return "", "", time.Time{}, err
		}
		err = st.s.cfg.Store.RotateOAuthRefreshToken(ctx, hashString(current), rt, hashString(tok), at)
		if errs.Is(errs.Conflict, err) {
			// Lost a race with another use of the same token: reuse.
			st.reused(ctx, r.family)
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("refresh token already used; every token of this authorization is revoked")
		}
		if err != nil {
			return "", "", time.Time{}, err
		}
		return at.ID, tok, at.Expires, nil
	}
	return "", "", time.Time{}, oidc.ErrUnsupportedGrantType()
}

// reused revokes a family whose refresh token was presented twice.
func (st *storage) reused(ctx context.Context, f store.OAuthFamily) {
	st.s.log.Warn("oauth: refresh token reused; token family revoked", "app", f.App, "family", f.ID)
	if err := st.s.cfg.Store.RevokeOAuthFamily(ctx, f.ID, "refresh token reused"); err != nil {
		st.s.log.Error("oauth: revoking a token family failed", "family", f.ID, "err", err)
	}
}

func (st *storage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	rt, f, err := st.s.cfg.Store.OAuthRefreshTokenByHash(ctx, hashString(token))
	if err != nil {
		return nil, errors.New("unknown refresh token")
	}
	switch {
	case !f.Revoked.IsZero():
		return nil, errors.New("refresh token revoked")
	case !rt.Used.IsZero():
		st.reused(ctx, f)
		return nil, errors.New("refresh token already used; every token of this authorization is revoked")
	case !st.now().Before(rt.Expires):
		return nil, errors.New("refresh token expired")
	}
	return &refreshRequest{rt: rt, family: f, scopes: rt.Scopes, audience: st.audience(f.App)}, nil
}

// refreshPrefix marks the token IDs GetRefreshTokenInfo hands to
// RevokeToken: revoking a refresh token revokes its family.
const refreshPrefix = "family:"

func (st *storage) GetRefreshTokenInfo(ctx context.Context, clientID, token string) (string, string, error) {
	_, f, err := st.s.cfg.Store.OAuthRefreshTokenByHash(ctx, hashString(token))
	if err != nil || string(f.App) != clientID {
		return "", "", op.ErrInvalidRefreshToken
	}
	return string(f.User), refreshPrefix + f.ID, nil
}

func (st *storage) RevokeToken(ctx context.Context, idOrToken, _, clientID string) *oidc.Error {
	var err error
	if fid, ok := strings.CutPrefix(idOrToken, refreshPrefix); ok {
		err = st.s.cfg.Store.RevokeOAuthFamily(ctx, fid, "revoked by the app")
	} else {
		err = st.s.cfg.Store.RevokeOAuthAccessToken(ctx, idOrToken, access.PrincipalID(clientID))
	}
	if err != nil && !errs.Is(errs.NotFound, err) {
		return oidc.ErrServerError().WithParent(err)
	}
	// Unknown tokens are not an error (RFC 7009 section 2.2).
	return nil
}

func (st *storage) TerminateSession(ctx context.Context, userID, clientID string) error {
	return st.s.cfg.Store.RevokeOAuthUserFamilies(ctx, access.PrincipalID(clientID), access.PrincipalID(userID))
}

// --- keys ---

func (st *storage) SigningKey(context.Context) (op.SigningKey, error) { return st.key, nil }
func (st *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.ES256}, nil
}
func (st *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{st.key}}, nil
}

// --- claims and introspection ---

func (st *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (st *storage) SetUserinfoFromToken(context.Context, *oidc.UserInfo, string, string, string) error {
	return errors.New("userinfo is not served")
}

// SetIntrospectionFromToken answers a resource server's introspection
// from the store: a token is active only while stored, unexpired and
// unrevoked, and only to its own app.
func (st *storage) SetIntrospectionFromToken(ctx context.Context, resp *oidc.IntrospectionResponse, tokenID, _, clientID string) error {
	t, err := st.s.cfg.Store.OAuthAccessTokenByID(ctx, tokenID)
	if err != nil || !t.Revoked.IsZero() || !st.now().Before(t.Expires) || string(t.App) != clientID {
		return errors.New("token is not active")
	}
	resp.Active = true
	resp.Scope = t.Scopes
	resp.ClientID = string(t.App)
	resp.Subject = string(t.App)
	if t.User != "" {
		resp.Subject = string(t.User)
	}
	resp.Expiration = oidc.FromTime(t.Expires)
	resp.IssuedAt = oidc.FromTime(t.Created)
	resp.JWTID = t.ID
	resp.Claims = map[string]any{claimTenant: string(t.Tenant)}
	return nil
}

// claimTenant names the tenant in access tokens (informational: the
// Authenticator takes the tenant from the store).
const claimTenant = "custos_tenant"

func (st *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (st *storage) GetPrivateClaimsFromRequest(_ context.Context, req op.TokenRequest, _ []string) (map[string]any, error) {
	var t registry.TenantID
	switch r := req.(type) {
	case *serviceRequest:
		t = r.app.Tenant
	case *authRequest:
		t = r.p.Tenant
	case *refreshRequest:
		t = r.family.Tenant
	}
	return map[string]any{claimTenant: string(t), "scope": strings.Join(appScopes(req.GetScopes()), " ")}, nil
}

func (st *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("JWT client authentication is not supported")
}

func (st *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("the JWT profile grant is not supported")
}

func (st *storage) Health(ctx context.Context) error { return st.s.cfg.Store.DB().PingContext(ctx) }
