package identity

import (
	"context"
	"crypto/sha256"
	"net/http"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
)

// CookieName is the session cookie. The __Host- prefix makes browsers
// accept it only with Secure, Path=/ and no Domain: it cannot be set by a
// sibling domain or over plain HTTP.
const CookieName = "__Host-custos_session"

// SetCookie hands a session's token to the browser: Secure, HttpOnly,
// SameSite=Lax (sent on top-level navigations from other sites, so links
// to the portal work, never on their sub-requests or unsafe methods),
// Path=/, expiring with the session's absolute timeout.
func (s *Service) SetCookie(w http.ResponseWriter, token string, sess Session) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: token, Path: "/", Expires: sess.Expires,
		MaxAge: max(int(sess.Expires.Sub(s.cfg.Now()).Seconds()), 1),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
}

// ClearCookie tells the browser to drop the session cookie.
func ClearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// HasSessionCookie reports whether r carries a session cookie.
func HasSessionCookie(r *http.Request) bool {
	c, err := r.Cookie(CookieName)
	return err == nil && c.Value != ""
}

// Authenticate implements access.Authenticator for web sessions: a request
// without the session cookie is not its business (ok false); one with a
// cookie that names no live session, or whose user is disabled, is refused.
// The session's idle timer restarts (at most once a minute, to spare the
// database).
func (s *Service) Authenticate(ctx context.Context, r *http.Request) (access.Principal, bool, error) {
	p, _, ok, err := s.session(ctx, r)
	return p, ok, err
}

var _ access.Authenticator = (*Service)(nil)

// errSession is the one answer to a session that cannot be used.
var errSession = errs.E(errs.Unauthenticated, "session expired or unknown; log in again")

func (s *Service) session(ctx context.Context, r *http.Request) (access.Principal, [32]byte, bool, error) {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return access.Principal{}, [32]byte{}, false, nil
	}
	h := sha256.Sum256([]byte(c.Value))
	sess, err := s.cfg.Store.Session(ctx, h)
	if errs.Is(errs.NotFound, err) {
		return access.Principal{}, h, true, errSession
	}
	if err != nil {
		return access.Principal{}, h, true, err
	}
	now := s.cfg.Now()
	idleEnd := sess.Seen.Add(s.cfg.IdleTimeout)
	if !now.Before(sess.Expires) || !now.Before(idleEnd) {
		if err := s.cfg.Store.DeleteSession(ctx, h); err != nil {
			s.cfg.Log.Warn("identity: deleting an expired session failed", "err", err)
		}
		return access.Principal{}, h, true, errSession
	}
	u, err := s.cfg.Store.User(ctx, sess.Tenant, sess.User)
	if errs.Is(errs.NotFound, err) || err == nil && !u.Disabled.IsZero() {
		return access.Principal{}, h, true, errSession
	}
	if err != nil {
		return access.Principal{}, h, true, err
	}
	if now.Sub(sess.Seen) >= time.Minute {
		if err := s.cfg.Store.TouchSession(ctx, h, now.UTC()); err != nil {
			return access.Principal{}, h, true, err
		}
		idleEnd = now.Add(s.cfg.IdleTimeout)
	}
	return u.Principal(minTime(sess.Expires, idleEnd)), h, true, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Logout destroys the request's session, if it has one, and reports whose
// it was (empty if none or not valid).
func (s *Service) Logout(ctx context.Context, r *http.Request) (access.PrincipalID, error) {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return "", nil
	}
	h := sha256.Sum256([]byte(c.Value))
	sess, err := s.cfg.Store.Session(ctx, h)
	if err != nil && !errs.Is(errs.NotFound, err) {
		return "", err
	}
	return sess.User, s.cfg.Store.DeleteSession(ctx, h)
}

// EndSession destroys the session the request carries, if any: called at
// login so that a session ID planted before login never becomes a logged-in
// one (session fixation), and the new session always has a new ID.
func (s *Service) EndSession(ctx context.Context, r *http.Request) error {
	_, err := s.Logout(ctx, r)
	return err
}
