-- +goose Up
-- Local users and users who log in through an OpenID Connect provider.
-- password: an argon2id PHC string, '' for users without a local password.
-- roles: comma-separated access roles in the tenant. oidc_issuer and
-- oidc_subject link the user to one account at one provider ('' if none).
CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    password     TEXT NOT NULL DEFAULT '',
    roles        TEXT NOT NULL DEFAULT '',
    member_of    TEXT NOT NULL DEFAULT '',
    oidc_issuer  TEXT NOT NULL DEFAULT '',
    oidc_subject TEXT NOT NULL DEFAULT '',
    created_ms   INTEGER NOT NULL,
    disabled_ms  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, name)
);
CREATE UNIQUE INDEX users_oidc ON users(tenant_id, oidc_issuer, oidc_subject) WHERE oidc_subject <> '';
-- Web sessions: only the SHA-256 of the session ID is stored.
CREATE TABLE sessions (
    hash       BLOB PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id),
    created_ms INTEGER NOT NULL,
    seen_ms    INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
-- OpenID Connect providers a tenant's users may log in with.
CREATE TABLE oidc_providers (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    issuer        TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    redirect_url  TEXT NOT NULL,
    auto_create   INTEGER NOT NULL DEFAULT 0,
    default_roles TEXT NOT NULL DEFAULT '',
    created_ms    INTEGER NOT NULL,
    UNIQUE (tenant_id, issuer)
);
-- Authorization code flows under way: keyed by the SHA-256 of the state,
-- used once, valid for minutes.
CREATE TABLE oidc_flows (
    state_hash  BLOB PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    verifier    TEXT NOT NULL,
    expires_ms  INTEGER NOT NULL
);

-- +goose Down
DROP TABLE oidc_flows;
DROP TABLE oidc_providers;
DROP TABLE sessions;
DROP TABLE users;
