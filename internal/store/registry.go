package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// CreateTenant inserts t. A tenant name is unique on the hub.
func (s *Store) CreateTenant(ctx context.Context, t registry.Tenant) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO tenants (id, name, created_ms) VALUES (?, ?, ?)`), t.ID, t.Name, ms(t.Created))
	if isUnique(err) {
		return errs.E(errs.Exists, "a tenant with that name already exists")
	}
	return err
}

// Tenants lists every tenant, oldest first.
func (s *Store) Tenants(ctx context.Context) ([]registry.Tenant, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, created_ms FROM tenants ORDER BY created_ms, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []registry.Tenant
	for rows.Next() {
		var t registry.Tenant
		var c int64
		if err := rows.Scan(&t.ID, &t.Name, &c); err != nil {
			return nil, err
		}
		t.Created = fromMS(c)
		out = append(out, t)
	}
	return out, rows.Err()
}

// Tenant returns one tenant.
func (s *Store) Tenant(ctx context.Context, id registry.TenantID) (registry.Tenant, error) {
	t := registry.Tenant{ID: id}
	var c int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT name, created_ms FROM tenants WHERE id = ?`), id).Scan(&t.Name, &c)
	t.Created = fromMS(c)
	return t, notFound("tenant", err)
}

// SubjectRow is a data subject as stored: its personal fields only as a
// sealed profile, which the store cannot read.
type SubjectRow struct {
	ID      registry.SubjectID
	Tenant  registry.TenantID
	Profile []byte // sealed registry.Profile
	Created time.Time
}

// CreateSubject inserts a data subject of an existing tenant.
func (s *Store) CreateSubject(ctx context.Context, v SubjectRow) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO subjects (id, tenant_id, profile, created_ms) VALUES (?, ?, ?, ?)`), v.ID, v.Tenant, v.Profile, ms(v.Created))
	return err
}

// Subjects lists a tenant's data subjects.
func (s *Store) Subjects(ctx context.Context, tenant registry.TenantID) ([]SubjectRow, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id, profile, created_ms FROM subjects WHERE tenant_id = ? ORDER BY created_ms, id`), tenant)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SubjectRow
	for rows.Next() {
		v := SubjectRow{Tenant: tenant}
		var c int64
		if err := rows.Scan(&v.ID, &v.Profile, &c); err != nil {
			return nil, err
		}
		v.Created = fromMS(c)
		out = append(out, v)
	}
	return out, rows.Err()
}

// Subject returns one data subject of a tenant.
func (s *Store) Subject(ctx context.Context, tenant registry.TenantID, id registry.SubjectID) (SubjectRow, error) {
	v := SubjectRow{ID: id, Tenant: tenant}
	var c int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT profile, created_ms FROM subjects WHERE tenant_id = ? AND id = ?`), tenant, id).Scan(&v.Profile, &c)
	v.Created = fromMS(c)
	return v, notFound("subject", err)
}

// Site returns one site of a tenant.
func (s *Store) Site(ctx context.Context, tenant registry.TenantID, id registry.SiteID) (registry.Site, error) {
	v := registry.Site{ID: id, Tenant: tenant}
	var c int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT subject_id, name, created_ms FROM sites WHERE tenant_id = ? AND id = ?`), tenant, id).Scan(&v.Subject, &v.Name, &c)
	v.Created = fromMS(c)
	return v, notFound("site", err)
}

// CreateSite inserts a site; its subject must belong to the same tenant.
func (s *Store) CreateSite(ctx context.Context, v registry.Site) error {
	if _, err := s.Subject(ctx, v.Tenant, v.Subject); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO sites (id, tenant_id, subject_id, name, created_ms) VALUES (?, ?, ?, ?, ?)`), v.ID, v.Tenant, v.Subject, v.Name, ms(v.Created))
	if isUnique(err) {
		return errs.E(errs.Exists, "a site with that name already exists in the tenant")
	}
	return err
}

// Sites lists a tenant's sites.
func (s *Store) Sites(ctx context.Context, tenant registry.TenantID) ([]registry.Site, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id, subject_id, name, created_ms FROM sites WHERE tenant_id = ? ORDER BY created_ms, id`), tenant)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []registry.Site
	for rows.Next() {
		v := registry.Site{Tenant: tenant}
		var c int64
		if err := rows.Scan(&v.ID, &v.Subject, &v.Name, &c); err != nil {
			return nil, err
		}
		v.Created = fromMS(c)
		out = append(out, v)
	}
	return out, rows.Err()
}

// CreateConnector inserts a connector in the pending state.
func (s *Store) CreateConnector(ctx context.Context, v registry.Connector) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO connectors (id, tenant_id, name, status, created_ms) VALUES (?, ?, ?, ?, ?)`), v.ID, v.Tenant, v.Name, v.Status, ms(v.Created))
	if isUnique(err) {
		return errs.E(errs.Exists, "a connector with that name already exists in the tenant")
	}
	return err
}

const connectorCols = `id, tenant_id, name, status, created_ms, cert_expiry_ms, last_seen_ms, health`

func scanConnector(sc interface{ Scan(...any) error }) (registry.Connector, error) {
	var v registry.Connector
	var c, e, l int64
	var health string
	err := sc.Scan(&v.ID, &v.Tenant, &v.Name, &v.Status, &c, &e, &l, &health)
	v.Created, v.CertExpiry, v.LastSeen = fromMS(c), fromMS(e), fromMS(l)
	if health != "" {
		v.Health = &registry.Health{}
		if json.Unmarshal([]byte(health), v.Health) != nil {
			v.Health = nil
		}
	}
	return v, err
}

// SetConnectorHealth stores a connector's latest health report.
func (s *Store) SetConnectorHealth(ctx context.Context, t registry.TenantID, id registry.ConnectorID, h registry.Health) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, s.q(`UPDATE connectors SET health = ?, last_seen_ms = ? WHERE tenant_id = ? AND id = ?`), string(b), ms(h.Reported), t, id)
	return err
}

// Connectors lists a tenant's connectors.
func (s *Store) Connectors(ctx context.Context, tenant registry.TenantID) ([]registry.Connector, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+connectorCols+` FROM connectors WHERE tenant_id = ? ORDER BY created_ms, id`), tenant)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []registry.Connector
	for rows.Next() {
		v, err := scanConnector(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Connector returns one connector of a tenant.
func (s *Store) Connector(ctx context.Context, tenant registry.TenantID, id registry.ConnectorID) (registry.Connector, error) {
	v, err := scanConnector(s.db.QueryRowContext(ctx, s.q(`SELECT `+connectorCols+` FROM connectors WHERE tenant_id = ? AND id = ?`), tenant, id))
	return v, notFound("connector", err)
}

// RevokeConnector marks a connector revoked. Revoking twice is not an error.
func (s *Store) RevokeConnector(ctx context.Context, tenant registry.TenantID, id registry.ConnectorID) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE connectors SET status = ? WHERE tenant_id = ? AND id = ?`), registry.ConnectorRevoked, tenant, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errs.E(errs.NotFound, "connector not found")
	}
	return nil
}

// TouchConnector records when a connector was last seen.
func (s *Store) TouchConnector(ctx context.Context, id registry.ConnectorID, seen int64) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE connectors SET last_seen_ms = ? WHERE id = ? AND last_seen_ms < ?`), seen, id, seen)
	return err
}

// CreateDevice inserts a device; its site and connector must belong to the same tenant.
func (s *Store) CreateDevice(ctx context.Context, v registry.Device) error {
	var n int
	err := s.db.QueryRowContext(ctx, s.q(`SELECT (SELECT COUNT(*) FROM sites WHERE id = ? AND tenant_id = ?) + (SELECT COUNT(*) FROM connectors WHERE id = ? AND tenant_id = ?)`),
		v.Site, v.Tenant, v.Connector, v.Tenant).Scan(&n)
	if err != nil {
		return err
	}
	if n != 2 {
		return errs.E(errs.NotFound, "site or connector not found in the tenant")
	}
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO devices (id, tenant_id, site_id, connector_id, name, meter_serial, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)`), v.ID, v.Tenant, v.Site, v.Connector, v.Name, v.MeterSerial, ms(v.Created))
	if isUnique(err) {
		return errs.E(errs.Exists, "a device with that name already exists in the tenant")
	}
	return err
}

// Devices lists a tenant's devices.
func (s *Store) Devices(ctx context.Context, tenant registry.TenantID) ([]registry.Device, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id, tenant_id, site_id, connector_id, name, meter_serial, meter_replaced_ms, previous_meter_serial, created_ms FROM devices WHERE tenant_id = ? ORDER BY created_ms, id`), tenant)
	if err != nil {
		return nil, err
	}
	return scanDevices(rows)
}

// ConnectorDevices lists the devices a connector serves.
func (s *Store) ConnectorDevices(ctx context.Context, connector registry.ConnectorID) ([]registry.Device, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id, tenant_id, site_id, connector_id, name, meter_serial, meter_replaced_ms, previous_meter_serial, created_ms FROM devices WHERE connector_id = ? ORDER BY id`), connector)
	if err != nil {
		return nil, err
	}
	return scanDevices(rows)
}

func scanDevices(rows *sql.Rows) ([]registry.Device, error) {
	defer rows.Close()
	var out []registry.Device
	for rows.Next() {
		var v registry.Device
		var rep, c int64
		if err := rows.Scan(&v.ID, &v.Tenant, &v.Site, &v.Connector, &v.Name, &v.MeterSerial, &rep, &v.PreviousMeterSerial, &c); err != nil {
			return nil, err
		}
		v.MeterReplaced, v.Created = replacedAt(rep), fromMS(c)
		out = append(out, v)
	}
	return out, rows.Err()
}

// Device returns one device of a tenant.
func (s *Store) Device(ctx context.Context, tenant registry.TenantID, id registry.DeviceID) (registry.Device, error) {
	v := registry.Device{ID: id, Tenant: tenant}
	var rep, c int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT site_id, connector_id, name, meter_serial, meter_replaced_ms, previous_meter_serial, created_ms FROM devices WHERE tenant_id = ? AND id = ?`), tenant, id).Scan(&v.Site, &v.Connector, &v.Name, &v.MeterSerial, &rep, &v.PreviousMeterSerial, &c)
	v.MeterReplaced, v.Created = replacedAt(rep), fromMS(c)
	return v, notFound("device", err)
}

func replacedAt(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return fromMS(ms)
}

// ReplaceMeter records that the meter a device is was replaced at at by
// one with serial ("" for one whose identity is not checked); the old
// serial is kept as the previous one. Replacements
// are recorded in time order: one before the latest fails with
// errs.Conflict.
func (s *Store) ReplaceMeter(ctx context.Context, tenant registry.TenantID, id registry.DeviceID, serial string, at time.Time) (registry.Device, error) {
	// A retry of the same replacement keeps the previous serial it set.
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE devices SET
		previous_meter_serial = CASE WHEN meter_replaced_ms = ? AND meter_serial = ? THEN previous_meter_serial ELSE meter_serial END,
		meter_serial = ?, meter_replaced_ms = ?
		WHERE tenant_id = ? AND id = ? AND meter_replaced_ms <= ?`),
		ms(at), serial, serial, ms(at), tenant, id, ms(at))
	if err != nil {
		return registry.Device{}, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return registry.Device{}, err
	} else if n == 0 {
		d, err := s.Device(ctx, tenant, id)
		if err != nil {
			return registry.Device{}, err
		}
		return registry.Device{}, errs.E(errs.Conflict, fmt.Sprintf("the meter was replaced later already, at %s", d.MeterReplaced.UTC().Format(time.RFC3339)))
	}
	return s.Device(ctx, tenant, id)
}

// CreateStream inserts a stream; its key is derived from the device's name.
func (s *Store) CreateStream(ctx context.Context, v registry.Stream) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO streams (id, tenant_id, subject_id, device_id, metric, stream_key, category, unit, role, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		v.ID, v.Tenant, v.Subject, v.Device, v.Metric, v.Key, v.Category, v.Unit, string(v.Role), ms(v.Created))
	if isUnique(err) {
		return errs.E(errs.Exists, "the device already has a stream for that metric")
	}
	return err
}

const streamCols = `s.id, s.tenant_id, s.subject_id, s.device_id, s.metric, s.stream_key, s.category, s.unit, s.role,
	COALESCE((SELECT d0.site_id FROM devices d0 WHERE d0.id = s.device_id), ''), s.created_ms`

func scanStreams(rows *sql.Rows) ([]registry.Stream, error) {
	defer rows.Close()
	var out []registry.Stream
	for rows.Next() {
		var v registry.Stream
		var c int64
		if err := rows.Scan(&v.ID, &v.Tenant, &v.Subject, &v.Device, &v.Metric, &v.Key, &v.Category, &v.Unit, &v.Role, &v.Site, &c); err != nil {
			return nil, err
		}
		v.Created = fromMS(c)
		out = append(out, v)
	}
	return out, rows.Err()
}

// Streams lists a tenant's streams.
func (s *Store) Streams(ctx context.Context, tenant registry.TenantID) ([]registry.Stream, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+streamCols+` FROM streams s WHERE s.tenant_id = ? ORDER BY s.stream_key`), tenant)
	if err != nil {
		return nil, err
	}
	return scanStreams(rows)
}

// ConnectorStreams lists the streams of the devices a connector serves:
// exactly the streams it may write.
func (s *Store) ConnectorStreams(ctx context.Context, connector registry.ConnectorID) ([]registry.Stream, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+streamCols+` FROM streams s JOIN devices d ON d.id = s.device_id WHERE d.connector_id = ? AND d.tenant_id = s.tenant_id`), connector)
	if err != nil {
		return nil, err
	}
	return scanStreams(rows)
}

// SiteRoleStreams lists the streams of a tenant's site that have a role in
// its energy balance.
func (s *Store) SiteRoleStreams(ctx context.Context, tenant registry.TenantID, site registry.SiteID) ([]registry.Stream, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+streamCols+` FROM streams s JOIN devices d ON d.id = s.device_id
		WHERE s.tenant_id = ? AND d.site_id = ? AND d.tenant_id = s.tenant_id AND s.role <> '' ORDER BY s.id`), tenant, site)
	if err != nil {
		return nil, err
	}
	return scanStreams(rows)
}

// Stream returns one stream of a tenant.
func (s *Store) Stream(ctx context.Context, tenant registry.TenantID, id registry.StreamID) (registry.Stream, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+streamCols+` FROM streams s WHERE s.tenant_id = ? AND s.id = ?`), tenant, id)
	if err != nil {
		return registry.Stream{}, err
	}
	v, err := scanStreams(rows)
	if err != nil {
		return registry.Stream{}, err
	}
	if len(v) == 0 {
		return registry.Stream{}, errs.E(errs.NotFound, "stream not found")
	}
	return v[0], nil
}

// StreamByKey finds a tenant's stream by its wire key.
func (s *Store) StreamByKey(ctx context.Context, tenant registry.TenantID, key string) (registry.Stream, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+streamCols+` FROM streams s WHERE s.tenant_id = ? AND s.stream_key = ?`), tenant, key)
	if err != nil {
		return registry.Stream{}, err
	}
	v, err := scanStreams(rows)
	if err != nil {
		return registry.Stream{}, err
	}
	if len(v) == 0 {
		return registry.Stream{}, errs.E(errs.NotFound, fmt.Sprintf("no stream with key %q", key))
	}
	return v[0], nil
}
