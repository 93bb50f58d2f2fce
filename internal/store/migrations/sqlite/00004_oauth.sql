-- +goose Up
-- OAuth2 apps (clients) of a tenant. secret_hash is the SHA-256 of a
-- 256-bit random client secret (empty for public clients).
CREATE TABLE oauth_apps (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    public        INTEGER NOT NULL,
    secret_hash   BLOB NOT NULL,
    redirect_uris TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    revoked_ms    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, name)
);
-- Pending authorization-code requests: params holds the request as the
-- authorization server parsed it; code_hash is set when the code is issued
-- and cleared (code_used_ms) when it is exchanged.
CREATE TABLE oauth_auth_requests (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES oauth_apps(id),
    params       TEXT NOT NULL,
    user_id      TEXT NOT NULL DEFAULT '',
    auth_time_ms INTEGER NOT NULL DEFAULT 0,
    code_hash    BLOB UNIQUE,
    code_used_ms INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL
);
-- A token family: every refresh and access token descending from one
-- authorization. Revoking it (logout, revocation, detected reuse) revokes
-- them all.
CREATE TABLE oauth_families (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES oauth_apps(id),
    tenant_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    auth_time_ms INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    revoked_ms   INTEGER NOT NULL DEFAULT 0,
    revoke_why   TEXT NOT NULL DEFAULT ''
);
-- Refresh tokens, stored as the SHA-256 of the token. used_ms is set when
-- the token is rotated; presenting it again revokes its family.
CREATE TABLE oauth_refresh_tokens (
    hash       BLOB PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    family_id  TEXT NOT NULL REFERENCES oauth_families(id),
    scopes     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX oauth_refresh_tokens_family ON oauth_refresh_tokens(family_id);
-- Access tokens by their ID (the JWT's jti): the bearer authenticator
-- checks every token here, so revocation holds on the next request.
CREATE TABLE oauth_access_tokens (
    id         TEXT PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES oauth_apps(id),
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL DEFAULT '',
    family_id  TEXT NOT NULL DEFAULT '',
    scopes     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    revoked_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX oauth_access_tokens_family ON oauth_access_tokens(family_id);
CREATE INDEX oauth_access_tokens_expires ON oauth_access_tokens(expires_ms);

-- +goose Down
DROP TABLE oauth_access_tokens;
DROP TABLE oauth_refresh_tokens;
DROP TABLE oauth_families;
DROP TABLE oauth_auth_requests;
DROP TABLE oauth_apps;
