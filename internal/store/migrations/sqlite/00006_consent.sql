-- +goose Up
-- Purposes (internal/consent): why a tenant processes data, on which
-- lawful basis, which categories, for whom, how long, and the notice shown
-- to the data subject. Every change is a new version; old versions stay so
-- that a consent names the exact notice it was given on.
CREATE TABLE purposes (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    purpose      TEXT NOT NULL,
    version      INTEGER NOT NULL,
    basis        TEXT NOT NULL,
    categories   TEXT NOT NULL,
    recipients   TEXT NOT NULL,
    retention_ms INTEGER NOT NULL,
    finest       TEXT NOT NULL,
    notice       TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, purpose, version)
);
-- Consent events (ISO/IEC TS 27560 records): append-only; the newest
-- event of a (subject, purpose) is the consent's state.
CREATE TABLE consent_events (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    tenant_id      TEXT NOT NULL,
    subject_id     TEXT NOT NULL,
    purpose        TEXT NOT NULL,
    notice_version INTEGER NOT NULL,
    event          TEXT NOT NULL,
    method         TEXT NOT NULL,
    at_ms          INTEGER NOT NULL,
    expires_ms     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX consent_events_subject ON consent_events(tenant_id, subject_id, purpose, seq);
-- Restriction (art. 18) and objection (art. 21) flags: processing for the
-- purpose stops, the data is kept.
CREATE TABLE restrictions (
    tenant_id  TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    since_ms   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, subject_id, purpose)
);
-- Data subject rights requests (internal/rights) with their deadline,
-- status and evidence.
CREATE TABLE rights_requests (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    purpose      TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL,
    opened_ms    INTEGER NOT NULL,
    due_ms       INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    reason       TEXT NOT NULL DEFAULT '',
    evidence     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX rights_requests_subject ON rights_requests(tenant_id, subject_id);

-- +goose Down
DROP TABLE rights_requests;
DROP TABLE restrictions;
DROP TABLE consent_events;
DROP TABLE purposes;
