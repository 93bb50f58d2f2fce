-- +goose Up
-- Access grants (internal/access): who may read what, at which finest
-- resolution, for which purposes, when. purposes is a comma-separated list.
CREATE TABLE grants (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    id            TEXT NOT NULL,
    principal     TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL DEFAULT '',
    resource_kind TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    finest        TEXT NOT NULL,
    purposes      TEXT NOT NULL,
    not_before_ms INTEGER NOT NULL DEFAULT 0,
    not_after_ms  INTEGER NOT NULL DEFAULT 0,
    created_ms    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
-- One counter per tenant, raised in the same transaction as every change
-- of its grants: each replica compares it on every decision and reloads
-- the tenant's grants when it moved, so a revocation takes effect on the
-- very next request everywhere.
CREATE TABLE grant_versions (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id),
    version   INTEGER NOT NULL
);
-- Operator API tokens may be scoped to one tenant and its roles: such a
-- token is a principal of that tenant only (roles comma-separated).
ALTER TABLE operator_tokens ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '';
ALTER TABLE operator_tokens ADD COLUMN roles TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE operator_tokens DROP COLUMN roles;
ALTER TABLE operator_tokens DROP COLUMN tenant_id;
DROP TABLE grant_versions;
DROP TABLE grants;
