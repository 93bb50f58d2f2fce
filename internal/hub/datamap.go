package hub

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/datamap"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/store"
	"github.com/custos-iot/custos/internal/wire"
)

// noPersonalData declares the tables and data-directory entries that hold
// no personal data, with the reason. A new table must be added here or to a
// store of DataMap, or TestDataMapCoversEveryStore fails: one line each.
var noPersonalData = map[string]string{
	"tenants":          "organisations (name, ID), not natural persons",
	"connectors":       "edge agents' identities and health; the devices they serve link to subjects, not the connector",
	"enrol_tokens":     "hashes of single-use enrolment tokens",
	"certificates":     "connector certificate serials and lifetimes",
	"operator_tokens":  "hashes of operator API tokens and their names",
	"batches":          "idempotency records: batch ID, connector, time and count; no values, no subject",
	"audit_checkpoint": "signed tree heads of the audit log: hashes only",
	"purposes":         "a tenant's purposes and notices; no subject",
	"grant_versions":   "a per-tenant counter of grant changes",
	"goose_db_version": "schema migration bookkeeping",
	"oidc_providers":   "a tenant's OpenID Connect provider settings; no subject",
	"oidc_flows":       "login flows under way (hashed state, nonce, PKCE verifier), minutes long; no subject",
	"ca":               "the device CA's keys and certificates",
	"hub.db":           "the SQLite database file; its tables are checked one by one",
	"hub.db-wal":       "the SQLite write-ahead log of hub.db (same tables)",
	"hub.db-shm":       "the SQLite shared-memory index of hub.db",
	"consent":          "the hub's consent receipt signing key",
	// OAuth2 apps (internal/oauth). The token tables name the user account
	// (usr_...) an app acts for, never a data subject; they expire within
	// minutes (access tokens, authorization requests) or 30 days (refresh
	// tokens) and are pruned. Removing a user account must revoke its
	// families (store.RevokeOAuthUserFamilies) — the identity side's job.
	"oauth_apps":           "a tenant's registered apps: name, kind, redirect URIs, scopes, secret hash; no subject",
	"oauth_auth_requests":  "pending authorizations (10 min): app, user account ID, PKCE challenge; no subject",
	"oauth_families":       "app authorizations: app, user account ID, scopes, revocation; no subject",
	"oauth_refresh_tokens": "hashes of refresh tokens with their family; no subject",
	"oauth_access_tokens":  "access token IDs (10 min): app, user account ID, scopes; no subject",
	"oauth":                "the OAuth2 server's token-signing and code-encryption keys",
	// Plausibility (docs/plausibility.md).
	"plausibility_policies": "a tenant's plausibility policy (limits, rules on or off); no subject",
}

// exportDir is where subjects' export archives are kept until downloaded:
// <DataDir>/exports/<tenant>/<subject>/<request>.zip.
func (h *Hub) exportDir() string { return filepath.Join(h.cfg.DataDir, "exports") }

// DataMap is the register of every place the hub keeps personal data, with
// its export and erase handlers. Erasure runs the stores in this order:
// the registry (which destroys the subject's key: from then on every
// sealed copy, backups included, is unreadable) comes first. h may be nil
// to describe the map (custos datamap); its handlers then must not be called.
func DataMap(h *Hub) *datamap.Map {
	cats := make([]string, len(registry.Categories))
	for i, c := range registry.Categories {
		cats[i] = string(c)
	}
	return &datamap.Map{NoPersonalData: noPersonalData, Stores: []datamap.Store{
		{
			// First: access to the subject's data stops before anything else.
			Name:       "grants",
			Categories: []string{"access grants given on the subject's data"},
			Tables:     []string{"grants"},
			Export: func(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
				gs, err := h.subjectGrants(ctx, r)
				if err != nil {
					return err
				}
				return out.JSON("grants.json", nonNil(gs))
			},
			Erase: func(ctx context.Context, r datamap.Ref) (datamap.Erased, error) {
				gs, err := h.subjectGrants(ctx, r)
				if err != nil {
					return datamap.Erased{}, err
				}
				for _, g := range gs {
					if err := h.Store.RevokeGrant(ctx, r.Tenant, g.ID); err != nil && !errs.Is(errs.NotFound, err) {
						return datamap.Erased{}, err
					}
				}
				return datamap.Erased{Items: len(gs), Note: "grants on the subject, their sites, devices and streams revoked"}, nil
			},
		},
		{
			// Then the subject's own logins: nobody acts as them any more.
			Name:       "accounts",
			Categories: []string{"login name, roles and linked OpenID Connect account of the subject's user accounts", "their web sessions"},
			Tables:     []string{"users", "sessions"},
			Export: func(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
				us, err := h.Store.SubjectUsers(ctx, r.Tenant, r.Subject)
				if err != nil {
					return err
				}
				return out.JSON("accounts.json", nonNil(us))
			},
			Erase: func(ctx context.Context, r datamap.Ref) (datamap.Erased, error) {
				n, err := h.Store.EraseSubjectUsers(ctx, r.Tenant, r.Subject)
				return datamap.Erased{Items: n, Note: "accounts and their sessions deleted"}, err
			},
		},
		{
			Name:       "registry",
			Categories: []string{"identity (name, e-mail, postal address; sealed)", "sites", "devices (with meter serials and replacement times)", "streams (with site roles)", "subject key"},
			// collection_policies: per stream, erased with it (ON DELETE
			// CASCADE); not yet in the export.
			Tables: []string{"subjects", "sites", "devices", "streams", "collection_policies"},
			Paths:  []string{"keys"},
			Export: func(ctx context.Context, r datamap.Ref, out datamap.Sink) error { return h.exportRegistry(ctx, r, out) },
			Erase:  func(ctx context.Context, r datamap.Ref) (datamap.Erased, error) { return h.eraseRegistry(ctx, r) },
		},
		{
			Name:       "readings",
			Categories: cats,
			Tables:     []string{"chunks", "landing"},
			Export:     func(ctx context.Context, r datamap.Ref, out datamap.Sink) error { return h.exportReadings(ctx, r, out) },
			Erase:      func(ctx context.Context, r datamap.Ref) (datamap.Erased, error) { return h.purgedLater(ctx, r) },
		},
		{
			Name:       "rollups",
			Categories: cats,
			Tables:     []string{"rollups"},
			Export:     func(ctx context.Context, r datamap.Ref, out datamap.Sink) error { return h.exportRollups(ctx, r, out) },
			Erase:      func(ctx context.Context, r datamap.Ref) (datamap.Erased, error) { return h.purgedLater(ctx, r) },
		},
		{
			// Readings the plausibility checks held back, and what the
			// checks learned from the subject's streams (sealed).
			Name:       "quarantine",
			Categories: append([]string{"plausibility state learned from readings"}, cats...),
			Tables:     []string{"quarantine", "plausibility_state"},
			Export: func(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
				return h.exportQuarantine(ctx, r, out)
			},
			Erase: func(ctx context.Context, r datamap.Ref) (datamap.Erased, error) { return h.purgedLater(ctx, r) },
		},
		{
			Name:       "consents",
			Categories: []string{"consent records", "restrictions and objections"},
			Tables:     []string{"consent_events", "restrictions"},
			Export:     func(ctx context.Context, r datamap.Ref, out datamap.Sink) error { return h.exportConsents(ctx, r, out) },
			Erase: func(ctx context.Context, r datamap.Ref) (datamap.Erased, error) {
				n, err := h.Store.EraseSubjectConsents(ctx, r.Tenant, r.Subject)
				return datamap.Erased{Items: n, Note: "receipts the subject holds stay verifiable"}, err
			},
		},
		{
			Name:       "rights-requests",
			Categories: []string{"rights requests", "corrected readings submitted with rectification requests not yet applied (sealed)"},
			Tables:     []string{"rights_requests", "rectification_parts"},
			Export: func(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
				return h.exportRightsRequests(ctx, r, out)
			},
			Erase: func(ctx context.Context, r datamap.Ref) (datamap.Erased, error) {
				n, err := h.Store.EraseSubjectRightsRequests(ctx, r.Tenant, r.Subject)
				return datamap.Erased{Items: n, Note: "erasure requests are kept as evidence (art. 5(2)); they hold the pseudonymous subject ID and what was erased, never erased data; corrections of rectification requests deleted"}, err
			},
		},
		{
			Name:       "exports",
			Categories: []string{"export archives (copies of every category above)"},
			Paths:      []string{"exports"},
			Export:     func(ctx context.Context, r datamap.Ref, out datamap.Sink) error { return h.exportArchives(r, out) },
			Erase:      func(ctx context.Context, r datamap.Ref) (datamap.Erased, error) { return h.eraseArchives(r) },
		},
		{
			Name:       "audit-references",
			Categories: []string{"accesses to the subject's data (who, when, what, purpose)"},
			Tables:     []string{"audit_leaves", "audit_queue"},
			Paths:      []string{"audit"},
			Export:     func(ctx context.Context, r datamap.Ref, out datamap.Sink) error { return h.exportAccesses(ctx, r, out) },
			Erase: func(ctx context.Context, r datamap.Ref) (datamap.Erased, error) {
				return datamap.Erased{Note: "kept: the tamper-evident log cannot drop entries; they name only the pseudonymous subject ID, which after erasure links to no person (art. 17(3)(b), (e))"}, nil
			},
		},
		{
			Name:       "erasure-evidence",
			Categories: []string{"evidence of erasure (pseudonymous ID, times, key IDs)"},
			Tables:     []string{"erasures"},
			Export: func(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
				es, err := h.erasureOf(ctx, r)
				if err != nil {
					return err
				}
				return out.JSON("erasures.json", es)
			},
			Erase: func(ctx context.Context, r datamap.Ref) (datamap.Erased, error) {
				return datamap.Erased{Note: "kept as evidence of the erasure (art. 5(2)); holds no erased data"}, nil
			},
		},
	}}
}

// subjectGrants lists the grants whose resource is the subject or one of
// their sites, devices or streams.
func (h *Hub) subjectGrants(ctx context.Context, r datamap.Ref) ([]access.Grant, error) {
	all, _, err := h.Store.Grants(ctx, r.Tenant)
	if err != nil {
		return nil, err
	}
	mine := map[access.Resource]bool{access.SubjectResource(r.Subject): true}
	sites, err := h.Store.Sites(ctx, r.Tenant)
	if err != nil {
		return nil, err
	}
	for _, s := range sites {
		if s.Subject == r.Subject {
			mine[access.SiteResource(s.ID)] = true
		}
	}
	devs, err := h.Store.Devices(ctx, r.Tenant)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		if mine[access.SiteResource(d.Site)] {
			mine[access.DeviceResource(d.ID)] = true
		}
	}
	streams, err := h.subjectStreams(ctx, r)
	if err != nil {
		return nil, err
	}
	for _, st := range streams {
		mine[access.StreamResource(st.ID)] = true
	}
	var out []access.Grant
	for _, g := range all {
		if mine[g.Resource] {
			out = append(out, g)
		}
	}
	return out, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (h *Hub) subjectStreams(ctx context.Context, r datamap.Ref) ([]registry.Stream, error) {
	all, err := h.Store.Streams(ctx, r.Tenant)
	if err != nil {
		return nil, err
	}
	var out []registry.Stream
	for _, st := range all {
		if st.Subject == r.Subject {
			out = append(out, st)
		}
	}
	return out, nil
}

func (h *Hub) exportRegistry(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
	row, err := h.Store.Subject(ctx, r.Tenant, r.Subject)
	if errs.Is(errs.NotFound, err) {
		return out.JSON("profile.json", map[string]string{"status": "erased or unknown"})
	}
	if err != nil {
		return err
	}
	pt, err := h.Keys.Open(ctx, row.ID, row.Profile, registry.ProfileAD(row.Tenant, row.ID))
	if err != nil {
		return err
	}
	var p registry.Profile
	if err := json.Unmarshal(pt, &p); err != nil {
		return errs.E(errs.Integrity, "subject profile cannot be decoded")
	}
	if err := out.JSON("profile.json", registry.Subject{ID: row.ID, Tenant: row.Tenant, Name: p.Name, Email: p.Email, Address: p.Address, Created: row.Created}); err != nil {
		return err
	}
	sites, err := h.Store.Sites(ctx, r.Tenant)
	if err != nil {
		return err
	}
	mine := map[registry.SiteID]bool{}
	var mySites []registry.Site
	for _, s := range sites {
		if s.Subject == r.Subject {
			mine[s.ID] = true
			mySites = append(mySites, s)
		}
	}
	devs, err := h.Store.Devices(ctx, r.Tenant)
	if err != nil {
		return err
	}
	var myDevs []registry.Device
	for _, d := range devs {
		if mine[d.Site] {
			myDevs = append(myDevs, d)
		}
	}
	streams, err := h.subjectStreams(ctx, r)
	if err != nil {
		return err
	}
	for name, v := range map[string]any{"sites.json": nonNil(mySites), "devices.json": nonNil(myDevs), "streams.json": nonNil(streams)} {
		if err := out.JSON(name, v); err != nil {
			return err
		}
	}
	return nil
}

// eraseRegistry crypto-shreds the subject: their key is destroyed first,
// then they leave the registry with their sites, devices and streams, and
// the erasure evidence is recorded. A subject already erased is done.
func (h *Hub) eraseRegistry(ctx context.Context, r datamap.Ref) (datamap.Erased, error) {
	if _, err := h.Store.Subject(ctx, r.Tenant, r.Subject); errs.Is(errs.NotFound, err) {
		es, err := h.erasureOf(ctx, r)
		if err != nil {
			return datamap.Erased{}, err
		}
		if len(es) == 0 {
			return datamap.Erased{}, errs.E(errs.NotFound, "subject not found")
		}
		return datamap.Erased{Note: "already erased"}, nil
	} else if err != nil {
		return datamap.Erased{}, err
	}
	requested := h.cfg.Now().UTC()
	ev, err := h.Keys.Destroy(ctx, r.Subject)
	if err != nil {
		return datamap.Erased{}, err
	}
	e := &store.Erasure{Subject: r.Subject, Tenant: r.Tenant, Requested: requested, KeyDestroyed: ev.DestroyedAt.UTC()}
	e.Evidence, _ = json.Marshal(ev)
	if err := h.Store.EraseSubject(ctx, e); err != nil {
		return datamap.Erased{}, err
	}
	for _, c := range e.Connectors {
		h.Ingest.Forget(c)
	}
	// The purge is started by the caller once every store is done, so
	// its deletions do not hold the write lock the later stores need.
	return datamap.Erased{Items: 1 + len(e.Streams), Note: "subject key destroyed; profile, sites, devices and " + strconv.Itoa(len(e.Streams)) + " streams removed"}, nil
}

func (h *Hub) erasureOf(ctx context.Context, r datamap.Ref) ([]store.Erasure, error) {
	all, err := h.Store.Erasures(ctx, r.Tenant)
	if err != nil {
		return nil, err
	}
	out := []store.Erasure{}
	for _, e := range all {
		if e.Subject == r.Subject {
			out = append(out, e)
		}
	}
	return out, nil
}

// purgedLater is the erase handler of the stores sealed under the
// subject's key (readings, rollups, quarantine): the registry's handler,
// which runs first, destroyed the key — every row is unreadable from that
// moment, in backups too — and the caller starts the purge that deletes
// the rows in the background once every store is done (the erasure evidence records when it finished). So
// erasure takes the same time for a thousand readings as for ten million.
// If the subject was never erased by the registry handler, it deletes the
// rows itself.
func (h *Hub) purgedLater(ctx context.Context, r datamap.Ref) (datamap.Erased, error) {
	es, err := h.erasureOf(ctx, r)
	if err != nil {
		return datamap.Erased{}, err
	}
	if len(es) == 0 {
		return h.eraseRows(ctx, r, "chunks", "landing", "rollups", "quarantine")
	}
	return datamap.Erased{Note: "unreadable since the key's destruction; rows purged in the background (see the erasure's purged time)"}, nil
}

func (h *Hub) eraseRows(ctx context.Context, r datamap.Ref, tables ...string) (datamap.Erased, error) {
	n := 0
	for _, t := range tables {
		k, err := h.Store.EraseSubjectRows(ctx, t, r.Tenant, r.Subject)
		if err != nil {
			return datamap.Erased{}, err
		}
		n += k
	}
	return datamap.Erased{Items: n, Note: "sealed rows deleted (already unreadable once the key is destroyed)"}, nil
}

// allTime bounds the readings an export covers (wire times are >= 0).
const allTime = int64(1) << 50

func (h *Hub) exportReadings(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
	streams, err := h.subjectStreams(ctx, r)
	if err != nil {
		return err
	}
	for _, st := range streams {
		var rows [][]string
		q := series.Query{Tenant: r.Tenant, Stream: st.ID, From: 0, To: allTime, Limit: series.MaxLimit, Sealer: h.sealer}
		for {
			page, err := series.Read(ctx, h.Store, q)
			if err != nil {
				return err
			}
			for _, rd := range page.Readings {
				rows = append(rows, []string{strconv.FormatInt(rd.Time, 10), strconv.FormatFloat(rd.Value, 'g', -1, 64), strconv.Itoa(int(rd.Quality))})
			}
			if page.Next == "" {
				break
			}
			q.Cursor = page.Next
		}
		if err := out.CSV(string(st.ID)+".csv", []string{"time_ms", "value_" + st.Unit, "quality"}, rows); err != nil {
			return err
		}
	}
	return nil
}

func (h *Hub) exportRollups(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
	streams, err := h.subjectStreams(ctx, r)
	if err != nil {
		return err
	}
	for _, st := range streams {
		for _, res := range rollup.Aggregated {
			bs, err := series.ReadRollups(ctx, h.Store, series.RollupQuery{Tenant: r.Tenant, Stream: st.ID, Res: res, From: 0, To: allTime, Sealer: h.sealer})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, b := range bs {
				f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
				rows = append(rows, []string{strconv.FormatInt(b.Start, 10), strconv.FormatInt(b.Count, 10), f(b.Sum), f(b.Min), f(b.Max), f(b.Mean())})
			}
			if err := out.CSV(string(st.ID)+"_"+string(res)+".csv", []string{"bucket_start_ms", "count", "sum", "min", "max", "mean"}, rows); err != nil {
				return err
			}
		}
	}
	return nil
}

func (h *Hub) exportConsents(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
	hist, err := h.Store.ConsentHistory(ctx, r.Tenant, r.Subject)
	if err != nil {
		return err
	}
	rows := make([][]string, 0, len(hist))
	for _, c := range hist {
		exp := ""
		if !c.Expires.IsZero() {
			exp = c.Expires.UTC().Format("2006-01-02T15:04:05Z07:00")
		}
		rows = append(rows, []string{string(c.ID), string(c.Purpose), strconv.Itoa(c.NoticeVersion), string(c.Event), string(c.Method), c.At.UTC().Format("2006-01-02T15:04:05.000Z07:00"), exp})
	}
	if err := out.CSV("history.csv", []string{"record", "purpose", "notice_version", "event", "method", "at", "expires"}, rows); err != nil {
		return err
	}
	if err := out.JSON("history.json", nonNil(hist)); err != nil {
		return err
	}
	rs, err := h.Store.Restrictions(ctx, r.Tenant, r.Subject)
	if err != nil {
		return err
	}
	return out.JSON("restrictions.json", nonNil(rs))
}

func (h *Hub) subjectExportDir(r datamap.Ref) string {
	return filepath.Join(h.exportDir(), string(r.Tenant), string(r.Subject))
}

func (h *Hub) exportArchives(r datamap.Ref, out datamap.Sink) error {
	type archive struct {
		Name  string `json:"name"`
		Bytes int64  `json:"bytes"`
	}
	list := []archive{}
	ents, err := os.ReadDir(h.subjectExportDir(r))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			list = append(list, archive{e.Name(), fi.Size()})
		}
	}
	// The archives themselves are copies of the other stores' data: listed,
	// not nested.
	return out.JSON("archives.json", list)
}

func (h *Hub) eraseArchives(r datamap.Ref) (datamap.Erased, error) {
	dir := h.subjectExportDir(r)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return datamap.Erased{}, nil
	}
	if err != nil {
		return datamap.Erased{}, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return datamap.Erased{}, err
	}
	return datamap.Erased{Items: len(ents), Note: "export archives deleted"}, nil
}

// exportAccesses writes the audit entries about the subject's data: who
// accessed it, when, how and for which purpose.
func (h *Hub) exportAccesses(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
	size := h.Audit.Size()
	type access struct {
		Index uint64 `json:"index"`
		audit.Entry
	}
	var found []access
	const step = 1 << 14
	for from := uint64(0); from < size; from += step {
		es, err := h.Audit.Entries(ctx, from, min(from+step, size))
		if err != nil {
			return err
		}
		for i, e := range es {
			if e.Subject == audit.SubjectID(r.Subject) {
				found = append(found, access{from + uint64(i), e})
			}
		}
	}
	rows := make([][]string, 0, len(found))
	for _, a := range found {
		rows = append(rows, []string{strconv.FormatUint(a.Index, 10), strconv.FormatInt(a.When, 10), string(a.Principal), string(a.Action), string(a.Resource), string(a.Resolution), string(a.Purpose), string(a.Outcome), string(a.Request)})
	}
	if err := out.CSV("accesses.csv", []string{"index", "when_ms", "principal", "action", "resource", "resolution", "purpose", "outcome", "request"}, rows); err != nil {
		return err
	}
	return out.JSON("accesses.json", nonNil(found))
}

// openReceiptKey loads the consent receipt signing key
// (<DataDir>/consent/receipt.key, 0600, created on first start; replicas
// must share it, like the CA) and its verifier key (receipt.pub).
func (h *Hub) openReceiptKey() (note.Signer, string, error) {
	dir := filepath.Join(h.cfg.DataDir, "consent")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	skey, vkey, err := loadOrCreateNoteKey(dir, "receipt", h.cfg.Names[0]+"/custos-consent")
	if err != nil {
		return nil, "", err
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", err
	}
	return s, vkey, nil
}

// exportQuarantine writes the subject's quarantined readings with the
// reasons they were held back. The learned plausibility state (medians,
// fingerprints) is derived and not exported.
func (h *Hub) exportQuarantine(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
	qs, err := h.Store.SubjectQuarantine(ctx, r.Tenant, r.Subject)
	if err != nil {
		return err
	}
	var rows [][]string
	for _, q := range qs {
		pt, err := h.sealer.Open(ctx, q.Subject, q.Data, series.QuarantineAD(q.Tenant, q.Stream, q.Connector, q.Batch, q.Seq))
		if err != nil {
			return err
		}
		rs, err := wire.DecodeBlock(pt, nil)
		if err != nil {
			return errs.E(errs.Integrity, "a quarantined block cannot be decoded")
		}
		var why []plausibility.Verdict
		json.Unmarshal(q.Reasons, &why)
		reasons := make([]string, len(rs))
		for _, v := range why {
			if v.Index >= 0 && v.Index < len(rs) {
				var names []string
				for _, x := range v.Reasons {
					names = append(names, x.Rule.String())
				}
				reasons[v.Index] = strings.Join(names, " ")
			}
		}
		for i, rd := range rs {
			rows = append(rows, []string{string(q.Stream), strconv.FormatInt(rd.Time, 10), strconv.FormatFloat(rd.Value, 'g', -1, 64), strconv.Itoa(int(rd.Quality)), reasons[i]})
		}
	}
	return out.CSV("quarantine.csv", []string{"stream", "time_ms", "value", "quality", "reasons"}, rows)
}

// exportRightsRequests writes the subject's rights requests and, per
// rectification request not yet applied or refused, the corrected
// readings submitted with it (corrections-<request>.csv).
func (h *Hub) exportRightsRequests(ctx context.Context, r datamap.Ref, out datamap.Sink) error {
	rs, err := h.Store.RightsRequests(ctx, r.Tenant, r.Subject)
	if err != nil {
		return err
	}
	if err := out.JSON("requests.json", nonNil(rs)); err != nil {
		return err
	}
	for _, req := range rs {
		if req.Kind != rights.Rectification || req.Final() {
			continue
		}
		parts, err := h.Store.RectificationParts(ctx, r.Tenant, req.ID)
		if err != nil || len(parts) == 0 {
			if err != nil {
				return err
			}
			continue
		}
		var rows [][]string
		for _, p := range parts {
			pt, err := h.sealer.Open(ctx, p.Subject, p.Data, series.CorrectionsAD(r.Tenant, string(req.ID), p.Seq))
			if err != nil {
				return err
			}
			cs, err := wire.DecodeBlock(pt, nil)
			if err != nil {
				return errs.E(errs.Integrity, "a part of a rectification request's corrections cannot be decoded")
			}
			for _, c := range cs {
				rows = append(rows, []string{strconv.FormatInt(c.Time, 10), strconv.FormatFloat(c.Value, 'g', -1, 64)})
			}
		}
		if err := out.CSV("corrections-"+string(req.ID)+".csv", []string{"time_ms", "value"}, rows); err != nil {
			return err
		}
	}
	return nil
}
