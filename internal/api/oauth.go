package api

import (
	"bytes"
	"net/http"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/oauth"
)

// OAuthPrefix is where the OAuth2 authorization server is mounted; the
// hub's issuer URL must end in it.
const OAuthPrefix = "/oauth2"

func (a *API) oauthServer() (*oauth.Server, error) {
	if a.cfg.OAuth == nil {
		return nil, errs.E(errs.Unavailable, "this hub does not serve OAuth2 apps")
	}
	return a.cfg.OAuth, nil
}

// oauthPublic serves the discovery document and the token-signing keys:
// nothing personal, no audit entry.
func (a *API) oauthPublic(w http.ResponseWriter, r *http.Request) error {
	s, err := a.oauthServer()
	if err != nil {
		return err
	}
	s.Serve(w, r)
	return nil
}

// oauthAudited serves an authorization-server endpoint (authorize, login,
// token, revoke, introspect) and appends one audit entry: who acted as
// verified (the app, or the user who logged in; anonymous otherwise) and
// whether the request was refused. The response, which may hold tokens, is
// held back until the entry is durable: no token without its entry.
func (a *API) oauthAudited(w http.ResponseWriter, r *http.Request) error {
	s, err := a.oauthServer()
	if err != nil {
		return a.deny(r, err)
	}
	buf := &bufferedResponse{header: http.Header{}}
	out := s.Serve(buf, r)
	who, outcome := audit.PrincipalID("anonymous"), audit.Denied
	if out.Principal != "" {
		who = audit.PrincipalID(out.Principal)
	}
	if out.OK {
		outcome = audit.Allowed
	}
	if err := a.record(r, who, outcome); err != nil {
		return err
	}
	buf.flush(w)
	return nil
}

// bufferedResponse holds a response until it may be released.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }
func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}
func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedResponse) flush(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	if b.status == 0 {
		b.status = http.StatusOK
	}
	w.WriteHeader(b.status)
	w.Write(b.body.Bytes())
}

// AppCreated answers an app's registration: the client secret is shown
// this once.
type AppCreated struct {
	App          any    `json:"app"`
	ClientSecret string `json:"client_secret,omitempty"`
}

func (a *API) createApp(w http.ResponseWriter, r *http.Request) error {
	s, err := a.oauthServer()
	if err != nil {
		return err
	}
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var in oauth.NewApp
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	in.Tenant = t
	app, secret, err := s.Register(r.Context(), in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, AppCreated{App: app, ClientSecret: secret})
	return nil
}

func (a *API) listApps(w http.ResponseWriter, r *http.Request) error {
	s, err := a.oauthServer()
	if err != nil {
		return err
	}
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	apps, err := s.Apps(r.Context(), t)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(apps))
	return nil
}

func (a *API) revokeApp(w http.ResponseWriter, r *http.Request) error {
	s, err := a.oauthServer()
	if err != nil {
		return err
	}
	app, err := s.Revoke(r.Context(), pathTenant(r), access.PrincipalID(r.PathValue("app")))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, app)
	return nil
}
