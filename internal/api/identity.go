package api

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/identity"
)

// Identity routes: local login, logout, the session's principal, OpenID
// Connect login, and user and provider management by the hub operator
// (bearer token) or the tenant's admins (session). Unsafe methods carried
// by a session cookie must pass net/http's CrossOriginProtection (the
// browser's Sec-Fetch-Site or Origin must name this hub); requests without
// those headers are not from a browser and carry no ambient cookie risk.

func (a *API) identity() (*identity.Service, error) {
	if a.cfg.Identity == nil {
		return nil, errs.E(errs.Unavailable, "users and sessions are not configured on this hub")
	}
	return a.cfg.Identity, nil
}

// csrf refuses a cross-origin unsafe request.
func (a *API) csrf(r *http.Request) error {
	if err := a.cop.Check(r); err != nil {
		return errs.E(errs.Forbidden, "cross-origin request refused")
	}
	return nil
}

// clientAddress is the peer's IP address, for login throttling. A proxy's
// X-Forwarded-For is not trusted.
func clientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// LoginAnswer is the answer to a successful login.
type LoginAnswer struct {
	User    identity.User `json:"user"`
	Expires time.Time     `json:"expires"`
}

// login checks local credentials and starts a session. Any session the
// request carried is destroyed first, so the new session always has a new
// ID (no session fixation). Every failure, known user or not, gets the
// same status and message.
func (a *API) login(w http.ResponseWriter, r *http.Request) error {
	id, err := a.identity()
	if err != nil {
		return a.deny(r, err)
	}
	if err := a.csrf(r); err != nil {
		return a.deny(r, err)
	}
	var in identity.Credentials
	if err := decodeJSON(w, r, &in); err != nil {
		return a.deny(r, err)
	}
	if err := id.EndSession(r.Context(), r); err != nil {
		return a.deny(r, err)
	}
	identity.ClearCookie(w)
	in.Address = clientAddress(r)
	u, tok, sess, err := id.Login(r.Context(), in)
	var te *identity.ThrottledError
	switch {
	case errors.As(err, &te):
		w.Header().Set("Retry-After", strconv.Itoa(int(te.Wait.Round(time.Second)/time.Second)+1))
		return a.deny(r, errs.E(errs.Unauthenticated, te.Error()))
	case err != nil:
		return a.deny(r, err)
	}
	if err := a.record(r, audit.PrincipalID(u.ID), audit.Allowed); err != nil {
		return err
	}
	id.SetCookie(w, tok, sess)
	writeJSON(w, http.StatusOK, LoginAnswer{User: u, Expires: sess.Expires})
	return nil
}

// logout destroys the request's session and clears the cookie.
func (a *API) logout(w http.ResponseWriter, r *http.Request) error {
	id, err := a.identity()
	if err != nil {
		return a.deny(r, err)
	}
	if err := a.csrf(r); err != nil {
		return a.deny(r, err)
	}
	who, err := id.Logout(r.Context(), r)
	if err != nil {
		return a.deny(r, err)
	}
	p := audit.PrincipalID("anonymous")
	if who != "" {
		p = audit.PrincipalID(who)
	}
	if err := a.record(r, p, audit.Allowed); err != nil {
		return err
	}
	identity.ClearCookie(w)
	writeJSON(w, http.StatusOK, map[string]string{"status": "logged out"})
	return nil
}

// sessionInfo answers with the session's principal.
func (a *API) sessionInfo(w http.ResponseWriter, r *http.Request) error {
	id, err := a.identity()
	if err != nil {
		return a.deny(r, err)
	}
	p, ok, err := id.Authenticate(r.Context(), r)
	if err != nil {
		return a.deny(r, err)
	}
	if !ok {
		return a.deny(r, errs.E(errs.Unauthenticated, "no session; log in first"))
	}
	return a.auditedRead(w, r, audit.PrincipalID(p.ID), func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, http.StatusOK, p)
		return nil
	})
}

// oidcLogin starts an OpenID Connect login: a redirect to the provider.
func (a *API) oidcLogin(w http.ResponseWriter, r *http.Request) error {
	id, err := a.identity()
	if err != nil {
		return a.deny(r, err)
	}
	authURL, state, err := id.BeginOIDC(r.Context(), pathTenant(r), r.PathValue("provider"))
	if err != nil {
		return a.deny(r, err)
	}
	if err := a.record(r, "anonymous", audit.Allowed); err != nil {
		return err
	}
	id.SetFlowCookie(w, state)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, authURL, http.StatusSeeOther)
	return nil
}

// oidcCallback finishes an OpenID Connect login and starts a session.
func (a *API) oidcCallback(w http.ResponseWriter, r *http.Request) error {
	id, err := a.identity()
	if err != nil {
		return a.deny(r, err)
	}
	identity.ClearFlowCookie(w)
	if err := id.EndSession(r.Context(), r); err != nil {
		return a.deny(r, err)
	}
	u, tok, sess, err := id.CompleteOIDC(r.Context(), pathTenant(r), r.PathValue("provider"), r)
	if err != nil {
		return a.deny(r, err)
	}
	if err := a.record(r, audit.PrincipalID(u.ID), audit.Allowed); err != nil {
		return err
	}
	id.SetCookie(w, tok, sess)
	writeJSON(w, http.StatusOK, LoginAnswer{User: u, Expires: sess.Expires})
	return nil
}

// admin lets the hub operator (bearer token) or an admin of the path's
// tenant (session, role tenant-admin) through; the session's unsafe
// requests must pass the cross-origin check. One audit entry either way.
func (a *API) admin(h handlerFunc) handlerFunc { return a.operator(h) }

func (a *API) createUser(w http.ResponseWriter, r *http.Request) error {
	id, err := a.identity()
	if err != nil {
		return err
	}
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var in identity.NewUser
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	tn, _ := a.cfg.Store.Tenant(r.Context(), t)
	u, err := id.AddUser(r.Context(), t, in, tn.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, u)
	return nil
}

func (a *API) disableUser(w http.ResponseWriter, r *http.Request) error {
	id, err := a.identity()
	if err != nil {
		return err
	}
	u, err := id.Disable(r.Context(), pathTenant(r), access.PrincipalID(r.PathValue("user")))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (a *API) setUserPassword(w http.ResponseWriter, r *http.Request) error {
	id, err := a.identity()
	if err != nil {
		return err
	}
	var in struct {
		Password string `json:"password"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	t := pathTenant(r)
	tn, _ := a.cfg.Store.Tenant(r.Context(), t)
	if err := id.SetPassword(r.Context(), t, access.PrincipalID(r.PathValue("user")), in.Password, tn.Name); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "password changed; the user's sessions were ended"})
	return nil
}

func (a *API) createProvider(w http.ResponseWriter, r *http.Request) error {
	id, err := a.identity()
	if err != nil {
		return err
	}
	t, err := a.tenantOf(r)
	if err != nil {
		return err
	}
	var in identity.NewProvider
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	p, err := id.AddProvider(r.Context(), t, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, p)
	return nil
}
