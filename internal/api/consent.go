package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/collection"
	"github.com/custos-iot/custos/internal/consent"
	"github.com/custos-iot/custos/internal/datamap"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/store"
	"github.com/custos-iot/custos/internal/wire"
)

// addPurpose adds a purpose or a new version of it (a changed notice,
// basis, category list, recipients, retention or resolution).
func (a *API) addPurpose(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var p consent.Purpose
	if err := decodeJSON(w, r, &p); err != nil {
		return err
	}
	p.Tenant, p.Version, p.Created = t, 0, a.cfg.Now().UTC()
	if err := p.Check(); err != nil {
		return err
	}
	p, err = a.cfg.Store.AddPurpose(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, p)
	return nil
}

// purposeNotice serves a purpose's notice: the newest version, or the one
// named by ?version=.
func (a *API) purposeNotice(w http.ResponseWriter, r *http.Request) error {
	t, id := pathTenant(r), consent.PurposeID(r.PathValue("purpose"))
	var p consent.Purpose
	var err error
	if v := r.URL.Query().Get("version"); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 1 {
			return errs.E(errs.Invalid, "version must be a positive number")
		}
		p, err = a.cfg.Store.PurposeVersion(r.Context(), t, id, n)
	} else {
		p, err = a.cfg.Store.Purpose(r.Context(), t, id)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

// subjectOfPath checks that the subject in the path exists in the tenant.
func (a *API) subjectOfPath(r *http.Request) (registry.TenantID, registry.SubjectID, error) {
	t, s := pathTenant(r), registry.SubjectID(r.PathValue("subject"))
	if _, err := a.cfg.Store.Subject(r.Context(), t, s); err != nil {
		return t, s, err
	}
	return t, s, nil
}

// ConsentAnswer is a consent event with its signed receipt.
type ConsentAnswer struct {
	Record  consent.Record `json:"record"`
	Receipt string         `json:"receipt"`
	// Erased lists what a withdrawal with erase removed, per stream.
	Erased []StreamErased `json:"erased,omitempty"`
}

// consentEvent records giving (POST .../consents) or withdrawing (POST
// .../consents/{purpose}/withdraw) a consent, on the purpose's current
// notice, and answers with the signed receipt.
func (a *API) consentEvent(ev consent.Event) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		t, s, err := a.subjectOfPath(r)
		if err != nil {
			return err
		}
		var in struct {
			Purpose consent.PurposeID `json:"purpose"`
			Method  consent.Method    `json:"method"`
			Expires time.Time         `json:"expires,omitzero"`
			// Erase, on a withdrawal, erases the data collected under the
			// purpose that no purpose still in force needs.
			Erase bool `json:"erase,omitempty"`
		}
		if err := decodeJSON(w, r, &in); err != nil {
			return err
		}
		if ev == consent.Withdrawn {
			if in.Purpose != "" && in.Purpose != consent.PurposeID(r.PathValue("purpose")) {
				return errs.E(errs.Invalid, "the purpose in the body differs from the path")
			}
			in.Purpose = consent.PurposeID(r.PathValue("purpose"))
			if !in.Expires.IsZero() {
				return errs.E(errs.Invalid, "a withdrawal has no expiry")
			}
		} else if in.Erase {
			return errs.E(errs.Invalid, "erase goes with a withdrawal")
		}
		if err := consent.CheckMethod(in.Method); err != nil {
			return err
		}
		p, err := a.cfg.Store.Purpose(r.Context(), t, in.Purpose)
		if err != nil {
			return err
		}
		if p.Basis != consent.BasisConsent {
			return errs.E(errs.Conflict, fmt.Sprintf("purpose %q rests on %s, not on consent; object to it instead (a rights request of kind objection)", p.ID, p.Basis))
		}
		now := a.cfg.Now().UTC()
		if ev == consent.Given && !in.Expires.IsZero() && !in.Expires.After(now) {
			return errs.E(errs.Invalid, "expires must be in the future")
		}
		if ev == consent.Withdrawn {
			last, ok, err := a.cfg.Store.LatestConsent(r.Context(), t, s, p.ID)
			if err != nil {
				return err
			}
			if !ok || !consent.InForce(last, now) {
				return errs.E(errs.Conflict, "no consent in force for that purpose")
			}
		}
		id, err := a.newID("cns")
		if err != nil {
			return err
		}
		rec := consent.Record{ID: consent.RecordID(id), Tenant: t, Subject: s, Purpose: p.ID, NoticeVersion: p.Version, Event: ev, Method: in.Method, At: now, Expires: in.Expires.UTC()}
		receipt, err := consent.SignReceipt(a.cfg.ReceiptSigner, rec, p)
		if err != nil {
			return err
		}
		if err := a.cfg.Store.AppendConsent(r.Context(), rec); err != nil {
			return err
		}
		cols, err := a.applyCollection(r.Context(), t, s)
		if err != nil {
			return err
		}
		ans := ConsentAnswer{Record: rec, Receipt: string(receipt)}
		if in.Erase {
			if ans.Erased, err = a.eraseUnneeded(r.Context(), t, cols); err != nil {
				return err
			}
		}
		writeJSON(w, http.StatusCreated, ans)
		return nil
	}
}

// ConsentState is one purpose's consent of a subject: in force or not,
// with the newest record.
type ConsentState struct {
	Purpose consent.PurposeID `json:"purpose"`
	InForce bool              `json:"in_force"`
	Latest  consent.Record    `json:"latest"`
}

// Consents is a subject's consent history and current state.
type Consents struct {
	State        []ConsentState        `json:"state"`
	History      []consent.Record      `json:"history"`
	Restrictions []consent.Restriction `json:"restrictions"`
}

func (a *API) listConsents(w http.ResponseWriter, r *http.Request) error {
	t, s, err := a.subjectOfPath(r)
	if err != nil {
		return err
	}
	if err := a.expireDue(r.Context(), t, s); err != nil {
		return err
	}
	hist, err := a.cfg.Store.ConsentHistory(r.Context(), t, s)
	if err != nil {
		return err
	}
	rs, err := a.cfg.Store.Restrictions(r.Context(), t, s)
	if err != nil {
		return err
	}
	latest := map[consent.PurposeID]consent.Record{}
	var order []consent.PurposeID
	for _, c := range hist {
		if _, ok := latest[c.Purpose]; !ok {
			order = append(order, c.Purpose)
		}
		latest[c.Purpose] = c
	}
	out := Consents{State: []ConsentState{}, History: nonNil(hist), Restrictions: nonNil(rs)}
	now := a.cfg.Now()
	for _, p := range order {
		out.State = append(out.State, ConsentState{Purpose: p, InForce: consent.InForce(latest[p], now), Latest: latest[p]})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// expireDue appends an expired event to each of the subject's consents
// whose expiry has passed, so the history shows it. (The gate treats them
// as expired from the expiry time on, whether or not this ran.)
func (a *API) expireDue(ctx context.Context, t registry.TenantID, s registry.SubjectID) error {
	hist, err := a.cfg.Store.ConsentHistory(ctx, t, s)
	if err != nil {
		return err
	}
	latest := map[consent.PurposeID]consent.Record{}
	for _, c := range hist {
		latest[c.Purpose] = c
	}
	now := a.cfg.Now().UTC()
	for _, c := range latest {
		if c.Event != consent.Given || c.Expires.IsZero() || now.Before(c.Expires) {
			continue
		}
		id, err := a.newID("cns")
		if err != nil {
			return err
		}
		if err := a.cfg.Store.AppendConsent(ctx, consent.Record{ID: consent.RecordID(id), Tenant: t, Subject: s, Purpose: c.Purpose, NoticeVersion: c.NoticeVersion,
			Event: consent.Expired, Method: "expiry", At: c.Expires}); err != nil {
			return err
		}
	}
	return nil
}

// consentReceipt serves the signed receipt of one consent event again.
func (a *API) consentReceipt(w http.ResponseWriter, r *http.Request) error {
	t, s := pathTenant(r), registry.SubjectID(r.PathValue("subject"))
	rec, err := a.cfg.Store.ConsentEvent(r.Context(), t, consent.RecordID(r.PathValue("record")))
	if err != nil {
		return err
	}
	if rec.Subject != s {
		return errs.E(errs.NotFound, "consent record not found")
	}
	p, err := a.cfg.Store.PurposeVersion(r.Context(), t, rec.Purpose, rec.NoticeVersion)
	if err != nil {
		return err
	}
	receipt, err := consent.SignReceipt(a.cfg.ReceiptSigner, rec, p)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(receipt)
	return nil
}

// consentKey serves the receipt verifier key. It is public: anyone checks
// receipts with it.
func (a *API) consentKey(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, a.cfg.ReceiptKey)
	return nil
}

// createRightsRequest opens a rights request. Restriction and objection
// take effect at once (the gate stops processing for the purpose) and the
// request is done. A rectification request names the subject's stream and
// the grounds, and may carry corrections and delete ranges (more follow
// with POST .../corrections); it is applied by fulfilling it.
func (a *API) createRightsRequest(w http.ResponseWriter, r *http.Request) error {
	t, s, err := a.subjectOfPath(r)
	if err != nil {
		return err
	}
	var in struct {
		Kind        rights.Kind       `json:"kind"`
		RequestedBy rights.Requester  `json:"requested_by"`
		Purpose     consent.PurposeID `json:"purpose,omitempty"`
		// Rectification only.
		Stream      registry.StreamID   `json:"stream,omitempty"`
		Grounds     string              `json:"grounds,omitempty"`
		Corrections []series.Correction `json:"corrections,omitempty"`
		Delete      []series.TimeRange  `json:"delete,omitempty"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	now := a.cfg.Now().UTC()
	id, err := a.newID("rrq")
	if err != nil {
		return err
	}
	req := rights.Request{ID: rights.RequestID(id), Tenant: t, Subject: s, Kind: in.Kind, RequestedBy: in.RequestedBy, Purpose: in.Purpose,
		Status: rights.Open, Opened: now, Due: rights.DueAfter(now), Updated: now}
	if in.Kind == rights.Rectification || in.Stream != "" || in.Grounds != "" || len(in.Corrections) > 0 || len(in.Delete) > 0 {
		req.Rectification = &rights.RectificationClaim{Stream: in.Stream, Grounds: in.Grounds, Delete: in.Delete}
	}
	if err := req.Check(); err != nil {
		return err
	}
	var parts []store.RectificationPart
	if req.Kind == rights.Rectification {
		if err := a.ownStream(r.Context(), req); err != nil {
			return err
		}
		if len(in.Corrections) > 0 {
			p, err := a.correctionsPart(r.Context(), &req, in.Corrections, nil)
			if err != nil {
				return err
			}
			parts = append(parts, p)
		}
	}
	if req.Kind == rights.Restriction || req.Kind == rights.Objection {
		if _, err := a.cfg.Store.Purpose(r.Context(), t, req.Purpose); err != nil {
			return err
		}
		kind := consent.Restricted
		if req.Kind == rights.Objection {
			kind = consent.Objected
		}
		if err := a.cfg.Store.SetRestriction(r.Context(), consent.Restriction{Tenant: t, Subject: s, Purpose: req.Purpose, Kind: kind, Since: now}); err != nil {
			return err
		}
		if _, err := a.applyCollection(r.Context(), t, s); err != nil {
			return err
		}
		req.Status = rights.Done
		req.Evidence, _ = json.Marshal(map[string]string{"effect": "processing for purpose " + string(req.Purpose) + " stopped; data kept"})
	}
	if err := a.cfg.Store.CreateRightsRequest(r.Context(), req, parts...); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, req)
	return nil
}

// ownStream checks that a rectification request's stream is one of its
// subject's: nobody rectifies another person's data through their request.
func (a *API) ownStream(ctx context.Context, req rights.Request) error {
	st, err := a.cfg.Store.Stream(ctx, req.Tenant, req.Rectification.Stream)
	if err != nil {
		return err
	}
	if st.Subject != req.Subject {
		return errs.E(errs.Forbidden, fmt.Sprintf("stream %s is not subject %s's: a rectification request covers only the subject's own readings", st.ID, req.Subject))
	}
	return nil
}

// correctionsPart checks a part of a rectification request's corrections,
// records it in req (rights.Request.AddCorrections) and seals it under the
// subject's key as a wire block.
func (a *API) correctionsPart(ctx context.Context, req *rights.Request, cs []series.Correction, del []series.TimeRange) (store.RectificationPart, error) {
	first := 1
	if req.Rectification != nil {
		first = req.Rectification.Corrections + 1
	}
	if err := series.CheckCorrections(cs, first); err != nil {
		return store.RectificationPart{}, err
	}
	if len(cs) > wire.MaxReadingsPerBatch {
		return store.RectificationPart{}, errs.E(errs.Invalid, fmt.Sprintf("at most %d corrections per part", wire.MaxReadingsPerBatch))
	}
	if err := req.AddCorrections(len(cs), del); err != nil {
		return store.RectificationPart{}, err
	}
	if len(cs) == 0 {
		return store.RectificationPart{}, nil
	}
	rs := make([]wire.Reading, len(cs))
	for i, c := range cs {
		rs[i] = wire.Reading{Time: c.Time, Value: c.Value}
	}
	seq := req.Rectification.Parts
	ct, err := a.cfg.Sealer.Seal(ctx, req.Subject, wire.AppendBlock(nil, rs), series.CorrectionsAD(req.Tenant, string(req.ID), seq))
	if err != nil {
		return store.RectificationPart{}, err
	}
	return store.RectificationPart{Tenant: req.Tenant, Request: req.ID, Seq: seq, Subject: req.Subject, Stream: req.Rectification.Stream, Count: len(cs), Data: ct}, nil
}

// addCorrections adds a part of corrections (at most 1 MiB of JSON) and
// delete ranges to a rectification request that is not done or refused.
func (a *API) addCorrections(w http.ResponseWriter, r *http.Request) error {
	req, err := a.rightsRequestOf(r)
	if err != nil {
		return err
	}
	var in struct {
		Corrections []series.Correction `json:"corrections"`
		Delete      []series.TimeRange  `json:"delete,omitempty"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if len(in.Corrections) == 0 && len(in.Delete) == 0 {
		return errs.E(errs.Invalid, "no corrections and no delete ranges")
	}
	p, err := a.correctionsPart(r.Context(), &req, in.Corrections, in.Delete)
	if err != nil {
		return err
	}
	req.Updated = a.cfg.Now().UTC()
	if err := a.cfg.Store.AddRectificationPart(r.Context(), req, p); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

// applyRectification carries out a rectification request: the stored
// readings take the corrected values (or are deleted), the affected rollup
// buckets are recomputed at every resolution, and the request becomes
// done with its evidence — in one transaction (series.Rectification.Apply,
// store.Store.Rectify). Bad input or a bucket that cannot be recomputed
// changes nothing, the request included.
func (a *API) applyRectification(w http.ResponseWriter, r *http.Request, req rights.Request) error {
	ctx := r.Context()
	if err := req.Transition(rights.Done, ""); err != nil {
		return err
	}
	rc := req.Rectification
	if rc == nil {
		return errs.E(errs.Integrity, "the rectification request has no details")
	}
	if err := a.ownStream(ctx, req); err != nil {
		return err
	}
	parts, err := a.cfg.Store.RectificationParts(ctx, req.Tenant, req.ID)
	if err != nil {
		return err
	}
	rect := series.Rectification{Tenant: req.Tenant, Subject: req.Subject, Stream: rc.Stream, Delete: rc.Delete,
		Corrections: make([]series.Correction, 0, rc.Corrections)}
	var rs []wire.Reading
	for _, p := range parts {
		if p.Subject != req.Subject || p.Stream != rc.Stream {
			return errs.E(errs.Integrity, "a part of the corrections belongs to another stream")
		}
		pt, err := a.cfg.Sealer.Open(ctx, p.Subject, p.Data, series.CorrectionsAD(req.Tenant, string(req.ID), p.Seq))
		if err != nil {
			return err
		}
		if rs, err = wire.DecodeBlock(pt, rs[:0]); err != nil {
			return errs.E(errs.Integrity, "a part of the corrections cannot be decoded")
		}
		for _, x := range rs {
			rect.Corrections = append(rect.Corrections, series.Correction{Time: x.Time, Value: x.Value})
		}
	}
	var done rights.Request
	apply := func(ctx context.Context, tx *store.RectifyTx) error {
		res, err := rect.Apply(ctx, tx, a.cfg.Sealer)
		if err != nil {
			return err
		}
		now := a.cfg.Now().UTC()
		done = req
		done.Status, done.Updated = rights.Done, now
		done.Evidence, _ = json.Marshal(rights.RectificationEvidence{Stream: rc.Stream, Applied: now, Rectified: res})
		return tx.FinishRequest(ctx, done, len(parts))
	}
	// Readings still landing at the times to rectify are compacted first;
	// the background compactor may race ahead with new ones, so try again.
	for attempt := 1; ; attempt++ {
		if a.cfg.Compact != nil {
			if err := a.cfg.Compact(ctx); err != nil {
				return errs.E(errs.Unavailable, err)
			}
		}
		err = a.cfg.Store.Rectify(ctx, req.Tenant, rc.Stream, apply)
		if !errors.Is(err, series.ErrNotCompacted) || attempt == 3 {
			break
		}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, done)
	return nil
}

// liftRestriction ends a restriction or objection of a purpose.
func (a *API) liftRestriction(w http.ResponseWriter, r *http.Request) error {
	t, s, err := a.subjectOfPath(r)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.LiftRestriction(r.Context(), t, s, consent.PurposeID(r.PathValue("purpose"))); err != nil {
		return err
	}
	if _, err := a.applyCollection(r.Context(), t, s); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "lifted"})
	return nil
}

func (a *API) listRightsRequests(w http.ResponseWriter, r *http.Request) error {
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	rs, err := a.cfg.Store.RightsRequests(r.Context(), t, registry.SubjectID(r.PathValue("subject")))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(rs))
	return nil
}

func (a *API) rightsRequestOf(r *http.Request) (rights.Request, error) {
	req, err := a.cfg.Store.RightsRequest(r.Context(), pathTenant(r), rights.RequestID(r.PathValue("request")))
	if err != nil {
		return req, err
	}
	if req.Subject != registry.SubjectID(r.PathValue("subject")) {
		return req, errs.E(errs.NotFound, "rights request not found")
	}
	return req, nil
}

// setRightsStatus moves a request by hand: in progress, done, or refused
// with a reason (a refused rectification's corrections are deleted).
func (a *API) setRightsStatus(w http.ResponseWriter, r *http.Request) error {
	req, err := a.rightsRequestOf(r)
	if err != nil {
		return err
	}
	var in struct {
		Status rights.Status `json:"status"`
		Reason string        `json:"reason,omitempty"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := req.Transition(in.Status, in.Reason); err != nil {
		return err
	}
	if req.Kind == rights.Rectification && in.Status == rights.Done {
		return errs.E(errs.Conflict, "a rectification is done by applying it: POST .../rights/{request}/fulfil")
	}
	req.Status, req.Reason, req.Updated = in.Status, in.Reason, a.cfg.Now().UTC()
	if err := a.cfg.Store.UpdateRightsRequest(r.Context(), req); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

// ExportEvidence is what an access or portability request leaves as evidence.
type ExportEvidence struct {
	Archive string                 `json:"archive"`
	Bytes   int64                  `json:"bytes"`
	SHA256  string                 `json:"sha256"`
	Stores  []rights.ManifestStore `json:"stores"`
	Erased  []datamap.Erased       `json:"erased,omitempty"`
}

// fulfilRightsRequest carries out an access, portability or erasure
// request across every store of the data map, or applies a rectification,
// and records the evidence.
func (a *API) fulfilRightsRequest(w http.ResponseWriter, r *http.Request) error {
	req, err := a.rightsRequestOf(r)
	if err != nil {
		return err
	}
	if req.Kind == rights.Rectification {
		return a.applyRectification(w, r, req)
	}
	if err := req.Transition(rights.Done, ""); err != nil {
		return err
	}
	if a.cfg.DataMap == nil {
		return errs.E(errs.Unavailable, "this hub has no data map")
	}
	ref := datamap.Ref{Tenant: req.Tenant, Subject: req.Subject}
	req.Status, req.Updated = rights.InProgress, a.cfg.Now().UTC()
	if err := a.cfg.Store.UpdateRightsRequest(r.Context(), req); err != nil {
		return err
	}
	switch req.Kind {
	case rights.Access, rights.Portability:
		ev, err := a.writeArchive(r.Context(), req, ref)
		if err != nil {
			return err
		}
		req.Evidence, _ = json.Marshal(ev)
	case rights.Erasure:
		erased, err := rights.Erase(r.Context(), a.cfg.DataMap, ref)
		if a.cfg.Purge != nil {
			a.cfg.Purge() // the sealed rows, unreadable already, go in the background
		}
		req.Evidence, _ = json.Marshal(map[string]any{"erased": erased})
		if err != nil {
			// The evidence so far is kept; the request stays in progress
			// and fulfilling it again finishes the job.
			a.cfg.Store.UpdateRightsRequest(r.Context(), req)
			return err
		}
	default:
		return errs.E(errs.Conflict, fmt.Sprintf("a %s request is carried out by hand; set its status when done", req.Kind))
	}
	req.Status, req.Updated = rights.Done, a.cfg.Now().UTC()
	if err := a.cfg.Store.UpdateRightsRequest(r.Context(), req); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

func (a *API) archivePath(req rights.Request) string {
	return filepath.Join(a.cfg.ExportDir, string(req.Tenant), string(req.Subject), string(req.ID)+".zip")
}

func (a *API) writeArchive(ctx context.Context, req rights.Request, ref datamap.Ref) (ExportEvidence, error) {
	var buf bytes.Buffer
	man, err := rights.Export(ctx, a.cfg.DataMap, ref, a.cfg.Now(), &buf, nil)
	if err != nil {
		return ExportEvidence{}, err
	}
	p := a.archivePath(req)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return ExportEvidence{}, err
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		return ExportEvidence{}, err
	}
	sum := sha256.Sum256(buf.Bytes())
	return ExportEvidence{Archive: filepath.Base(p), Bytes: int64(buf.Len()), SHA256: hex.EncodeToString(sum[:]), Stores: man.Stores}, nil
}

// rightsArchive serves the archive of a done access or portability request.
func (a *API) rightsArchive(w http.ResponseWriter, r *http.Request) error {
	req, err := a.rightsRequestOf(r)
	if err != nil {
		return err
	}
	if (req.Kind != rights.Access && req.Kind != rights.Portability) || req.Status != rights.Done {
		return errs.E(errs.Conflict, "only a done access or portability request has an archive")
	}
	b, err := os.ReadFile(a.archivePath(req))
	if os.IsNotExist(err) {
		return errs.E(errs.NotFound, "the archive is gone (the subject was erased, or it was removed)")
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("Content-Disposition", `attachment; filename="`+string(req.ID)+`.zip"`)
	w.Write(b)
	return nil
}

// dataMap describes the hub's data map.
func (a *API) dataMap(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.DataMap == nil {
		return errs.E(errs.Unavailable, "this hub has no data map")
	}
	writeJSON(w, http.StatusOK, a.cfg.DataMap.Describe())
	return nil
}

// applyCollection sets the collection policy of each of subject s's streams
// to what the tenant's purposes in force allow (consent.Gate.Collections):
// a stream no purpose allows is not sent at all, the others no finer than
// the finest purpose in force needs. Agents pick the change up within one
// policy refresh; the hub refuses finer readings after the grace period.
// It runs after every consent, restriction and objection change. A failure
// fails the request: the change is stored, and repeating the request (or
// the next change) applies the policies again.
func (a *API) applyCollection(ctx context.Context, t registry.TenantID, s registry.SubjectID) ([]consent.Collection, error) {
	all, err := a.cfg.Store.Streams(ctx, t)
	if err != nil {
		return nil, errs.E(errs.Unavailable, err)
	}
	var refs []consent.StreamRef
	for _, st := range all {
		if st.Subject == s {
			refs = append(refs, consent.StreamRef{Stream: st.ID, Subject: s, Category: st.Category})
		}
	}
	if len(refs) == 0 {
		return nil, nil
	}
	ps, err := a.cfg.Store.Purposes(ctx, t)
	if err != nil {
		return nil, errs.E(errs.Unavailable, err)
	}
	ids := make([]consent.PurposeID, len(ps))
	for i, p := range ps {
		ids[i] = p.ID
	}
	cols, err := consent.Gate{Source: a.cfg.Store}.Collections(ctx, t, ids, refs, a.cfg.Now())
	if err != nil {
		return nil, errs.E(errs.Unavailable, err)
	}
	for _, c := range cols {
		pol := collection.Policy{Send: c.Collect, Finest: rollup.Raw}
		reason := "no purpose in force allows collecting it"
		if c.Collect {
			pol.Finest = c.Finest
			names := make([]string, len(c.Purposes))
			for i, p := range c.Purposes {
				names[i] = string(p)
			}
			reason = "purposes in force: " + strings.Join(names, ", ")
		}
		if _, err := a.cfg.Store.SetCollectionPolicy(ctx, t, c.Stream, pol, "consent change; "+reason); err != nil {
			return nil, errs.E(errs.Unavailable, err)
		}
	}
	return cols, nil
}

// StreamErased is what a withdrawal with erase removed from one stream.
type StreamErased struct {
	Stream registry.StreamID `json:"stream"`
	// Kept is the finest resolution still kept ("" if nothing is).
	Kept rollup.Resolution `json:"kept,omitempty"`
	Rows int               `json:"rows"`
}

// eraseUnneeded erases, per stream, what no purpose still in force needs:
// everything of a stream no longer collected, else the readings and
// rollups finer than the finest resolution still needed.
func (a *API) eraseUnneeded(ctx context.Context, t registry.TenantID, cols []consent.Collection) ([]StreamErased, error) {
	out := []StreamErased{}
	for _, c := range cols {
		keep := rollup.Resolution("")
		if c.Collect {
			keep = c.Finest
		}
		if keep == rollup.Raw {
			continue // still needed at full resolution
		}
		n, err := a.cfg.Store.EraseStreamReadings(ctx, t, c.Stream, keep)
		if err != nil {
			return out, errs.E(errs.Unavailable, err)
		}
		out = append(out, StreamErased{Stream: c.Stream, Kept: keep, Rows: n})
	}
	return out, nil
}
