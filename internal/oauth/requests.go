package oauth

import (
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/store"
)

// serviceRequest is a client-credentials token request (op.TokenRequest).
type serviceRequest struct {
	app      store.OAuthApp
	scopes   []string
	audience []string
}

func (r *serviceRequest) GetSubject() string    { return string(r.app.ID) }
func (r *serviceRequest) GetAudience() []string { return r.audience }
func (r *serviceRequest) GetScopes() []string   { return r.scopes }

// authParams is what the store keeps of an authorization request.
type authParams struct {
	Tenant        registry.TenantID        `json:"tenant"`
	Scopes        []string                 `json:"scopes"`
	ResponseType  oidc.ResponseType        `json:"response_type"`
	ResponseMode  oidc.ResponseMode        `json:"response_mode,omitempty"`
	RedirectURI   string                   `json:"redirect_uri"`
	State         string                   `json:"state,omitempty"`
	Nonce         string                   `json:"nonce,omitempty"`
	Challenge     string                   `json:"code_challenge"`
	ChallengeMeth oidc.CodeChallengeMethod `json:"code_challenge_method"`
}

// authRequest is a pending authorization-code request (op.AuthRequest).
type authRequest struct {
	id       string
	app      access.PrincipalID
	p        authParams
	user     access.PrincipalID
	authTime time.Time
	audience []string
}

func (r *authRequest) GetID() string          { return r.id }
func (r *authRequest) GetACR() string         { return "" }
func (r *authRequest) GetAMR() []string       { return nil }
func (r *authRequest) GetAudience() []string  { return r.audience }
func (r *authRequest) GetAuthTime() time.Time { return r.authTime }
func (r *authRequest) GetClientID() string    { return string(r.app) }
func (r *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	return &oidc.CodeChallenge{Challenge: r.p.Challenge, Method: r.p.ChallengeMeth}
}
func (r *authRequest) GetNonce() string                   { return r.p.Nonce }
func (r *authRequest) GetRedirectURI() string             { return r.p.RedirectURI }
func (r *authRequest) GetResponseType() oidc.ResponseType { return r.p.ResponseType }
func (r *authRequest) GetResponseMode() oidc.ResponseMode { return r.p.ResponseMode }
func (r *authRequest) GetScopes() []string                { return r.p.Scopes }
func (r *authRequest) GetState() string                   { return r.p.State }
func (r *authRequest) GetSubject() string                 { return string(r.user) }
func (r *authRequest) Done() bool                         { return r.user != "" }

// refreshRequest is a refresh-token grant (op.RefreshTokenRequest).
type refreshRequest struct {
	rt       store.OAuthRefreshToken
	family   store.OAuthFamily
	scopes   []string
	audience []string
}

func (r *refreshRequest) GetAMR() []string                 { return nil }
func (r *refreshRequest) GetAudience() []string            { return r.audience }
func (r *refreshRequest) GetAuthTime() time.Time           { return r.family.AuthTime }
func (r *refreshRequest) GetClientID() string              { return string(r.family.App) }
func (r *refreshRequest) GetScopes() []string              { return r.scopes }
func (r *refreshRequest) GetSubject() string               { return string(r.family.User) }
func (r *refreshRequest) SetCurrentScopes(scopes []string) { r.scopes = scopes }

var (
	_ op.TokenRequest        = (*serviceRequest)(nil)
	_ op.AuthRequest         = (*authRequest)(nil)
	_ op.RefreshTokenRequest = (*refreshRequest)(nil)
)
