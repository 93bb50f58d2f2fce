-- +goose Up
-- Quarantine: readings the plausibility checks flagged, one row per stream
-- of a batch, sealed under the subject's key (QuarantineAD). Written in the
-- batch's own transaction, so a replayed batch adds none.
CREATE TABLE quarantine (
    id           INTEGER PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    stream_id    TEXT NOT NULL,
    connector_id TEXT NOT NULL,
    batch_id     BLOB NOT NULL,
    seq          INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL,
    min_ms       INTEGER NOT NULL,
    max_ms       INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    reasons      TEXT NOT NULL,
    data         BLOB NOT NULL,
    UNIQUE (connector_id, batch_id, seq)
);
CREATE INDEX quarantine_tenant_stream ON quarantine (tenant_id, stream_id, id);
-- A tenant's plausibility policy (plausibility.Policy as JSON).
CREATE TABLE plausibility_policies (
    tenant_id  TEXT PRIMARY KEY,
    policy     TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
-- A stream's learned plausibility state, sealed under the subject's key
-- (PlausibilityStateAD); a cache the hub rebuilds if it is lost.
CREATE TABLE plausibility_state (
    stream_id  TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    data       BLOB NOT NULL,
    updated_ms INTEGER NOT NULL
);

-- +goose Down
DROP TABLE plausibility_state;
DROP TABLE plausibility_policies;
DROP TABLE quarantine;
