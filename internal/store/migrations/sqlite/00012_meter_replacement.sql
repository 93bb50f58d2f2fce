-- +goose Up
-- When the meter a device is was last replaced (Unix ms; 0: never): the
-- first counter reading at or after it may restart anywhere, and the
-- device's meter serial is the new meter's from then on.
ALTER TABLE devices ADD COLUMN meter_replaced_ms INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE devices DROP COLUMN meter_replaced_ms;
