-- +goose Up
-- Audit entries made durable in the same transaction as the action they
-- record (an ingested batch), waiting to be integrated into the audit log
-- (audit.Integrator). entry is the encoded audit.Entry without its time.
CREATE TABLE audit_queue (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    entry BLOB NOT NULL
);

-- +goose Down
DROP TABLE audit_queue;
