-- +goose Up
-- A power stream's role in its site's energy balance ('' none, import,
-- export, production, load): the site balance check pairs streams by it.
ALTER TABLE streams ADD COLUMN role TEXT NOT NULL DEFAULT '';
-- The serial of the meter a device is, as registered: a connector that
-- reports another identity for the device has its readings quarantined.
ALTER TABLE devices ADD COLUMN meter_serial TEXT NOT NULL DEFAULT '';
-- A landed block of a stream with a site role waits in landing until this
-- time (Unix ms; 0: none), so that the site balance check sees the other
-- roles' readings of its span before the compactor folds it into chunks
-- and rollups.
ALTER TABLE landing ADD COLUMN hold_ms BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE landing DROP COLUMN hold_ms;
ALTER TABLE devices DROP COLUMN meter_serial;
ALTER TABLE streams DROP COLUMN role;
