// Package api is the hub's HTTP surface: the operator JSON API, connector
// enrolment, and the device endpoint that connectors push batches to.
//
// It translates HTTP to calls into the domain packages and errors back to
// HTTP status codes (in exactly one function, status). It owns no state and
// no rules of its own beyond authentication of the caller.
package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/datamap"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/identity"
	"github.com/custos-iot/custos/internal/ingest"
	"github.com/custos-iot/custos/internal/oauth"
	"github.com/custos-iot/custos/internal/pki"
	"github.com/custos-iot/custos/internal/seal"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/store"
)

// Config wires the API to the hub's parts.
type Config struct {
	// Store is the database. Must be non-nil.
	Store *store.Store
	// Authority is the device CA. Must be non-nil.
	Authority *pki.Authority
	// Ingest accepts batches. Must be non-nil.
	Ingest *ingest.Service
	// Keys holds every data subject's key. Must be non-nil.
	Keys *seal.Keys
	// Sealer seals and opens stored data; normally Keys. Must be non-nil.
	Sealer series.Sealer
	// Audit is the tamper-evident log every access and change is appended
	// to before it is acknowledged. Must be non-nil.
	Audit *audit.Log
	// AuditKey is the log's public key (a note verifier key).
	AuditKey string
	// AuditWitnesses are the public keys of the witnesses whose
	// cosignatures the hub accepts and serves.
	AuditWitnesses []string
	// Recorder, if set, takes the entries instead of Audit. Benchmarks set
	// it to measure what auditing costs; a hub serving people never does.
	Recorder Recorder
	// Integrator moves the audit entries written with ingested batches
	// into the log. Without it batches get no audit entry (benchmarks of
	// ingest without auditing only; a hub serving people always sets it).
	Integrator Integrator
	// AuthzOff allows reads without a decision. Benchmarks set it to
	// measure what authorization costs; a hub serving people never does.
	AuthzOff bool
	// Purge is called after an erasure so the subject's sealed rows are
	// deleted in the background. Optional.
	Purge func()
	// Compact runs compaction passes until no landed block is left (the
	// compactor's Once), so that a rectification finds the readings it
	// corrects compacted. Optional: without it a rectification of readings
	// not compacted yet answers 409 and is retried later.
	Compact func(context.Context) error
	// KeyJobs runs key rotations and rolls (POST /v1/keys/...). Optional:
	// without it those routes answer 503.
	KeyJobs KeyJobs
	// DataMap registers every store of personal data with its export and
	// erase handlers; rights requests are carried out across it. Optional:
	// without it they answer 503.
	DataMap *datamap.Map
	// ExportDir keeps the archives of access and portability requests
	// (a store of the data map).
	ExportDir string
	// ReceiptSigner signs consent receipts; ReceiptKey is its verifier
	// key, served publicly. Must be non-nil for the consent routes.
	ReceiptSigner note.Signer
	ReceiptKey    string
	// Updates is the agent update repository served at /v1/updates/.
	// Optional: without it those routes answer 404.
	Updates UpdateFiles
	// OAuth is the authorization server for apps. Optional: without it the
	// /oauth2 and app routes answer 503.
	OAuth *oauth.Server
	// DeviceURL is the device endpoint's address as connectors reach it,
	// handed to connectors at enrolment. Optional.
	DeviceURL string
	// EnrolTokenTTL is how long a new enrolment token is valid. Default 24 h.
	EnrolTokenTTL time.Duration
	// CertLifetime is the lifetime of connector certificates. Default 24 h.
	CertLifetime time.Duration
	// Identity serves users, sessions and OIDC login. Optional: without
	// it those routes answer 503.
	Identity *identity.Service
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand is the source of tokens and IDs. Default crypto/rand.Reader.
	Rand io.Reader
	// Log receives request failures (IDs only). Default slog.Default().
	Log *slog.Logger
}

// Recorder appends audit entries durably.
type Recorder interface {
	Append(ctx context.Context, e audit.Entry) (uint64, error)
	AppendBatch(ctx context.Context, es []audit.Entry) (uint64, error)
	// Begin queues entries and returns at once; Wait on the result before
	// acknowledging the action they record.
	Begin(ctx context.Context, es ...audit.Entry) (audit.Pending, error)
}

// Integrator is what the API needs of the audit integrator.
type Integrator interface {
	Wake()
	Flush(ctx context.Context) error
}

// API serves HTTP requests. It is safe for concurrent use.
type API struct {
	cfg      Config
	log      *slog.Logger
	accesses accessIndex
	authz    *authorizer
	cosigned cosigned
	cop      *http.CrossOriginProtection
}

// New returns an API for cfg.
func New(cfg Config) *API {
	if cfg.EnrolTokenTTL == 0 {
		cfg.EnrolTokenTTL = 24 * time.Hour
	}
	if cfg.CertLifetime == 0 {
		cfg.CertLifetime = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Recorder == nil {
		cfg.Recorder = cfg.Audit
	}
	return &API{cfg: cfg, log: cfg.Log, authz: newAuthorizer(cfg.Store), cop: http.NewCrossOriginProtection()}
}

type ctxKey int

const requestIDKey ctxKey = 0

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey).(string)
	return id
}

// handlerFunc is an HTTP handler that reports failure as an error.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap assigns a request ID and turns a returned error into a response.
func (a *API) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b [8]byte
		rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		w.Header().Set("X-Request-Id", id)
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, id))
		if err := h(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// operator requires a valid operator bearer token.
func (a *API) operator(h handlerFunc) handlerFunc { return a.authenticated(nil, h) }

// dataRead is operator for routes that read personal data: after the
// credential, authorize decides (access grants, purpose); a refusal is
// recorded as denied and answered 403, an allowed read as allowed. Either
// way the request has exactly one audit entry. authorize may return a
// request carrying what it looked up for the handler.
func (a *API) dataRead(authorize func(*http.Request) (*http.Request, error), h handlerFunc) handlerFunc {
	return a.authenticated(authorize, h)
}

func (a *API) authenticated(authorize func(*http.Request) (*http.Request, error), h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := a.authenticate(w, r)
		if err != nil {
			return err // denied and recorded
		}
		who := audit.PrincipalID(p.ID)
		r = withPrincipal(r, p)
		if err := scope(r, p, authorize != nil); err != nil {
			if rerr := a.record(r, who, audit.Denied); rerr != nil {
				return rerr
			}
			return err
		}
		if authorize != nil {
			r2, err := authorize(r)
			if err != nil {
				if rerr := a.record(r, who, audit.Denied); rerr != nil {
					return rerr
				}
				return err
			}
			r = r2
		}
		if r.Method == http.MethodGet {
			return a.auditedRead(w, r, who, h)
		}
		// A change is recorded before it is made.
		if err := a.record(r, who, audit.Allowed); err != nil {
			return err
		}
		return h(w, r)
	}
}

// authenticate finds the request's principal: an operator API token
// (Bearer), else a user's web session (cookie; unsafe methods must then be
// same-origin). A missing, unknown, revoked or expired credential is
// refused and recorded as denied.
func (a *API) authenticate(w http.ResponseWriter, r *http.Request) (access.Principal, error) {
	const op errs.Op = "api.authenticate"
	auth := r.Header.Get("Authorization")
	if auth == "" && a.cfg.Identity != nil && identity.HasSessionCookie(r) {
		p, _, err := a.cfg.Identity.Authenticate(r.Context(), r)
		if err != nil {
			return p, a.deny(r, err)
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := a.csrf(r); err != nil {
				return p, a.denyAs(r, audit.PrincipalID(p.ID), err)
			}
		}
		return p, nil
	}
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="custos"`)
		return access.Principal{}, a.deny(r, errs.E(op, errs.Unauthenticated, "missing bearer token; set CUSTOS_TOKEN to the operator token"))
	}
	if a.cfg.OAuth != nil && strings.Count(tok, ".") == 2 {
		// An app's access token (a JWT), checked against the store on
		// every request: revocation applies at once.
		p, err := a.cfg.OAuth.Principal(r.Context(), tok)
		if err != nil {
			return p, a.deny(r, err)
		}
		return p, nil
	}
	t, err := a.cfg.Store.OperatorTokenByHash(r.Context(), sha256.Sum256([]byte(tok)))
	if errs.Is(errs.NotFound, err) {
		return access.Principal{}, a.deny(r, errs.E(op, errs.Unauthenticated, "unknown operator token"))
	}
	if err != nil {
		return access.Principal{}, err
	}
	if !t.Revoked.IsZero() {
		return access.Principal{}, a.deny(r, errs.E(op, errs.Unauthenticated, "operator token revoked"))
	}
	if !t.Expires.IsZero() && a.cfg.Now().After(t.Expires) {
		return access.Principal{}, a.deny(r, errs.E(op, errs.Unauthenticated, "operator token expired"))
	}
	return access.Principal{ID: access.PrincipalID(t.ID), Tenant: t.Tenant, Roles: t.Roles, Expires: t.Expires}, nil
}

// decodeJSON reads a JSON request body strictly: unknown fields and
// trailing data are errors, bodies over 1 MiB are refused.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errs.E(errs.Invalid, fmt.Sprintf("request body: %v", jsonReason(err)))
	}
	if dec.More() {
		return errs.E(errs.Invalid, "request body: trailing data after the JSON object")
	}
	return nil
}

// jsonReason describes a JSON decoding error without echoing input values.
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case err == io.EOF:
		return "empty body, expected a JSON object"
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type (want %s)", te.Field, te.Type)
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "malformed JSON"
}
