package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// record appends the audit entry of an operator request before it runs:
// who (the token's pseudonymous ID), which route, which resource and, for
// reads of a stream or changes to a subject, whose data. If the entry
// cannot be made durable the request is refused: no action without its
// entry.
func (a *API) record(r *http.Request, who audit.PrincipalID, outcome audit.Outcome) error {
	p, err := a.startRecord(r, who, outcome)
	if err != nil {
		return err
	}
	return a.recorded(p)
}

// startRecord queues the audit entry of a request (see record) and returns
// at once; recorded waits until it is durable.
func (a *API) startRecord(r *http.Request, who audit.PrincipalID, outcome audit.Outcome) (audit.Pending, error) {
	e := audit.Entry{
		Principal:  who,
		Action:     audit.Action(r.Pattern),
		Resource:   audit.Resource(r.URL.Path),
		Resolution: audit.Resolution(r.URL.Query().Get("resolution")),
		Purpose:    audit.Purpose(r.URL.Query().Get("purpose")),
		Outcome:    outcome,
		Request:    audit.RequestID(requestID(r)),
	}
	if e.Action == "" {
		e.Action = audit.Action(r.Method + " " + r.URL.Path)
	}
	if who != "anonymous" {
		// A refused read by a known principal names the subject too: the
		// subject sees who tried.
		e.Subject = a.subjectOf(r)
		if e.Resolution == "" && r.PathValue("stream") != "" {
			e.Resolution = "raw"
		}
	}
	p, err := a.cfg.Recorder.Begin(r.Context(), e)
	if err != nil {
		return p, errs.E(errs.Unavailable, fmt.Errorf("audit log: %w", err))
	}
	return p, nil
}

// recorded waits for an entry queued by startRecord to be durable.
func (a *API) recorded(p audit.Pending) error {
	if _, err := p.Wait(); err != nil {
		return errs.E(errs.Unavailable, fmt.Errorf("audit log: %w", err))
	}
	return nil
}

// deny records a refused request and returns its error. A refusal whose
// entry cannot be written is still a refusal.
func (a *API) deny(r *http.Request, err error) error {
	if rerr := a.record(r, "anonymous", audit.Denied); rerr != nil {
		a.log.Error("audit log: recording a denial failed", "request_id", requestID(r), "err", rerr)
	}
	return err
}

// subjectOf names the data subject whose data a request touches, so that
// subjects can find the entries about them.
func (a *API) subjectOf(r *http.Request) audit.SubjectID {
	if s := r.PathValue("subject"); s != "" {
		return audit.SubjectID(s)
	}
	if ar, ok := r.Context().Value(readKey{}).(authorizedRead); ok {
		return audit.SubjectID(ar.stream.Subject) // looked up when authorized
	}
	s := r.PathValue("stream")
	if s == "" && strings.HasSuffix(r.Pattern, "/quarantine") {
		s = r.URL.Query().Get("stream") // a refused quarantine read names its subject too
	}
	if s != "" {
		st, err := a.cfg.Store.Stream(r.Context(), registry.TenantID(r.PathValue("tenant")), registry.StreamID(s))
		if err == nil {
			return audit.SubjectID(st.Subject)
		}
	}
	return ""
}

// auditCheckpoint serves the latest signed checkpoint (a C2SP checkpoint
// in a signed note). It is public: anyone with the log's public key can
// check it and hold the hub to it.
func (a *API) auditCheckpoint(w http.ResponseWriter, r *http.Request) error {
	cp, err := a.cfg.Audit.Checkpoint(r.Context())
	if err != nil {
		return errs.E(errs.Unavailable, err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(cp)
	return nil
}

// auditKey serves the log's public key (a note verifier key).
func (a *API) auditKey(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, a.cfg.AuditKey)
	return nil
}

// Proof is an inclusion or consistency proof.
type Proof struct {
	Proof [][]byte `json:"proof"`
}

func uintParam(r *http.Request, name string) (uint64, error) {
	v, err := strconv.ParseUint(r.URL.Query().Get(name), 10, 64)
	if err != nil {
		return 0, errs.E(errs.Invalid, fmt.Sprintf("%s must be a non-negative integer", name))
	}
	return v, nil
}

// auditInclusion proves that entry index is in the tree of the given size.
func (a *API) auditInclusion(w http.ResponseWriter, r *http.Request) error {
	index, err := uintParam(r, "index")
	if err != nil {
		return err
	}
	size, err := uintParam(r, "size")
	if err != nil {
		return err
	}
	p, err := a.cfg.Audit.InclusionProof(r.Context(), index, size)
	if err != nil {
		return errs.E(errs.Invalid, err)
	}
	writeJSON(w, http.StatusOK, Proof{p})
	return nil
}

// auditConsistency proves that the tree of size from is a prefix of the
// tree of size to.
func (a *API) auditConsistency(w http.ResponseWriter, r *http.Request) error {
	from, err := uintParam(r, "from")
	if err != nil {
		return err
	}
	to, err := uintParam(r, "to")
	if err != nil {
		return err
	}
	p, err := a.cfg.Audit.ConsistencyProof(r.Context(), from, to)
	if err != nil {
		return errs.E(errs.Invalid, err)
	}
	writeJSON(w, http.StatusOK, Proof{p})
	return nil
}

// auditExport writes entries [from, to) with a fresh checkpoint as a
// bundle that `custos audit verify` checks offline. to defaults to the
// whole log.
func (a *API) auditExport(w http.ResponseWriter, r *http.Request) error {
	if err := a.flushAudit(r.Context()); err != nil {
		return err
	}
	cp, err := a.cfg.Audit.Sign(r.Context())
	if err != nil {
		return errs.E(errs.Unavailable, err)
	}
	// The default range is what the checkpoint covers: entries appended
	// since (this request's own, for one) belong to the next export.
	to, err := parseCheckpointSize(cp)
	if err != nil {
		return err
	}
	from := uint64(0)
	if r.URL.Query().Has("from") {
		if from, err = uintParam(r, "from"); err != nil {
			return err
		}
	}
	if r.URL.Query().Has("to") {
		if to, err = uintParam(r, "to"); err != nil {
			return err
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := audit.ExportAt(r.Context(), w, a.cfg.Audit, cp, from, to); err != nil {
		return errs.E(errs.Invalid, err)
	}
	return nil
}

// accessIndex maps data subjects to the audit entries about their data.
// It catches up with the log on every query, reading only the entries
// appended since the last one.
type accessIndex struct {
	mu        sync.Mutex
	upTo      uint64
	bySubject map[audit.SubjectID][]uint64
}

func (x *accessIndex) catchUp(ctx context.Context, l *audit.Log, size uint64) error {
	if x.bySubject == nil {
		x.bySubject = map[audit.SubjectID][]uint64{}
	}
	const step = 1 << 16
	for x.upTo < size {
		end := min(x.upTo+step, size)
		es, err := l.Entries(ctx, x.upTo, end)
		if err != nil {
			return err
		}
		for i, e := range es {
			if e.Subject != "" {
				x.bySubject[e.Subject] = append(x.bySubject[e.Subject], x.upTo+uint64(i))
			}
		}
		x.upTo = end
	}
	return nil
}

// Access is one audit entry about a subject's data, with its proof of
// inclusion in the tree of the answer's checkpoint.
type Access struct {
	Index uint64      `json:"index"`
	Entry audit.Entry `json:"entry"`
	Proof [][]byte    `json:"proof"`
}

// Accesses answers "who accessed my data": the newest audit entries about
// a data subject's data, each with an inclusion proof against a freshly
// signed checkpoint, so the answer can be checked against the public log.
type Accesses struct {
	Checkpoint string   `json:"checkpoint"`
	Size       uint64   `json:"size"`
	Entries    []Access `json:"entries"`
}

func (a *API) subjectAccesses(w http.ResponseWriter, r *http.Request) error {
	if err := a.flushAudit(r.Context()); err != nil {
		return err
	}
	t, sub := registry.TenantID(r.PathValue("tenant")), audit.SubjectID(r.PathValue("subject"))
	if _, err := a.cfg.Store.Subject(r.Context(), t, registry.SubjectID(sub)); err != nil {
		return err
	}
	limit := 1000
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10_000 {
			return errs.E(errs.Invalid, "limit must be between 1 and 10000")
		}
		limit = n
	}
	cp, err := a.cfg.Audit.Sign(r.Context())
	if err != nil {
		return errs.E(errs.Unavailable, err)
	}
	size := a.cfg.Audit.Size()
	a.accesses.mu.Lock()
	err = a.accesses.catchUp(r.Context(), a.cfg.Audit, size)
	idx := a.accesses.bySubject[sub]
	a.accesses.mu.Unlock()
	if err != nil {
		return err
	}
	// The checkpoint covers at least the entries seen at signing time;
	// entries appended since are left for the next question.
	cpSize := size
	if parsed, err := parseCheckpointSize(cp); err == nil {
		cpSize = parsed
	}
	out := Accesses{Checkpoint: string(cp), Size: cpSize, Entries: []Access{}}
	for i := len(idx) - 1; i >= 0 && len(out.Entries) < limit; i-- {
		if idx[i] >= cpSize {
			continue
		}
		es, err := a.cfg.Audit.Entries(r.Context(), idx[i], idx[i]+1)
		if err != nil {
			return err
		}
		p, err := a.cfg.Audit.InclusionProof(r.Context(), idx[i], cpSize)
		if err != nil {
			return err
		}
		out.Entries = append(out.Entries, Access{Index: idx[i], Entry: es[0], Proof: p})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parseCheckpointSize reads the tree size from a checkpoint note's body
// (origin, size, root), without verifying it: the caller signed it.
func parseCheckpointSize(note []byte) (uint64, error) {
	lines := strings.SplitN(string(note), "\n", 3)
	if len(lines) < 3 {
		return 0, errs.E(errs.Invalid, "malformed checkpoint")
	}
	return strconv.ParseUint(lines[1], 10, 64)
}

// cosigned holds the newest checkpoint that known witnesses cosigned.
type cosigned struct {
	mu   sync.Mutex
	note []byte
	size uint64
}

// auditCosign takes a witness's cosigned checkpoint. The witness proves
// who it is by its signature: the copy must carry the log's signature and
// at least one signature of a witness the hub is configured to know. The
// newest such checkpoint, with every cosignature gathered for it, is served
// at /v1/audit/checkpoint/cosigned.
func (a *API) auditCosign(w http.ResponseWriter, r *http.Request) error {
	const op errs.Op = "api.auditCosign"
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		return a.denyAs(r, "witness", errs.E(op, errs.TooLarge, "a cosigned checkpoint is at most 64 KiB"))
	}
	logV, err := audit.NewVerifier(a.cfg.AuditKey)
	if err != nil {
		return err
	}
	var wvs []note.Verifier
	for _, k := range a.cfg.AuditWitnesses {
		v, err := audit.NewVerifier(k)
		if err != nil {
			return errs.E(op, fmt.Errorf("configured witness key: %w", err))
		}
		wvs = append(wvs, v)
	}
	if len(wvs) == 0 {
		return a.denyAs(r, "witness", errs.E(op, errs.Forbidden, "this hub knows no witnesses (--audit-witness)"))
	}
	merged, err := audit.MergeCosignatures(body, logV, wvs, body)
	if err != nil {
		return a.denyAs(r, "witness", errs.E(op, errs.Invalid, err))
	}
	cp, n, err := audit.VerifyCheckpoint(merged, logV, wvs, 1)
	if err != nil || n == 0 {
		return a.denyAs(r, "witness", errs.E(op, errs.Forbidden, "no cosignature by a witness this hub knows"))
	}
	if err := a.record(r, "witness", audit.Allowed); err != nil {
		return err
	}
	a.cosigned.mu.Lock()
	defer a.cosigned.mu.Unlock()
	switch {
	case a.cosigned.note != nil && cp.Size == a.cosigned.size:
		if m, err := audit.MergeCosignatures(a.cosigned.note, logV, wvs, merged); err == nil {
			a.cosigned.note = m
		}
	case cp.Size > a.cosigned.size || a.cosigned.note == nil:
		a.cosigned.note, a.cosigned.size = merged, cp.Size
	}
	writeJSON(w, http.StatusOK, map[string]any{"size": cp.Size, "witnesses": n})
	return nil
}

// denyAs records a refused request of a principal that has no token.
func (a *API) denyAs(r *http.Request, who audit.PrincipalID, err error) error {
	if rerr := a.record(r, who, audit.Denied); rerr != nil {
		a.log.Error("audit log: recording a denial failed", "request_id", requestID(r), "err", rerr)
	}
	return err
}

// auditCosigned serves the newest checkpoint cosigned by known witnesses.
func (a *API) auditCosigned(w http.ResponseWriter, r *http.Request) error {
	a.cosigned.mu.Lock()
	n := a.cosigned.note
	a.cosigned.mu.Unlock()
	if n == nil {
		return errs.E(errs.NotFound, "no cosigned checkpoint yet")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(n)
	return nil
}

// auditedRead serves a read while its audit entry is made durable, and
// releases the answer only once the entry is: the read costs the longer of
// the two, not their sum. The entry is queued before the read starts, on
// the request's own goroutine, so that no goroutine has to be scheduled
// before the log's sequencer can begin writing it. If the entry cannot be
// written the answer is dropped and the request refused, as for any other
// action.
func (a *API) auditedRead(w http.ResponseWriter, r *http.Request, who audit.PrincipalID, h handlerFunc) error {
	p, err := a.startRecord(r, who, audit.Allowed)
	if err != nil {
		return err
	}
	buf := &heldResponse{header: http.Header{}}
	herr := h(buf, r)
	if err := a.recorded(p); err != nil {
		return err
	}
	if herr != nil {
		return herr
	}
	for k, v := range buf.header {
		w.Header()[k] = v
	}
	if buf.code == 0 {
		buf.code = http.StatusOK
	}
	w.WriteHeader(buf.code)
	_, err = w.Write(buf.body.Bytes())
	return err
}

// heldResponse keeps a response until it may be sent.
type heldResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (h *heldResponse) Header() http.Header { return h.header }

func (h *heldResponse) WriteHeader(code int) {
	if h.code == 0 {
		h.code = code
	}
}

func (h *heldResponse) Write(p []byte) (int, error) {
	if h.code == 0 {
		h.code = http.StatusOK
	}
	return h.body.Write(p)
}

// flushAudit integrates the queued audit entries (ingested batches'), so
// that an export or a subject's question sees every acknowledged action.
func (a *API) flushAudit(ctx context.Context) error {
	if a.cfg.Integrator == nil {
		return nil
	}
	if err := a.cfg.Integrator.Flush(ctx); err != nil {
		return errs.E(errs.Unavailable, err)
	}
	return nil
}
