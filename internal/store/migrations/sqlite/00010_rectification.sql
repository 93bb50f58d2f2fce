-- +goose Up
-- Rectification requests (GDPR art. 16, internal/rights): what a request
-- asks for (stream, grounds, delete ranges, how many corrections; JSON)...
ALTER TABLE rights_requests ADD COLUMN rectification TEXT NOT NULL DEFAULT '';
-- ...and the corrected readings submitted with it, in the parts they were
-- uploaded in, each a wire block sealed under the subject's key
-- (series.CorrectionsAD). They are deleted when the request is applied
-- (the values are then the stored readings) or refused.
CREATE TABLE rectification_parts (
    tenant_id  TEXT NOT NULL,
    request_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    subject_id TEXT NOT NULL,
    stream_id  TEXT NOT NULL,
    n          INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (tenant_id, request_id, seq)
);
CREATE INDEX rectification_parts_subject ON rectification_parts(tenant_id, subject_id);

-- +goose Down
DROP TABLE rectification_parts;
ALTER TABLE rights_requests DROP COLUMN rectification;
