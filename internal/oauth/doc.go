// Package oauth makes the hub an OAuth2 authorization server for apps: the
// clients a tenant admin registers. It owns app registration (secrets are
// shown once and stored as hashes), the token endpoint and its siblings
// (served by the provider of github.com/zitadel/oidc/v3/pkg/op, backed by
// the hub's store through this package's op.Storage implementation), and
// the bearer Authenticator that turns an app's access token into an
// access.Principal.
//
// # Flows
//
// A service app ("service") gets tokens with the client-credentials grant
// and acts as itself. A user app ("user") uses the authorization-code grant
// with PKCE (S256, required also of confidential apps) and acts for the
// user who logged in; redirect URIs match exactly. The login itself is not
// this package's: Config.Users (an access.Authenticator, such as the web
// session authenticator) names the logged-in user. There is no consent
// screen yet: registering an app in a tenant is the tenant admin's consent
// for its users.
//
// # Tokens
//
// Access tokens are JWTs (ES256, signed by the hub's key, RFC 9068 shape:
// sub is the user the app acts for, or the app itself; client_id is the
// app) valid for Config.AccessTTL. Every access token's ID (jti) is stored,
// and the Authenticator checks it in the store on every request after the
// signature: revoking a token, its token family or its app takes effect on
// the very next request on every replica sharing the database. The stored
// row, not the token's claims, says tenant, user and scopes.
//
// Refresh tokens (user apps asking for offline_access) are opaque, stored
// as SHA-256 hashes, and rotate on every use. Tokens descending from one
// authorization form a family; presenting a refresh token that was already
// rotated revokes the whole family (RFC 9700 section 4.14.2), as do
// revocation of a refresh token at the revocation endpoint and revocation
// of the app.
//
// # Guarantees
//
// The package MUST NOT issue a token to a revoked app, for a scope the app
// was not registered with, or for a user of another tenant than the app's.
// It MUST NOT accept an access token whose signature, issuer, audience or
// expiry does not verify, or which the store does not know or marks
// revoked. Errors and logs carry IDs only, never secrets or tokens.
package oauth
