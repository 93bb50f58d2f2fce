-- +goose Up
CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
-- profile: name, e-mail and address, sealed under the subject's own key.
CREATE TABLE subjects (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    profile    BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX subjects_tenant ON subjects(tenant_id);
CREATE TABLE sites (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    subject_id TEXT NOT NULL REFERENCES subjects(id),
    name       TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE connectors (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    status         TEXT NOT NULL,
    created_ms     INTEGER NOT NULL,
    cert_expiry_ms INTEGER NOT NULL DEFAULT 0,
    last_seen_ms   INTEGER NOT NULL DEFAULT 0,
    health         TEXT NOT NULL DEFAULT '',
    UNIQUE (tenant_id, name)
);
CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    site_id      TEXT NOT NULL REFERENCES sites(id),
    connector_id TEXT NOT NULL REFERENCES connectors(id),
    name         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX devices_connector ON devices(connector_id);
CREATE TABLE streams (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    device_id  TEXT NOT NULL REFERENCES devices(id),
    subject_id TEXT NOT NULL,
    metric     TEXT NOT NULL,
    stream_key TEXT NOT NULL,
    category   TEXT NOT NULL,
    unit       TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, stream_key)
);
CREATE INDEX streams_device ON streams(device_id);
CREATE TABLE enrol_tokens (
    hash         BLOB PRIMARY KEY,
    connector_id TEXT NOT NULL REFERENCES connectors(id),
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    used_ms      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE certificates (
    serial       TEXT PRIMARY KEY,
    connector_id TEXT NOT NULL REFERENCES connectors(id),
    issued_ms    INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    how          TEXT NOT NULL
);
CREATE TABLE operator_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL DEFAULT 0,
    revoked_ms INTEGER NOT NULL DEFAULT 0
);
-- One row per batch ever stored: the idempotency record. Batch IDs start
-- with a time prefix, so this index grows at its end.
CREATE TABLE batches (
    batch_id     BLOB NOT NULL,
    connector_id TEXT NOT NULL,
    received_ms  INTEGER NOT NULL,
    readings     INTEGER NOT NULL,
    PRIMARY KEY (batch_id, connector_id)
) WITHOUT ROWID;
-- Landing: blocks as received, one row per stream of a batch, appended in
-- arrival order without a per-stream index so that a commit touches few
-- pages. The compactor moves them into chunks within seconds.
CREATE TABLE landing (
    id        INTEGER PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    stream_id  TEXT NOT NULL,
    min_ms    INTEGER NOT NULL,
    max_ms    INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    data      BLOB NOT NULL
);
-- Chunks: a stream's readings per time bucket, written by the compactor.
CREATE TABLE chunks (
    id        INTEGER PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    stream_id  TEXT NOT NULL,
    min_ms    INTEGER NOT NULL,
    max_ms    INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    data      BLOB NOT NULL
);
CREATE INDEX chunks_stream_time ON chunks(stream_id, min_ms);
-- Rollups: one row per stream, resolution and period (a UTC day of 15-minute
-- or hourly buckets, a UTC year of daily or monthly ones), sealed.
CREATE TABLE rollups (
    stream_id  TEXT NOT NULL,
    res        TEXT NOT NULL,
    period_ms  INTEGER NOT NULL,
    tenant_id  TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (stream_id, res, period_ms)
);
-- The audit log's leaves when hub replicas share it (PostgreSQL); one hub on
-- SQLite keeps its log in files instead.
CREATE TABLE audit_leaves (
    idx     INTEGER PRIMARY KEY,
    when_ms INTEGER NOT NULL,
    leaf    BLOB NOT NULL
);
CREATE TABLE audit_checkpoint (
    id   INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    note BLOB NOT NULL
);
-- Erasure evidence: what was erased and when, never the erased data.
CREATE TABLE erasures (
    subject_id     TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    requested_ms   INTEGER NOT NULL,
    key_destroyed_ms INTEGER NOT NULL,
    purged_ms      INTEGER NOT NULL DEFAULT 0,
    streams        TEXT NOT NULL,
    evidence       TEXT NOT NULL
);

-- +goose Down
DROP TABLE erasures;
DROP TABLE audit_checkpoint;
DROP TABLE audit_leaves;
DROP TABLE rollups;
DROP TABLE chunks;
DROP TABLE landing;
DROP TABLE batches;
DROP TABLE operator_tokens;
DROP TABLE certificates;
DROP TABLE enrol_tokens;
DROP TABLE streams;
DROP TABLE devices;
DROP TABLE connectors;
DROP TABLE sites;
DROP TABLE subjects;
DROP TABLE tenants;
