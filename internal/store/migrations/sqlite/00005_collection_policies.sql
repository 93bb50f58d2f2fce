-- +goose Up
-- The collection policy of a stream (internal/collection): whether and at
-- which finest resolution its readings may leave the edge. A stream
-- without a row has the default policy (raw, sent). Erasing the stream
-- erases its row.
CREATE TABLE collection_policies (
    stream_id        TEXT PRIMARY KEY REFERENCES streams(id) ON DELETE CASCADE,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    send             INTEGER NOT NULL,
    finest           TEXT NOT NULL,
    prev_send        INTEGER NOT NULL,
    prev_finest      TEXT NOT NULL,
    version          INTEGER NOT NULL,
    reason           TEXT NOT NULL,
    updated_ms       INTEGER NOT NULL,
    refused_readings INTEGER NOT NULL DEFAULT 0,
    last_refused_ms  INTEGER NOT NULL DEFAULT 0
);

-- +goose Down
DROP TABLE collection_policies;
