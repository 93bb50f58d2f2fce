package api

import (
	"context"
	"net/http"
	"time"

	"github.com/custos-iot/custos/internal/consent"
	"github.com/custos-iot/custos/internal/errs"
)

// Handler serves the operator API and enrolment.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range a.routes() {
		mux.Handle(rt.pattern, a.wrap(rt.h))
	}
	mux.Handle("/", a.wrap(func(w http.ResponseWriter, r *http.Request) error {
		http.NotFound(w, r)
		return nil
	}))
	return mux
}

type route struct {
	pattern string
	h       handlerFunc
}

// Public lists the routes that write no audit entry: they serve nothing
// personal (health, the CA certificate, the audit log's own checkpoints,
// key and proofs, which hold only hashes; the signed agent update
// repository). Every other route appends
// exactly one entry per request, allowed or denied.
var Public = map[string]bool{
	"GET /v1/health":                           true,
	"GET /v1/ca.pem":                           true,
	"GET /v1/audit/checkpoint":                 true,
	"GET /.well-known/custos/audit/checkpoint": true,
	"GET /v1/audit/key":                        true,
	"GET /v1/audit/checkpoint/cosigned":        true,
	"GET /v1/audit/proof/inclusion":            true,
	"GET /v1/audit/proof/consistency":          true,
	"GET /v1/consent/key":                      true,
	"GET /v1/updates/{file...}":                true,
	// OAuth2 discovery and the token-signing public keys.
	"GET /oauth2/.well-known/openid-configuration": true,
	"GET /oauth2/keys": true,
}

// Routes lists the patterns of the operator API, for tests that walk it.
func (a *API) Routes() []string {
	var out []string
	for _, rt := range a.routes() {
		out = append(out, rt.pattern)
	}
	return out
}

// routes lists every operator API route. Tests walk this table.
func (a *API) routes() []route {
	op := a.operator
	return []route{
		{"GET /v1/health", a.health},
		{"GET /v1/ca.pem", a.caPEM},
		{"GET /v1/audit/checkpoint", a.auditCheckpoint},
		{"GET /.well-known/custos/audit/checkpoint", a.auditCheckpoint},
		{"GET /v1/audit/key", a.auditKey},
		{"GET /v1/audit/checkpoint/cosigned", a.auditCosigned},
		{"POST /v1/audit/cosign", a.auditCosign},
		{"GET /v1/audit/proof/inclusion", a.auditInclusion},
		{"GET /v1/audit/proof/consistency", a.auditConsistency},
		{"GET /v1/audit/export", op(a.auditExport)},
		{"GET /v1/updates/{file...}", a.updateFile},
		{"POST /v1/enrol", a.enrolConnector},
		{"GET /v1/whoami", op(a.whoami)},
		{"POST /v1/tokens", op(a.createToken)},
		{"GET /v1/tokens", op(a.listTokens)},
		{"POST /v1/tokens/{token}/revoke", op(a.revokeToken)},
		{"POST /v1/tenants", op(a.createTenant)},
		{"GET /v1/tenants", op(a.listTenants)},
		{"POST /v1/tenants/{tenant}/subjects", op(a.createSubject)},
		{"GET /v1/tenants/{tenant}/subjects", op(a.listSubjects)},
		{"POST /v1/tenants/{tenant}/subjects/{subject}/erase", op(a.eraseSubject)},
		{"GET /v1/tenants/{tenant}/subjects/{subject}/accesses", op(a.subjectAccesses)},
		{"GET /v1/tenants/{tenant}/erasures", op(list(a, a.cfg.Store.Erasures))},
		{"GET /v1/keys", op(a.keyOverview)},
		{"POST /v1/keys/rotate-kek", op(a.rotateKEK)},
		{"POST /v1/keys/roll", op(a.rollKeys)},
		{"POST /v1/tenants/{tenant}/sites", op(a.createSite)},
		{"GET /v1/tenants/{tenant}/sites", op(list(a, a.cfg.Store.Sites))},
		{"POST /v1/tenants/{tenant}/connectors", op(a.createConnector)},
		{"GET /v1/tenants/{tenant}/connectors", op(list(a, a.cfg.Store.Connectors))},
		{"POST /v1/tenants/{tenant}/connectors/{connector}/tokens", op(a.newEnrolToken)},
		{"POST /v1/tenants/{tenant}/connectors/{connector}/revoke", op(a.revokeConnector)},
		{"POST /v1/tenants/{tenant}/devices", op(a.createDevice)},
		{"GET /v1/tenants/{tenant}/devices", op(list(a, a.cfg.Store.Devices))},
		{"POST /v1/tenants/{tenant}/devices/{device}/meter-replacements", op(a.replaceMeter)},
		{"POST /v1/tenants/{tenant}/streams", op(a.createStream)},
		{"GET /v1/tenants/{tenant}/streams", op(list(a, a.cfg.Store.Streams))},
		{"POST /v1/tenants/{tenant}/grants", op(a.createGrant)},
		{"GET /v1/tenants/{tenant}/grants", op(a.listGrants)},
		{"DELETE /v1/tenants/{tenant}/grants/{grant}", op(a.revokeGrant)},
		{"GET /v1/tenants/{tenant}/access/explain", op(a.explainAccess)},
		{"GET /v1/tenants/{tenant}/streams/{stream}/readings", a.dataRead(a.authorizeReadings, a.readings)},
		// Consent and data subjects' rights (consent.go).
		{"GET /v1/consent/key", a.consentKey},
		{"GET /v1/datamap", op(a.dataMap)},
		{"POST /v1/tenants/{tenant}/purposes", op(a.addPurpose)},
		{"GET /v1/tenants/{tenant}/purposes", op(list(a, a.cfg.Store.Purposes))},
		{"GET /v1/tenants/{tenant}/purposes/{purpose}", op(a.purposeNotice)},
		{"POST /v1/tenants/{tenant}/subjects/{subject}/consents", op(a.consentEvent(consent.Given))},
		{"POST /v1/tenants/{tenant}/subjects/{subject}/consents/{purpose}/withdraw", op(a.consentEvent(consent.Withdrawn))},
		{"GET /v1/tenants/{tenant}/subjects/{subject}/consents", op(a.listConsents)},
		{"GET /v1/tenants/{tenant}/subjects/{subject}/consents/{record}/receipt", op(a.consentReceipt)},
		{"POST /v1/tenants/{tenant}/subjects/{subject}/restrictions/{purpose}/lift", op(a.liftRestriction)},
		{"GET /v1/tenants/{tenant}/rights", op(a.listRightsRequests)},
		{"POST /v1/tenants/{tenant}/subjects/{subject}/rights", op(a.createRightsRequest)},
		{"GET /v1/tenants/{tenant}/subjects/{subject}/rights", op(a.listRightsRequests)},
		{"POST /v1/tenants/{tenant}/subjects/{subject}/rights/{request}/status", op(a.setRightsStatus)},
		{"POST /v1/tenants/{tenant}/subjects/{subject}/rights/{request}/corrections", op(a.addCorrections)},
		{"POST /v1/tenants/{tenant}/subjects/{subject}/rights/{request}/fulfil", op(a.fulfilRightsRequest)},
		{"GET /v1/tenants/{tenant}/subjects/{subject}/rights/{request}/archive", op(a.rightsArchive)},
		// Users, sessions and OpenID Connect login (identity.go).
		{"POST /v1/login", a.login},
		{"POST /v1/logout", a.logout},
		{"GET /v1/session", a.sessionInfo},
		{"GET /v1/oidc/{tenant}/{provider}/login", a.oidcLogin},
		{"GET /v1/oidc/{tenant}/{provider}/callback", a.oidcCallback},
		{"POST /v1/tenants/{tenant}/users", a.admin(a.createUser)},
		{"GET /v1/tenants/{tenant}/users", a.admin(list(a, a.cfg.Store.Users))},
		{"POST /v1/tenants/{tenant}/users/{user}/disable", a.admin(a.disableUser)},
		{"POST /v1/tenants/{tenant}/users/{user}/password", a.admin(a.setUserPassword)},
		{"POST /v1/tenants/{tenant}/oidc-providers", a.admin(a.createProvider)},
		{"GET /v1/tenants/{tenant}/oidc-providers", a.admin(list(a, a.cfg.Store.Providers))},
		{"POST /v1/tenants/{tenant}/apps", op(a.createApp)},
		{"GET /v1/tenants/{tenant}/apps", op(a.listApps)},
		{"POST /v1/tenants/{tenant}/apps/{app}/revoke", op(a.revokeApp)},
		// The OAuth2 authorization server for apps (see internal/oauth).
		{"GET /oauth2/.well-known/openid-configuration", a.oauthPublic},
		{"GET /oauth2/keys", a.oauthPublic},
		{"GET /oauth2/authorize", a.oauthAudited},
		{"POST /oauth2/authorize", a.oauthAudited},
		{"GET /oauth2/authorize/callback", a.oauthAudited},
		{"GET /oauth2/login", a.oauthAudited},
		{"POST /oauth2/token", a.oauthAudited},
		{"POST /oauth2/revoke", a.oauthAudited},
		{"POST /oauth2/introspect", a.oauthAudited},
		{"GET /v1/tenants/{tenant}/streams/{stream}/policy", op(a.streamPolicy)},
		{"PUT /v1/tenants/{tenant}/streams/{stream}/policy", op(a.setStreamPolicy)},
		{"GET /v1/tenants/{tenant}/quarantine", a.dataRead(a.authorizeQuarantine, a.listQuarantine)},
		{"POST /v1/tenants/{tenant}/quarantine/release", op(a.releaseQuarantine)},
		{"POST /v1/tenants/{tenant}/quarantine/reject", op(a.rejectQuarantine)},
		{"GET /v1/tenants/{tenant}/plausibility", op(a.plausibilityPolicy)},
		{"PUT /v1/tenants/{tenant}/plausibility", op(a.setPlausibilityPolicy)},
	}
}

// DeviceHandler serves the device endpoint. It must be served with the
// TLS configuration of pki.Authority.DeviceTLSConfig.
func (a *API) DeviceHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/batches", a.wrap(a.device(a.postBatches)))
	mux.Handle("POST /v1/renew", a.wrap(a.device(a.renew)))
	mux.Handle("GET /v1/streams", a.wrap(a.device(a.connectorStreams)))
	mux.Handle("POST /v1/health", a.wrap(a.device(a.postHealth)))
	// Signed, public files: the TLS handshake already admits only valid
	// connectors; no audit entry per metadata fetch.
	mux.Handle("GET /v1/updates/{file...}", a.wrap(a.updateFile))
	mux.Handle("GET /v1/policy", a.wrap(a.device(a.connectorPolicy)))
	return mux
}

// health answers ok only when the database answers.
func (a *API) health(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.cfg.Store.DB().PingContext(ctx); err != nil {
		return errs.E(errs.Unavailable, err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (a *API) caPEM(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(a.cfg.Authority.CAPEM())
	return nil
}
