package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/datamap"
	"github.com/custos-iot/custos/internal/enrol"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/store"
)

func (a *API) newID(prefix string) (string, error) { return registry.NewID(a.cfg.Rand, prefix) }

func pathTenant(r *http.Request) registry.TenantID { return registry.TenantID(r.PathValue("tenant")) }

// tenantOf checks that the tenant in the path exists.
func (a *API) tenantOf(r *http.Request) (registry.TenantID, error) {
	t := pathTenant(r)
	if _, err := a.cfg.Store.Tenant(r.Context(), t); err != nil {
		return "", err
	}
	return t, nil
}

func (a *API) createTenant(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name string `json:"name"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := registry.CheckDisplayName("tenant", in.Name); err != nil {
		return err
	}
	id, err := a.newID("ten")
	if err != nil {
		return err
	}
	t := registry.Tenant{ID: registry.TenantID(id), Name: in.Name, Created: a.cfg.Now().UTC()}
	if err := a.cfg.Store.CreateTenant(r.Context(), t); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, t)
	return nil
}

func (a *API) listTenants(w http.ResponseWriter, r *http.Request) error {
	ts, err := a.cfg.Store.Tenants(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(ts))
	return nil
}

func (a *API) createSubject(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var in registry.Profile
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := registry.CheckProfile(in); err != nil {
		return err
	}
	id, err := a.newID("sub")
	if err != nil {
		return err
	}
	v := registry.Subject{ID: registry.SubjectID(id), Tenant: t, Name: in.Name, Email: in.Email, Address: in.Address, Created: a.cfg.Now().UTC()}
	// The subject's own key first: its profile is the first thing sealed
	// under it.
	if err := a.cfg.Keys.Create(r.Context(), t, v.ID); err != nil {
		return err
	}
	pt, _ := json.Marshal(in)
	sealed, err := a.cfg.Keys.Seal(r.Context(), v.ID, pt, registry.ProfileAD(t, v.ID))
	if err != nil {
		return err
	}
	if err := a.cfg.Store.CreateSubject(r.Context(), store.SubjectRow{ID: v.ID, Tenant: t, Profile: sealed, Created: v.Created}); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// subject opens a stored subject's profile.
func (a *API) subject(ctx context.Context, row store.SubjectRow) (registry.Subject, error) {
	v := registry.Subject{ID: row.ID, Tenant: row.Tenant, Created: row.Created}
	pt, err := a.cfg.Keys.Open(ctx, row.ID, row.Profile, registry.ProfileAD(row.Tenant, row.ID))
	if err != nil {
		return v, err
	}
	var p registry.Profile
	if err := json.Unmarshal(pt, &p); err != nil {
		return v, errs.E(errs.Integrity, "subject profile cannot be decoded")
	}
	v.Name, v.Email, v.Address = p.Name, p.Email, p.Address
	return v, nil
}

func (a *API) listSubjects(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	rows, err := a.cfg.Store.Subjects(r.Context(), t)
	if err != nil {
		return err
	}
	out := make([]registry.Subject, 0, len(rows))
	for _, row := range rows {
		v, err := a.subject(r.Context(), row)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// eraseSubject crypto-shreds a data subject: their key is destroyed first
// (every copy of their data, backups included, is unreadable from that
// moment), then they leave the registry with their sites, devices and
// streams, and evidence is recorded. Their sealed rows are deleted in the
// background. The answer is the evidence.
func (a *API) eraseSubject(w http.ResponseWriter, r *http.Request) error {
	t, sub := pathTenant(r), registry.SubjectID(r.PathValue("subject"))
	if _, err := a.cfg.Store.Subject(r.Context(), t, sub); err != nil {
		return err
	}
	if a.cfg.DataMap != nil {
		// Every copy: each store of the data map, the key first among
		// the sealed ones (see internal/hub/datamap.go for the order).
		erased, err := rights.Erase(r.Context(), a.cfg.DataMap, datamap.Ref{Tenant: t, Subject: sub})
		if a.cfg.Purge != nil {
			a.cfg.Purge() // the sealed rows, unreadable already, go in the background
		}
		if err != nil {
			return err
		}
		es, err := a.cfg.Store.Erasures(r.Context(), t)
		if err != nil {
			return err
		}
		for i := len(es) - 1; i >= 0; i-- {
			if es[i].Subject == sub {
				writeJSON(w, http.StatusOK, struct {
					store.Erasure
					Stores []datamap.Erased `json:"stores"`
				}{es[i], erased})
				return nil
			}
		}
		return errs.E(errs.Integrity, "erasure evidence missing after erasure")
	}
	requested := a.cfg.Now().UTC()
	ev, err := a.cfg.Keys.Destroy(r.Context(), sub)
	if err != nil {
		return err
	}
	e := &store.Erasure{Subject: sub, Tenant: t, Requested: requested, KeyDestroyed: ev.DestroyedAt.UTC()}
	e.Evidence, _ = json.Marshal(ev)
	if err := a.cfg.Store.EraseSubject(r.Context(), e); err != nil {
		return err
	}
	for _, c := range e.Connectors {
		a.cfg.Ingest.Forget(c)
	}
	a.cfg.Ingest.ForgetStreams(e.Streams)
	if a.cfg.Purge != nil {
		a.cfg.Purge()
	}
	writeJSON(w, http.StatusOK, e)
	return nil
}

func (a *API) createSite(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var in struct {
		Subject registry.SubjectID `json:"subject"`
		Name    string             `json:"name"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := registry.CheckName("site", in.Name); err != nil {
		return err
	}
	id, err := a.newID("sit")
	if err != nil {
		return err
	}
	v := registry.Site{ID: registry.SiteID(id), Tenant: t, Subject: in.Subject, Name: in.Name, Created: a.cfg.Now().UTC()}
	if err := a.cfg.Store.CreateSite(r.Context(), v); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// EnrolmentOffer is the answer to creating a connector or a new token: the
// single-use token to give to the agent. It is shown once and stored only
// as a hash.
type EnrolmentOffer struct {
	Connector registry.Connector `json:"connector"`
	Token     string             `json:"enrol_token"`
	Expires   time.Time          `json:"expires"`
}

func (a *API) createConnector(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var in struct {
		Name string `json:"name"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := registry.CheckName("connector", in.Name); err != nil {
		return err
	}
	id, err := a.newID("con")
	if err != nil {
		return err
	}
	c := registry.Connector{ID: registry.ConnectorID(id), Tenant: t, Name: in.Name, Status: registry.ConnectorPending, Created: a.cfg.Now().UTC()}
	if err := a.cfg.Store.CreateConnector(r.Context(), c); err != nil {
		return err
	}
	return a.offer(w, r, c)
}

func (a *API) offer(w http.ResponseWriter, r *http.Request, c registry.Connector) error {
	tok, err := enrol.NewToken(a.cfg.Rand, a.cfg.Authority.Fingerprint())
	if err != nil {
		return err
	}
	exp := a.cfg.Now().Add(a.cfg.EnrolTokenTTL).UTC()
	if err := a.cfg.Store.CreateEnrolToken(r.Context(), tok.Hash(), c.ID, exp); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, EnrolmentOffer{Connector: c, Token: tok.String(), Expires: exp})
	return nil
}

func (a *API) newEnrolToken(w http.ResponseWriter, r *http.Request) error {
	c, err := a.cfg.Store.Connector(r.Context(), pathTenant(r), registry.ConnectorID(r.PathValue("connector")))
	if err != nil {
		return err
	}
	if c.Status == registry.ConnectorRevoked {
		return errs.E(errs.Conflict, "connector is revoked; create a new one")
	}
	return a.offer(w, r, c)
}

func (a *API) revokeConnector(w http.ResponseWriter, r *http.Request) error {
	t, c := pathTenant(r), registry.ConnectorID(r.PathValue("connector"))
	if err := a.cfg.Store.RevokeConnector(r.Context(), t, c); err != nil {
		return err
	}
	a.cfg.Ingest.Forget(c)
	v, err := a.cfg.Store.Connector(r.Context(), t, c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *API) createDevice(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var in struct {
		Site      registry.SiteID      `json:"site"`
		Connector registry.ConnectorID `json:"connector"`
		Name      string               `json:"name"`
		// MeterSerial binds the device to a meter identity (optional).
		MeterSerial string `json:"meter_serial"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := registry.CheckName("device", in.Name); err != nil {
		return err
	}
	if err := registry.CheckMeterSerial(in.MeterSerial); err != nil {
		return err
	}
	id, err := a.newID("dev")
	if err != nil {
		return err
	}
	v := registry.Device{ID: registry.DeviceID(id), Tenant: t, Site: in.Site, Connector: in.Connector, Name: in.Name, MeterSerial: in.MeterSerial, Created: a.cfg.Now().UTC()}
	if err := a.cfg.Store.CreateDevice(r.Context(), v); err != nil {
		return err
	}
	a.cfg.Ingest.Forget(in.Connector)
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// replaceMeter records that a device's meter was replaced: from the time
// given (default now) the device is the new meter, readings reported under
// its serial are accepted and those under the old one quarantined, and an
// energy counter may restart once.
func (a *API) replaceMeter(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var in struct {
		// MeterSerial is the new meter's serial; empty: not checked.
		MeterSerial string `json:"meter_serial"`
		// At is when the new meter started measuring (RFC 3339); default now.
		At *time.Time `json:"at"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := registry.CheckMeterSerial(in.MeterSerial); err != nil {
		return err
	}
	now := a.cfg.Now().UTC()
	at := now
	if in.At != nil {
		at = in.At.UTC()
	}
	dev, err := a.cfg.Store.Device(r.Context(), t, registry.DeviceID(r.PathValue("device")))
	if err != nil {
		return err
	}
	switch {
	case at.After(now.Add(time.Minute)):
		return errs.E(errs.Invalid, "at is in the future: record a replacement once it has happened")
	case at.UnixMilli() <= 0:
		return errs.E(errs.Invalid, "at must be after 1970-01-01T00:00:00Z")
	}
	v, err := a.cfg.Store.ReplaceMeter(r.Context(), t, dev.ID, in.MeterSerial, at)
	if err != nil {
		return err
	}
	a.cfg.Ingest.Forget(v.Connector)
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *API) createStream(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var in struct {
		Device   registry.DeviceID `json:"device"`
		Metric   string            `json:"metric"`
		Category registry.Category `json:"category"`
		Unit     string            `json:"unit"`
		// Role is the stream's part in its site's energy balance (optional).
		Role registry.Role `json:"role"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := registry.CheckMetric(in.Metric); err != nil {
		return err
	}
	if err := registry.CheckUnit(in.Unit); err != nil {
		return err
	}
	if err := registry.CheckRole(in.Role, in.Unit); err != nil {
		return err
	}
	if !registry.ValidCategory(in.Category) {
		return errs.E(errs.Invalid, fmt.Sprintf("unknown data category; known: %s", categoryList()))
	}
	d, err := a.cfg.Store.Device(r.Context(), t, in.Device)
	if err != nil {
		return err
	}
	site, err := a.cfg.Store.Site(r.Context(), t, d.Site)
	if err != nil {
		return err
	}
	id, err := a.newID("str")
	if err != nil {
		return err
	}
	v := registry.Stream{ID: registry.StreamID(id), Tenant: t, Subject: site.Subject, Device: d.ID, Metric: in.Metric, Key: registry.StreamKey(d.Name, in.Metric),
		Category: in.Category, Unit: in.Unit, Role: in.Role, Site: d.Site, Created: a.cfg.Now().UTC()}
	if err := a.cfg.Store.CreateStream(r.Context(), v); err != nil {
		return err
	}
	a.cfg.Ingest.Forget(d.Connector)
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func categoryList() string {
	var s []string
	for _, c := range registry.Categories {
		s = append(s, string(c))
	}
	return strings.Join(s, ", ")
}

// readings serves a page of a stream's readings, or its aggregates at a
// coarser resolution. Query parameters: from, to (RFC 3339 or Unix ms;
// default: the last hour), since (a duration such as 5m, instead of from),
// resolution (raw, the default, or 15m, 1h, 1d, 1mo: then the answer holds
// buckets, not readings), limit (default 1000) and cursor for raw pages.
// authorizeReadings looks up the stream and decides the read before the
// handler runs (see dataRead); the handler gets the stream and resolution.
func (a *API) authorizeReadings(r *http.Request) (*http.Request, error) {
	t := pathTenant(r)
	st, err := a.cfg.Store.Stream(r.Context(), t, registry.StreamID(r.PathValue("stream")))
	if err != nil {
		return r, err
	}
	res := rollup.Raw
	if v := r.URL.Query().Get("resolution"); v != "" {
		if res, err = rollup.ParseResolution(v); err != nil {
			return r, err
		}
	}
	q, err := a.parseRange(r) // bad input is a 400 whoever asks
	if err != nil {
		return r, err
	}
	if _, err := a.authorizeRead(r, st, res); err != nil {
		return r, err
	}
	return r.WithContext(context.WithValue(r.Context(), readKey{}, authorizedRead{st, res, q})), nil
}

type readKey struct{}

// authorizedRead is what authorizeReadings decided on.
type authorizedRead struct {
	stream registry.Stream
	res    rollup.Resolution
	q      series.Query
}

func (a *API) readings(w http.ResponseWriter, r *http.Request) error {
	t := pathTenant(r)
	ar, ok := r.Context().Value(readKey{}).(authorizedRead)
	if !ok { // only reachable through dataRead: fail closed
		return errs.E(errs.Forbidden, "read not authorized")
	}
	st, res, q := ar.stream, ar.res, ar.q
	if res != rollup.Raw {
		bs, err := series.ReadRollups(r.Context(), a.cfg.Store, series.RollupQuery{Tenant: t, Stream: st.ID, Res: res, From: q.From, To: q.To, Sealer: a.cfg.Sealer})
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, struct {
			Stream     registry.StreamID `json:"stream"`
			Key        string            `json:"key"`
			Unit       string            `json:"unit"`
			Resolution rollup.Resolution `json:"resolution"`
			Buckets    []rollup.Bucket   `json:"buckets"`
		}{st.ID, st.Key, st.Unit, res, nonNil(bs)})
		return nil
	}
	q.Tenant, q.Stream, q.Sealer = t, st.ID, a.cfg.Sealer
	page, err := series.Read(r.Context(), a.cfg.Store, q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Stream registry.StreamID `json:"stream"`
		Key    string            `json:"key"`
		Unit   string            `json:"unit"`
		series.Page
	}{st.ID, st.Key, st.Unit, page})
	return nil
}

func (a *API) parseRange(r *http.Request) (series.Query, error) {
	v := r.URL.Query()
	now := a.cfg.Now()
	q := series.Query{From: now.Add(-time.Hour).UnixMilli(), To: now.UnixMilli() + 1, Limit: 1000, Cursor: v.Get("cursor")}
	var err error
	if s := v.Get("since"); s != "" {
		d, perr := time.ParseDuration(s)
		if perr != nil || d <= 0 {
			return q, errs.E(errs.Invalid, "since must be a positive duration such as 15m or 2h")
		}
		q.From = now.Add(-d).UnixMilli()
	}
	if s := v.Get("from"); s != "" {
		if q.From, err = parseTime("from", s); err != nil {
			return q, err
		}
	}
	if s := v.Get("to"); s != "" {
		if q.To, err = parseTime("to", s); err != nil {
			return q, err
		}
	}
	if s := v.Get("limit"); s != "" {
		n, perr := strconv.Atoi(s)
		if perr != nil {
			return q, errs.E(errs.Invalid, "limit must be a number")
		}
		q.Limit = n
	}
	if q.To <= q.From {
		return q, errs.E(errs.Invalid, "the end of the range must be after its start")
	}
	return q, nil
}

func parseTime(name, s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, errs.E(errs.Invalid, fmt.Sprintf("%s must be RFC 3339 (2026-01-02T15:04:05Z) or Unix milliseconds", name))
	}
	return t.UnixMilli(), nil
}

// list serves a tenant's collection: the tenant must exist; an empty
// collection is [] in JSON, not null.
func list[T any](a *API, fetch func(context.Context, registry.TenantID) ([]T, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		t, err := a.tenantOf(r)
		if err != nil {
			return err
		}
		vs, err := fetch(r.Context(), t)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, nonNil(vs))
		return nil
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
