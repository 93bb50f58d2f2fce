package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/custos-iot/custos/internal/consent"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/rollup"
)

// The store answers the consent gate's questions.
var _ consent.Source = (*Store)(nil)

// AddPurpose stores a new version of a tenant's purpose (version 1 if the
// purpose is new) and returns it with its version.
func (s *Store) AddPurpose(ctx context.Context, p consent.Purpose) (consent.Purpose, error) {
	if _, err := s.Tenant(ctx, p.Tenant); err != nil {
		return p, err
	}
	cats, _ := json.Marshal(p.Categories)
	recs, _ := json.Marshal(p.Recipients)
	for attempt := 0; ; attempt++ {
		var v int
		if err := s.db.QueryRowContext(ctx, s.q(`SELECT COALESCE(MAX(version), 0) FROM purposes WHERE tenant_id = ? AND purpose = ?`), p.Tenant, p.ID).Scan(&v); err != nil {
			return p, err
		}
		p.Version = v + 1
		_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO purposes (tenant_id, purpose, version, basis, categories, recipients, retention_ms, finest, notice, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			p.Tenant, p.ID, p.Version, p.Basis, string(cats), string(recs), int64(p.RetentionDays)*86_400_000, string(p.Finest), p.Notice, ms(p.Created))
		if isUnique(err) && attempt < 3 {
			continue // another request added a version at the same moment
		}
		return p, err
	}
}

const purposeCols = `tenant_id, purpose, version, basis, categories, recipients, retention_ms, finest, notice, created_ms`

func scanPurpose(sc interface{ Scan(...any) error }) (consent.Purpose, error) {
	var p consent.Purpose
	var cats, recs, finest string
	var ret, c int64
	err := sc.Scan(&p.Tenant, &p.ID, &p.Version, &p.Basis, &cats, &recs, &ret, &finest, &p.Notice, &c)
	json.Unmarshal([]byte(cats), &p.Categories)
	json.Unmarshal([]byte(recs), &p.Recipients)
	p.RetentionDays, p.Finest, p.Created = int(ret/86_400_000), rollup.Resolution(finest), fromMS(c)
	return p, err
}

// Purpose returns the newest version of a tenant's purpose.
func (s *Store) Purpose(ctx context.Context, t registry.TenantID, id consent.PurposeID) (consent.Purpose, error) {
	p, err := scanPurpose(s.db.QueryRowContext(ctx, s.q(`SELECT `+purposeCols+` FROM purposes WHERE tenant_id = ? AND purpose = ? ORDER BY version DESC LIMIT 1`), t, id))
	return p, notFound("purpose", err)
}

// PurposeVersion returns one version of a tenant's purpose.
func (s *Store) PurposeVersion(ctx context.Context, t registry.TenantID, id consent.PurposeID, version int) (consent.Purpose, error) {
	p, err := scanPurpose(s.db.QueryRowContext(ctx, s.q(`SELECT `+purposeCols+` FROM purposes WHERE tenant_id = ? AND purpose = ? AND version = ?`), t, id, version))
	return p, notFound("purpose version", err)
}

// Purposes lists the newest version of each of a tenant's purposes.
func (s *Store) Purposes(ctx context.Context, t registry.TenantID) ([]consent.Purpose, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+purposeCols+` FROM purposes p WHERE tenant_id = ?
		AND version = (SELECT MAX(version) FROM purposes q WHERE q.tenant_id = p.tenant_id AND q.purpose = p.purpose) ORDER BY purpose`), t)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []consent.Purpose
	for rows.Next() {
		p, err := scanPurpose(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// AppendConsent appends a consent event. The history is append-only: no
// method of the store changes or deletes an event, except the erasure of
// the subject.
func (s *Store) AppendConsent(ctx context.Context, r consent.Record) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO consent_events (id, tenant_id, subject_id, purpose, notice_version, event, method, at_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		r.ID, r.Tenant, r.Subject, r.Purpose, r.NoticeVersion, r.Event, r.Method, ms(r.At), ms(r.Expires))
	return err
}

const consentCols = `id, tenant_id, subject_id, purpose, notice_version, event, method, at_ms, expires_ms`

func scanConsent(sc interface{ Scan(...any) error }) (consent.Record, error) {
	var r consent.Record
	var at, exp int64
	err := sc.Scan(&r.ID, &r.Tenant, &r.Subject, &r.Purpose, &r.NoticeVersion, &r.Event, &r.Method, &at, &exp)
	r.At, r.Expires = fromMS(at), fromMS(exp)
	return r, err
}

// LatestConsent returns a subject's newest consent event for a purpose.
func (s *Store) LatestConsent(ctx context.Context, t registry.TenantID, sub registry.SubjectID, p consent.PurposeID) (consent.Record, bool, error) {
	r, err := scanConsent(s.db.QueryRowContext(ctx, s.q(`SELECT `+consentCols+` FROM consent_events WHERE tenant_id = ? AND subject_id = ? AND purpose = ? ORDER BY seq DESC LIMIT 1`), t, sub, p))
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	return r, err == nil, err
}

// ConsentHistory lists a subject's consent events, oldest first.
func (s *Store) ConsentHistory(ctx context.Context, t registry.TenantID, sub registry.SubjectID) ([]consent.Record, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+consentCols+` FROM consent_events WHERE tenant_id = ? AND subject_id = ? ORDER BY seq`), t, sub)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []consent.Record
	for rows.Next() {
		r, err := scanConsent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ConsentEvent returns one consent event of a tenant.
func (s *Store) ConsentEvent(ctx context.Context, t registry.TenantID, id consent.RecordID) (consent.Record, error) {
	r, err := scanConsent(s.db.QueryRowContext(ctx, s.q(`SELECT `+consentCols+` FROM consent_events WHERE tenant_id = ? AND id = ?`), t, id))
	return r, notFound("consent record", err)
}

// SetRestriction records a subject's restriction or objection of a purpose.
func (s *Store) SetRestriction(ctx context.Context, r consent.Restriction) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO restrictions (tenant_id, subject_id, purpose, kind, since_ms) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (tenant_id, subject_id, purpose) DO UPDATE SET kind = excluded.kind, since_ms = excluded.since_ms`), r.Tenant, r.Subject, r.Purpose, r.Kind, ms(r.Since))
	return err
}

// LiftRestriction removes a subject's restriction or objection of a purpose.
func (s *Store) LiftRestriction(ctx context.Context, t registry.TenantID, sub registry.SubjectID, p consent.PurposeID) error {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM restrictions WHERE tenant_id = ? AND subject_id = ? AND purpose = ?`), t, sub, p)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errs.E(errs.NotFound, "no restriction or objection for that purpose")
	}
	return nil
}

// Restriction returns a subject's restriction or objection of a purpose.
func (s *Store) Restriction(ctx context.Context, t registry.TenantID, sub registry.SubjectID, p consent.PurposeID) (consent.Restriction, bool, error) {
	r := consent.Restriction{Tenant: t, Subject: sub, Purpose: p}
	var since int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT kind, since_ms FROM restrictions WHERE tenant_id = ? AND subject_id = ? AND purpose = ?`), t, sub, p).Scan(&r.Kind, &since)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	r.Since = fromMS(since)
	return r, err == nil, err
}

// Restrictions lists a subject's restrictions and objections.
func (s *Store) Restrictions(ctx context.Context, t registry.TenantID, sub registry.SubjectID) ([]consent.Restriction, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT purpose, kind, since_ms FROM restrictions WHERE tenant_id = ? AND subject_id = ? ORDER BY purpose`), t, sub)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []consent.Restriction
	for rows.Next() {
		r := consent.Restriction{Tenant: t, Subject: sub}
		var since int64
		if err := rows.Scan(&r.Purpose, &r.Kind, &since); err != nil {
			return nil, err
		}
		r.Since = fromMS(since)
		out = append(out, r)
	}
	return out, rows.Err()
}

// EraseSubjectConsents deletes a subject's consent history and
// restrictions (their erasure) and reports how many rows went.
func (s *Store) EraseSubjectConsents(ctx context.Context, t registry.TenantID, sub registry.SubjectID) (int, error) {
	n := 0
	for _, table := range []string{"consent_events", "restrictions"} {
		res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM `+table+` WHERE tenant_id = ? AND subject_id = ?`), t, sub)
		if err != nil {
			return n, err
		}
		k, _ := res.RowsAffected()
		n += int(k)
	}
	return n, nil
}

// CreateRightsRequest stores a new rights request, with the first parts
// of a rectification request's corrections if any, in one transaction.
func (s *Store) CreateRightsRequest(ctx context.Context, r rights.Request, parts ...RectificationPart) error {
	rect, err := rectificationJSON(r)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO rights_requests (id, tenant_id, subject_id, kind, requested_by, purpose, status, opened_ms, due_ms, updated_ms, reason, evidence, rectification) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		r.ID, r.Tenant, r.Subject, r.Kind, r.RequestedBy, r.Purpose, r.Status, ms(r.Opened), ms(r.Due), ms(r.Updated), r.Reason, string(r.Evidence), rect); err != nil {
		return err
	}
	if err := s.insertParts(ctx, tx, parts); err != nil {
		return err
	}
	return tx.Commit()
}

func rectificationJSON(r rights.Request) (string, error) {
	if r.Rectification == nil {
		return "", nil
	}
	b, err := json.Marshal(r.Rectification)
	return string(b), err
}

// UpdateRightsRequest stores a request's new status, reason, evidence and
// rectification details, unless the stored request is done or refused
// already (errs.Conflict: those are final, whoever got there first). A
// request that becomes done or refused keeps no corrections waiting
// (deleted in the same transaction).
func (s *Store) UpdateRightsRequest(ctx context.Context, r rights.Request) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.updateRights(ctx, tx, r); err != nil {
		return err
	}
	return tx.Commit()
}

// updateRights writes r's status, reason, evidence and rectification
// details in tx if the stored request is not final yet, and deletes the
// parts of a request that becomes final.
func (s *Store) updateRights(ctx context.Context, tx *sql.Tx, r rights.Request) error {
	rect, err := rectificationJSON(r)
	if err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, s.q(`UPDATE rights_requests SET status = ?, updated_ms = ?, reason = ?, evidence = ?, rectification = ?
		WHERE tenant_id = ? AND id = ? AND status <> ? AND status <> ?`), r.Status, ms(r.Updated), r.Reason, string(r.Evidence), rect, r.Tenant, r.ID, rights.Done, rights.Refused)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var st rights.Status
		err := tx.QueryRowContext(ctx, s.q(`SELECT status FROM rights_requests WHERE tenant_id = ? AND id = ?`), r.Tenant, r.ID).Scan(&st)
		if err != nil {
			return notFound("rights request", err)
		}
		return errs.E(errs.Conflict, fmt.Sprintf("the rights request is %s already", st))
	}
	if r.Final() {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM rectification_parts WHERE tenant_id = ? AND request_id = ?`), r.Tenant, r.ID); err != nil {
			return err
		}
	}
	return nil
}

const rightsCols = `id, tenant_id, subject_id, kind, requested_by, purpose, status, opened_ms, due_ms, updated_ms, reason, evidence, rectification`

func scanRights(sc interface{ Scan(...any) error }) (rights.Request, error) {
	var r rights.Request
	var o, d, u int64
	var ev, rect string
	err := sc.Scan(&r.ID, &r.Tenant, &r.Subject, &r.Kind, &r.RequestedBy, &r.Purpose, &r.Status, &o, &d, &u, &r.Reason, &ev, &rect)
	r.Opened, r.Due, r.Updated = fromMS(o), fromMS(d), fromMS(u)
	if ev != "" {
		r.Evidence = json.RawMessage(ev)
	}
	if rect != "" && err == nil {
		r.Rectification = &rights.RectificationClaim{}
		if jerr := json.Unmarshal([]byte(rect), r.Rectification); jerr != nil {
			return r, errs.E(errs.Integrity, "a rights request's rectification details cannot be decoded")
		}
	}
	return r, err
}

// RightsRequest returns one rights request of a tenant.
func (s *Store) RightsRequest(ctx context.Context, t registry.TenantID, id rights.RequestID) (rights.Request, error) {
	r, err := scanRights(s.db.QueryRowContext(ctx, s.q(`SELECT `+rightsCols+` FROM rights_requests WHERE tenant_id = ? AND id = ?`), t, id))
	return r, notFound("rights request", err)
}

// RightsRequests lists a tenant's rights requests, oldest first; only the
// subject's if sub is not empty.
func (s *Store) RightsRequests(ctx context.Context, t registry.TenantID, sub registry.SubjectID) ([]rights.Request, error) {
	q, args := `SELECT `+rightsCols+` FROM rights_requests WHERE tenant_id = ?`, []any{t}
	if sub != "" {
		q += ` AND subject_id = ?`
		args = append(args, sub)
	}
	rows, err := s.db.QueryContext(ctx, s.q(q+` ORDER BY opened_ms, id`), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []rights.Request
	for rows.Next() {
		r, err := scanRights(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// EraseSubjectRightsRequests deletes a subject's rights requests except
// their erasure requests, which stay as evidence (they hold the
// pseudonymous subject ID and what was erased, never the erased data),
// and every correction submitted with a rectification request.
func (s *Store) EraseSubjectRightsRequests(ctx context.Context, t registry.TenantID, sub registry.SubjectID) (int, error) {
	n := 0
	for _, q := range []string{
		`DELETE FROM rectification_parts WHERE tenant_id = ? AND subject_id = ?`,
		`DELETE FROM rights_requests WHERE tenant_id = ? AND subject_id = ? AND kind <> '` + string(rights.Erasure) + `'`,
	} {
		res, err := s.db.ExecContext(ctx, s.q(q), t, sub)
		if err != nil {
			return n, err
		}
		k, _ := res.RowsAffected()
		n += int(k)
	}
	return n, nil
}

// EraseSubjectRows deletes every row of a subject in one of the tables
// keyed by subject that hold sealed data (chunks, landing, rollups), now
// rather than in the background purge, and reports how many went.
func (s *Store) EraseSubjectRows(ctx context.Context, table string, t registry.TenantID, sub registry.SubjectID) (int, error) {
	switch table {
	case "chunks", "landing", "rollups":
	default:
		return 0, errs.E(errs.Invalid, "not a table of sealed rows: "+table)
	}
	return s.purgeStep(ctx, `DELETE FROM `+table+` WHERE tenant_id = ? AND subject_id = ?`, t, sub)
}

// Tables lists the tables of the store's schema (for the data-map test:
// every table must be registered).
func (s *Store) Tables(ctx context.Context) ([]string, error) {
	q := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`
	if s.dialect == Postgres {
		q = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`
	}
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, strings.ToLower(n))
	}
	return out, rows.Err()
}
