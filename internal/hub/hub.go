// Package hub is the composition root of the Custos hub: it turns a Config
// into running parts (store, CA, ingest, HTTP endpoints) and runs them.
//
// It is the only place that wires everything together. Only cmd/custos
// and tests import it.
package hub

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/identity"
	"github.com/custos-iot/custos/internal/ingest"
	"github.com/custos-iot/custos/internal/oauth"
	"github.com/custos-iot/custos/internal/pki"
	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/seal"
	"github.com/custos-iot/custos/internal/seal/pkcs11"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/store"
	"github.com/custos-iot/custos/internal/update"
)

// Config configures a hub. The zero value of each field means its default.
type Config struct {
	// DataDir holds the SQLite database and the CA. Default "custos-data".
	DataDir string
	// PostgresDSN selects PostgreSQL instead of the embedded SQLite store.
	PostgresDSN string
	// PostgresSchema is the schema used in PostgreSQL. Default "custos".
	PostgresSchema string
	// APIAddr is where the operator API and enrolment listen (HTTPS).
	// Default "127.0.0.1:8443".
	APIAddr string
	// DeviceAddr is where the device endpoint listens (TLS 1.3, client
	// certificates required). Default ":8444".
	DeviceAddr string
	// Names are the DNS names and IPs in the hub's server certificate.
	// Default localhost, 127.0.0.1, ::1.
	Names []string
	// DeviceURL is the device endpoint's address as connectors reach it.
	// Default "https://<first name>:<device port>".
	DeviceURL string
	// EnrolTokenTTL is the validity of enrolment tokens. Default 24 h.
	EnrolTokenTTL time.Duration
	// CertLifetime is the lifetime of connector certificates. Default 24 h.
	CertLifetime time.Duration
	// KeyDir holds the key store (keys.db) and the default KEK file. Keep
	// it apart from the data: its backups hold the keys that erasure
	// destroys, so they must be short-lived. Default <DataDir>/keys.
	KeyDir string
	// KEKFile is the local key-encryption key (a Tink keyset, mode 0600),
	// created on first start. Default <KeyDir>/kek.json. Ignored when HSM
	// is set.
	KEKFile string
	// OldKEKFiles are earlier local KEKs that can still unwrap keysets
	// during a rotation to a new KEK (see custos keys rotate).
	OldKEKFiles []string
	// HSM, if set, takes the KEK from a PKCS#11 token instead of KEKFile.
	HSM *pkcs11.Config
	// AuditWitnesses are the public keys (note verifier keys) of the
	// witnesses whose cosignatures of the audit log the hub accepts and
	// serves.
	AuditWitnesses []string
	// UpdatesDir holds the TUF repository of agent releases and its online
	// keys (custos release init|publish). Default <DataDir>/updates.
	UpdatesDir string
	// OAuthIssuer is the URL apps reach the OAuth2 authorization server at;
	// it must end in /oauth2. Default "https://<first name>:<API port>/oauth2".
	OAuthIssuer string
	// OAuthUsers names the user logged in on a browser request, for apps
	// acting for users (the web session authenticator). Without it the
	// authorization-code flow refuses every login.
	OAuthUsers access.Authenticator
	// AuditOff discards audit entries instead of appending them. For the
	// benchmark that measures what auditing adds to a read only; a hub
	// serving people never sets it.
	AuditOff bool
	// Plaintext stores readings unsealed. For benchmarks that measure the
	// cost of sealing only; a hub serving people never sets it.
	Plaintext bool
	// AuthzOff allows every read without asking the grants. For the
	// benchmark that measures what authorization adds to a read only; a
	// hub serving people never sets it (and `custos serve` cannot).
	AuthzOff bool
	// PolicyGrace is how long after a change of a stream's collection
	// policy readings timed before then are also judged by the previous
	// policy (see internal/collection). Default 5 minutes.
	PolicyGrace time.Duration
	// SiteGrace is how long readings of streams with a site role wait in
	// landing for the site's other streams before the site balance check
	// judges them and the compactor folds them. Default 2 minutes.
	SiteGrace time.Duration
	// PlausibilityOff stores every reading as received, without the
	// plausibility checks and quarantine. For the benchmark that measures
	// what the checks cost; a hub serving people never sets it.
	PlausibilityOff bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand is the randomness for IDs, tokens and keys. Default crypto/rand.
	Rand io.Reader
	// Log is the operational log. Default slog.Default().
	Log *slog.Logger
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = "custos-data"
	}
	if c.APIAddr == "" {
		c.APIAddr = "127.0.0.1:8443"
	}
	if c.DeviceAddr == "" {
		c.DeviceAddr = ":8444"
	}
	if len(c.Names) == 0 {
		c.Names = []string{"localhost", "127.0.0.1", "::1"}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Hub is a configured hub with its listeners open.
type Hub struct {
	cfg       Config
	Store     *store.Store
	Authority *pki.Authority
	Ingest    *ingest.Service
	Compactor *series.Compactor
	Keys      *seal.Keys
	// Audit is the tamper-evident audit log; AuditKey its public key.
	Audit    *audit.Log
	AuditKey string
	// OAuth is the authorization server for apps.
	OAuth   *oauth.Server
	sealer  series.Sealer
	purge   chan struct{}
	kek     interface{ Close() error }
	rot     *rotator
	api     *api.API
	updates *update.Repo
	// auditQueue and integrator: batches' audit entries are written with
	// the batch and integrated into the log after (queue-then-integrate).
	auditQueue *store.AuditQueue
	integrator *audit.Integrator

	apiLn, devLn net.Listener
	// InitialToken is the operator token created on the first start of an
	// empty store; empty on later starts. Show it to the operator once.
	InitialToken string
}

// New opens the store (applying migrations), loads or creates the CA and
// opens the listeners. Call Run to serve and Close to release.
func New(ctx context.Context, cfg Config) (_ *Hub, err error) {
	cfg.setDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("hub: data directory: %w", err)
	}
	h := &Hub{cfg: cfg}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	h.Store, err = store.Open(ctx, store.Config{
		Path:   filepath.Join(cfg.DataDir, "hub.db"),
		DSN:    cfg.PostgresDSN,
		Schema: cfg.PostgresSchema,
		Now:    cfg.Now,
	})
	if err != nil {
		return nil, err
	}
	h.Authority, err = pki.Open(pki.Config{Dir: filepath.Join(cfg.DataDir, "ca"), Names: cfg.Names, Now: cfg.Now, Rand: cfg.Rand})
	if err != nil {
		return nil, err
	}
	if err := h.openKeys(ctx); err != nil {
		return nil, err
	}
	if err := h.openAudit(ctx); err != nil {
		return nil, err
	}
	if h.InitialToken, err = h.ensureOperator(ctx); err != nil {
		return nil, err
	}
	h.sealer = h.Keys
	if cfg.Plaintext {
		h.sealer = series.Plain{}
	}
	h.purge = make(chan struct{}, 1)
	icfg := ingest.Config{Store: h.Store, Sealer: h.sealer, Now: cfg.Now, Log: cfg.Log, PolicyGrace: cfg.PolicyGrace}
	if !cfg.PlausibilityOff {
		if icfg.Detector, err = newDetector(cfg.Now); err != nil {
			return nil, err
		}
		icfg.Plausibility = h.Store
		icfg.Sites = h.Store
		icfg.SiteGrace = cfg.SiteGrace
	}
	h.Ingest = ingest.New(icfg)
	h.Compactor = &series.Compactor{Store: h.Store, Sealer: h.sealer, Log: cfg.Log}
	if icfg.Sites != nil {
		h.Compactor.Screen = h.Ingest // the site balance check, before folding
	}

	if h.apiLn, err = net.Listen("tcp", cfg.APIAddr); err != nil {
		return nil, fmt.Errorf("hub: API listener: %w", err)
	}
	if h.devLn, err = net.Listen("tcp", cfg.DeviceAddr); err != nil {
		return nil, fmt.Errorf("hub: device listener: %w", err)
	}
	deviceURL := cfg.DeviceURL
	if deviceURL == "" {
		_, port, _ := net.SplitHostPort(h.devLn.Addr().String())
		deviceURL = "https://" + net.JoinHostPort(cfg.Names[0], port)
	}
	ident, err := identity.New(identity.Config{Store: h.Store, Now: cfg.Now, Rand: cfg.Rand, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	if h.cfg.OAuthUsers == nil {
		// Apps act for users logged in to the hub (their web session).
		h.cfg.OAuthUsers = ident
	}
	if err := h.openOAuth(); err != nil {
		return nil, err
	}
	receiptSigner, receiptKey, err := h.openReceiptKey()
	if err != nil {
		return nil, err
	}
	if cfg.UpdatesDir == "" {
		cfg.UpdatesDir = filepath.Join(cfg.DataDir, "updates")
	}
	h.updates = update.Open(cfg.UpdatesDir, cfg.Now)
	if !cfg.AuditOff {
		h.auditQueue = h.Store.AuditQueue()
		h.integrator = audit.NewIntegrator(h.Audit, h.auditQueue)
	}
	var integrator api.Integrator
	if h.integrator != nil {
		integrator = h.integrator
	}
	h.api = api.New(api.Config{
		Integrator: integrator,
		DataMap:    DataMap(h), ExportDir: h.exportDir(), ReceiptSigner: receiptSigner, ReceiptKey: receiptKey,
		Store: h.Store, Authority: h.Authority, Ingest: h.Ingest, Keys: h.Keys, Sealer: h.sealer, DeviceURL: deviceURL,
		Purge:   h.requestPurge,
		Compact: h.Compactor.Once,
		Updates: h.updates,
		KeyJobs: h.rot,
		OAuth:   h.OAuth,
		Audit:   h.Audit, AuditKey: h.AuditKey, Recorder: h.recorder(), AuditWitnesses: cfg.AuditWitnesses, AuthzOff: cfg.AuthzOff,
		EnrolTokenTTL: cfg.EnrolTokenTTL, CertLifetime: cfg.CertLifetime,
		Now: cfg.Now, Rand: cfg.Rand, Log: cfg.Log, Identity: ident,
	})
	return h, nil
}

// openOAuth starts the authorization server for apps, with its keys in
// <DataDir>/oauth (0600, created on first start; replicas must share them,
// like the CA).
func (h *Hub) openOAuth() error {
	keys, err := oauth.LoadOrCreateKeys(filepath.Join(h.cfg.DataDir, "oauth"))
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	issuer := h.cfg.OAuthIssuer
	if issuer == "" {
		_, port, _ := net.SplitHostPort(h.apiLn.Addr().String())
		issuer = "https://" + net.JoinHostPort(h.cfg.Names[0], port) + api.OAuthPrefix
	}
	h.OAuth, err = oauth.New(oauth.Config{Store: h.Store, Issuer: issuer, Keys: keys, Users: h.cfg.OAuthUsers, Now: h.cfg.Now, Rand: h.cfg.Rand, Log: h.cfg.Log})
	if err == nil && h.OAuth.Prefix() != api.OAuthPrefix {
		err = fmt.Errorf("hub: the OAuth issuer %q must end in %s", issuer, api.OAuthPrefix)
	}
	return err
}

// newDetector returns the plausibility detector with the default policy's
// rules; tenants' own policies are applied by ingest as it meets them.
func newDetector(now func() time.Time) (*plausibility.Detector, error) {
	r, err := (&plausibility.Policy{}).Rules()
	if err != nil {
		return nil, err
	}
	return plausibility.New(plausibility.Config{Rules: &r, Now: now})
}

// openKeys opens the KEK and the key store, kept apart from the data store:
// a SQLite file under KeyDir, or its own PostgreSQL schema.
func (h *Hub) openKeys(ctx context.Context) error {
	cfg := h.cfg
	if cfg.KeyDir == "" {
		cfg.KeyDir = filepath.Join(cfg.DataDir, "keys")
	}
	if err := os.MkdirAll(cfg.KeyDir, 0o700); err != nil {
		return fmt.Errorf("hub: key directory: %w", err)
	}
	if cfg.KEKFile == "" {
		cfg.KEKFile = filepath.Join(cfg.KeyDir, "kek.json")
	}
	// The current KEK version (kek-current) and every earlier one found;
	// see rotate.go.
	kek, old, current, err := h.openKEKs(cfg)
	if err != nil {
		return err
	}
	h.rot = &rotator{h: h, keyDir: cfg.KeyDir, hsm: cfg.HSM, ring: h.kek.(*kekRing), current: current}
	kc := seal.Config{Path: filepath.Join(cfg.KeyDir, "keys.db"), KEK: kek, Old: old, Now: cfg.Now}
	if cfg.PostgresDSN != "" {
		schema := cfg.PostgresSchema
		if schema == "" {
			schema = "custos"
		}
		kc.DSN, kc.Schema = cfg.PostgresDSN, schema+"_keys"
	}
	keys, err := seal.Open(ctx, kc)
	if err != nil {
		return err
	}
	h.Keys = keys
	return nil
}

// requestPurge wakes the purger after an erasure.
func (h *Hub) requestPurge() {
	select {
	case h.purge <- struct{}{}:
	default:
	}
}

// purger deletes the sealed rows of erased subjects in the background, in
// small steps; erasure itself never waits for it.
func (h *Hub) purger(ctx context.Context) {
	for {
		es, err := h.Store.PendingPurges(ctx)
		if err != nil && ctx.Err() == nil {
			h.cfg.Log.Error("hub: listing pending purges failed", "err", err)
		}
		for _, e := range es {
			for ctx.Err() == nil {
				n, err := h.Store.Purge(ctx, e, 2000, h.cfg.Now())
				if err != nil {
					h.cfg.Log.Error("hub: purge failed; will retry", "subject", e.Subject, "err", err)
					break
				}
				if n == 0 {
					h.cfg.Log.Info("hub: erased subject's rows purged", "subject", e.Subject)
					break
				}
			}
		}
		if n, err := h.OAuth.Prune(ctx); err != nil && ctx.Err() == nil {
			h.cfg.Log.Error("hub: pruning expired OAuth tokens failed", "err", err)
		} else if n > 0 {
			h.cfg.Log.Debug("hub: expired OAuth tokens pruned", "rows", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-h.purge:
		case <-time.After(time.Minute):
		}
	}
}

// ensureOperator creates the first operator token if the store has none.
func (h *Hub) ensureOperator(ctx context.Context) (string, error) {
	n, err := h.Store.OperatorTokenCount(ctx)
	if err != nil || n > 0 {
		return "", err
	}
	var secret [32]byte
	if _, err := io.ReadFull(h.cfg.Rand, secret[:]); err != nil {
		return "", err
	}
	token := "cop_" + base64.RawURLEncoding.EncodeToString(secret[:])
	id, err := registry.NewID(h.cfg.Rand, "tok")
	if err != nil {
		return "", err
	}
	t := store.OperatorToken{ID: id, Name: "initial operator", Created: h.cfg.Now().UTC()}
	if err := h.Store.CreateOperatorToken(ctx, t, sha256.Sum256([]byte(token))); err != nil {
		return "", err
	}
	return token, nil
}

func (h *Hub) recorder() api.Recorder {
	if h.cfg.AuditOff {
		return discard{}
	}
	return h.Audit
}

type discard struct{}

func (discard) Append(context.Context, audit.Entry) (uint64, error)        { return 0, nil }
func (discard) AppendBatch(context.Context, []audit.Entry) (uint64, error) { return 0, nil }
func (discard) Begin(context.Context, ...audit.Entry) (audit.Pending, error) {
	return audit.Discarded(), nil
}

// API is the hub's HTTP surface (for tests that walk its routes).
func (h *Hub) API() *api.API { return h.api }

// APIURL is the operator API's base URL.
func (h *Hub) APIURL() string { return "https://" + h.apiAddr() }

func (h *Hub) apiAddr() string {
	_, port, _ := net.SplitHostPort(h.apiLn.Addr().String())
	host, _, _ := net.SplitHostPort(h.cfg.APIAddr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// DeviceURL is the device endpoint's base URL on this machine.
func (h *Hub) DeviceURL() string {
	_, port, _ := net.SplitHostPort(h.devLn.Addr().String())
	host, _, _ := net.SplitHostPort(h.cfg.DeviceAddr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, port)
}

// DevicePort is the device endpoint's TCP port.
func (h *Hub) DevicePort() int {
	_, port, _ := net.SplitHostPort(h.devLn.Addr().String())
	n, _ := strconv.Atoi(port)
	return n
}

// FlushAudit integrates every audit entry queued so far (those written with
// ingested batches) into the log.
func (h *Hub) FlushAudit(ctx context.Context) error {
	if h.integrator == nil {
		return nil
	}
	return h.integrator.Flush(ctx)
}

// CAFile is the path of the hub CA certificate (PEM), for clients.
func (h *Hub) CAFile() string { return filepath.Join(h.cfg.DataDir, "ca", "ca.pem") }

// Run serves until ctx is cancelled, then shuts down gracefully: requests
// in flight finish (and their batches commit) before Run returns.
func (h *Hub) Run(ctx context.Context) error {
	ingestCtx, stopIngest := context.WithCancel(context.Background())
	ingestDone := make(chan struct{})
	go func() {
		h.Ingest.Run(ingestCtx)
		close(ingestDone)
	}()
	compactCtx, stopCompactor := context.WithCancel(context.Background())
	compactDone := make(chan struct{})
	go func() {
		h.Compactor.Run(compactCtx)
		close(compactDone)
	}()

	integrateDone := make(chan struct{})
	go func() {
		defer close(integrateDone)
		if h.integrator == nil {
			return
		}
		h.integrator.Run(compactCtx, func(err error) { h.cfg.Log.Error("audit: integrating queued entries", "err", err) })
	}()
	go h.refreshServerCert(compactCtx)
	go h.refreshUpdates(compactCtx)
	h.rot.start(compactCtx) // key rotation jobs, resuming unfinished ones
	purgeDone := make(chan struct{})
	go func() {
		h.purger(compactCtx)
		close(purgeDone)
	}()

	errLog := slog.NewLogLogger(h.cfg.Log.Handler(), slog.LevelDebug)
	apiSrv := &http.Server{Handler: h.api.Handler(), TLSConfig: h.Authority.APITLSConfig(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	devSrv := &http.Server{Handler: h.api.DeviceHandler(), TLSConfig: h.Authority.DeviceTLSConfig(h.api.CheckConnector), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	errc := make(chan error, 2)
	go func() { errc <- apiSrv.ServeTLS(h.apiLn, "", "") }()
	go func() { errc <- devSrv.ServeTLS(h.devLn, "", "") }()
	h.cfg.Log.Info("hub serving", "api", h.APIURL(), "device", h.DeviceURL(), "store", string(h.Store.Dialect()))

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	apiSrv.Shutdown(sctx)
	devSrv.Shutdown(sctx)
	stopIngest()
	<-ingestDone
	stopCompactor()
	<-compactDone
	<-purgeDone
	<-integrateDone
	if h.integrator != nil {
		// What the last requests queued goes into the log before it closes.
		if ierr := h.integrator.Flush(context.Background()); ierr != nil {
			h.cfg.Log.Error("audit: integrating queued entries at shutdown", "err", ierr)
		}
	}
	h.rot.wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// refreshServerCert renews the hub's server certificate in place when it
// is due, so a hub that runs for months never presents an expired one.
func (h *Hub) refreshServerCert(ctx context.Context) {
	t := time.NewTicker(6 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := h.Authority.RefreshServer(); err != nil {
			h.cfg.Log.Error("hub: renewing the server certificate failed; will retry", "err", err)
		}
	}
}

// refreshUpdates re-signs the update repository's snapshot and timestamp
// with the online keys before they expire (agents refuse expired ones),
// hourly and at start. A hub without a repository has nothing to do.
func (h *Hub) refreshUpdates(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if h.updates.Initialized() {
			if signed, err := h.updates.Refresh(); err != nil {
				h.cfg.Log.Error("hub: re-signing the update timestamp failed; will retry", "err", err)
			} else if signed {
				h.cfg.Log.Info("hub: update timestamp re-signed")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close releases the listeners, the key store and the store.
func (h *Hub) Close() error {
	if h.apiLn != nil {
		h.apiLn.Close()
	}
	if h.devLn != nil {
		h.devLn.Close()
	}
	if h.Keys != nil {
		h.Keys.Close()
	}
	if h.auditQueue != nil {
		h.auditQueue.Close()
	}
	if h.Audit != nil {
		h.Audit.Close()
	}
	if h.kek != nil {
		h.kek.Close()
	}
	if h.Store != nil {
		return h.Store.Close()
	}
	return nil
}
