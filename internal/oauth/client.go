package oauth

import (
	"net/url"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/custos-iot/custos/internal/store"
)

// client presents a registered app to op (op.Client).
type client struct {
	app    store.OAuthApp
	issuer string
	idTTL  time.Duration
}

func (c *client) GetID() string                    { return string(c.app.ID) }
func (c *client) RedirectURIs() []string           { return c.app.RedirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return nil }

// ApplicationType: public apps are user agents (https redirect URIs,
// matched exactly); confidential ones are web apps. Never native: op lets
// native apps redirect to any loopback port, which is not an exact match.
func (c *client) ApplicationType() op.ApplicationType {
	if c.app.Public {
		return op.ApplicationTypeUserAgent
	}
	return op.ApplicationTypeWeb
}

func (c *client) AuthMethod() oidc.AuthMethod {
	if c.app.Public {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}

func (c *client) ResponseTypes() []oidc.ResponseType {
	if c.app.Kind == KindUser {
		return []oidc.ResponseType{oidc.ResponseTypeCode}
	}
	return nil
}

func (c *client) GrantTypes() []oidc.GrantType {
	if c.app.Kind == KindUser {
		return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
	}
	return []oidc.GrantType{oidc.GrantTypeClientCredentials}
}

// LoginURL is where op sends the browser to log the user in.
func (c *client) LoginURL(id string) string {
	return c.issuer + loginPath + "?id=" + url.QueryEscape(id)
}

func (c *client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }
func (c *client) IDTokenLifetime() time.Duration      { return c.idTTL }
func (c *client) DevMode() bool                       { return false }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) IsScopeAllowed(scope string) bool     { return slices.Contains(c.app.Scopes, scope) }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }

var _ op.Client = (*client)(nil)
