package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// Config configures a Service.
type Config struct {
	// Store keeps users, sessions and providers. Must be non-nil.
	Store Store
	// Params are argon2id's costs for new hashes. Default DefaultParams.
	// Existing hashes keep the parameters they were made with.
	Params Params
	// IdleTimeout ends a session unused this long. Default 30 min.
	IdleTimeout time.Duration
	// AbsoluteTimeout ends a session this long after login, used or not.
	// Default 12 h.
	AbsoluteTimeout time.Duration
	// AccountThrottle slows failed logins per account (tenant and login
	// name, whether or not it exists). Default Free 5.
	AccountThrottle ThrottleConfig
	// AddressThrottle slows failed logins per client address. Default Free 20.
	AddressThrottle ThrottleConfig
	// HTTPClient reaches OIDC providers. Default http.DefaultClient with a
	// 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand is the source of IDs, salts, session IDs, states and nonces.
	// Default crypto/rand.Reader.
	Rand io.Reader
	// Log receives failures (IDs only). Default slog.Default().
	Log *slog.Logger
}

// Service manages users, logins and sessions. It is safe for concurrent use.
type Service struct {
	cfg       Config
	dummy     string // a hash verified for unknown users
	byAccount *throttle
	byAddress *throttle
	oidc      oidcCache
}

// New returns a Service for cfg.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errs.E(errs.Invalid, "identity: no store")
	}
	if cfg.Params == (Params{}) {
		cfg.Params = DefaultParams
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.AbsoluteTimeout == 0 {
		cfg.AbsoluteTimeout = 12 * time.Hour
	}
	cfg.AccountThrottle.setDefaults(5)
	cfg.AddressThrottle.setDefaults(20)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
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
	var pw [32]byte
	if _, err := io.ReadFull(cfg.Rand, pw[:]); err != nil {
		return nil, err
	}
	dummy, err := Hash(cfg.Rand, cfg.Params, base64.RawURLEncoding.EncodeToString(pw[:]))
	if err != nil {
		return nil, err
	}
	return &Service{
		cfg: cfg, dummy: dummy,
		byAccount: newThrottle(cfg.AccountThrottle, cfg.Now),
		byAddress: newThrottle(cfg.AddressThrottle, cfg.Now),
	}, nil
}

// NewUser is what an administrator gives to create a user.
type NewUser struct {
	Name     string             `json:"name"`
	Roles    []access.Role      `json:"roles"`
	MemberOf registry.SubjectID `json:"member_of,omitempty"`
	// Password, if set, is the user's initial local password.
	Password string `json:"password,omitempty"`
	// Issuer and ExternalID pre-provision a user who logs in through
	// that OIDC provider with that subject ("sub" claim).
	Issuer     string `json:"oidc_issuer,omitempty"`
	ExternalID string `json:"oidc_subject,omitempty"`
}

// AddUser creates a user in tenant t. A user needs a password, an OIDC
// account, or both; without either they could never log in.
func (s *Service) AddUser(ctx context.Context, t registry.TenantID, in NewUser, tenantName string) (User, error) {
	const op errs.Op = "identity.AddUser"
	name := NormalName(in.Name)
	if err := CheckName(name); err != nil {
		return User{}, errs.E(op, err)
	}
	if in.Roles == nil {
		in.Roles = []access.Role{}
	}
	if err := CheckRoles(in.Roles); err != nil {
		return User{}, errs.E(op, err)
	}
	if (in.Issuer == "") != (in.ExternalID == "") {
		return User{}, errs.E(op, errs.Invalid, "give both oidc_issuer and oidc_subject, or neither")
	}
	if len(in.Issuer) > 512 || len(in.ExternalID) > 255 || !validUTF8(in.ExternalID) {
		return User{}, errs.E(op, errs.Invalid, "oidc_issuer or oidc_subject too long")
	}
	if in.Password == "" && in.Issuer == "" {
		return User{}, errs.E(op, errs.Invalid, "a user needs a password or an OIDC account (oidc_issuer and oidc_subject)")
	}
	id, err := registry.NewID(s.cfg.Rand, "usr")
	if err != nil {
		return User{}, err
	}
	u := User{ID: access.PrincipalID(id), Tenant: t, Name: name, Roles: in.Roles, MemberOf: in.MemberOf,
		Issuer: in.Issuer, ExternalID: in.ExternalID, Created: s.cfg.Now().UTC()}
	if in.Password != "" {
		if u.PasswordHash, err = s.hashNew(in.Password, name, tenantName); err != nil {
			return User{}, errs.E(op, err)
		}
	}
	u.HasPassword = u.PasswordHash != ""
	if err := s.cfg.Store.CreateUser(ctx, u); err != nil {
		return User{}, errs.E(op, err)
	}
	return u, nil
}

func (s *Service) hashNew(password, name, tenantName string) (string, error) {
	pw := NormalizePassword(password)
	if err := CheckPassword(pw, name, tenantName); err != nil {
		return "", err
	}
	return Hash(s.cfg.Rand, s.cfg.Params, pw)
}

// SetPassword replaces a user's password and ends their sessions.
func (s *Service) SetPassword(ctx context.Context, t registry.TenantID, id access.PrincipalID, password, tenantName string) error {
	const op errs.Op = "identity.SetPassword"
	u, err := s.cfg.Store.User(ctx, t, id)
	if err != nil {
		return errs.E(op, err)
	}
	h, err := s.hashNew(password, u.Name, tenantName)
	if err != nil {
		return errs.E(op, err)
	}
	return s.cfg.Store.SetUserPassword(ctx, t, id, h)
}

// Disable disables a user and ends their sessions at once.
func (s *Service) Disable(ctx context.Context, t registry.TenantID, id access.PrincipalID) (User, error) {
	if err := s.cfg.Store.DisableUser(ctx, t, id, s.cfg.Now().UTC()); err != nil {
		return User{}, errs.E(errs.Op("identity.Disable"), err)
	}
	return s.cfg.Store.User(ctx, t, id)
}

// Users lists a tenant's users.
func (s *Service) Users(ctx context.Context, t registry.TenantID) ([]User, error) {
	return s.cfg.Store.Users(ctx, t)
}

// ErrLogin is the one answer to a failed login, whatever failed: unknown
// login name, wrong password, disabled user, user without a password.
var ErrLogin = errs.E(errs.Unauthenticated, "wrong login name or password")

// ThrottledError says a login was refused before any password was
// checked, because its account or client address failed too often.
type ThrottledError struct{ Wait time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many failed logins; try again in %d s", int(e.Wait.Round(time.Second)/time.Second)+1)
}

// Kind makes a ThrottledError an errs.Unauthenticated.
func (e *ThrottledError) Unwrap() error {
	return errs.E(errs.Unauthenticated, "too many failed logins")
}

// Credentials are a local login attempt.
type Credentials struct {
	Tenant   registry.TenantID `json:"tenant"`
	Name     string            `json:"name"`
	Password string            `json:"password"`
	// Address is the client's IP address, for throttling. Set by the
	// HTTP adapter, never from the body.
	Address string `json:"-"`
}

// Login checks local credentials and, if they are right, starts a session.
// Its token goes to the browser only (SetCookie). Failures return ErrLogin
// or a *ThrottledError; unknown and known login names cost the same.
func (s *Service) Login(ctx context.Context, c Credentials) (User, string, Session, error) {
	name := NormalName(c.Name)
	acct := "a\x00" + string(c.Tenant) + "\x00" + name
	addr := "i\x00" + c.Address
	if w := s.byAccount.attempt(acct); w > 0 {
		return User{}, "", Session{}, &ThrottledError{w}
	}
	if w := s.byAddress.attempt(addr); w > 0 {
		s.byAccount.forgive(acct, false)
		return User{}, "", Session{}, &ThrottledError{w}
	}
	u, err := s.cfg.Store.UserByName(ctx, c.Tenant, name)
	hash := u.PasswordHash
	switch {
	case errs.Is(errs.NotFound, err), err == nil && hash == "":
		hash = s.dummy
	case err != nil:
		s.byAccount.forgive(acct, false)
		s.byAddress.forgive(addr, false)
		return User{}, "", Session{}, err
	}
	ok, verr := Verify(hash, NormalizePassword(c.Password))
	if verr != nil {
		s.cfg.Log.Error("identity: stored password hash unreadable", "user", u.ID, "err", verr)
	}
	if !ok || err != nil || u.PasswordHash == "" || !u.Disabled.IsZero() {
		return User{}, "", Session{}, ErrLogin
	}
	s.byAccount.forgive(acct, true)
	s.byAddress.forgive(addr, false)
	tok, sess, err := s.startSession(ctx, u)
	return u, tok, sess, err
}

// startSession creates a fresh session for u: a new random 256-bit ID,
// stored as its SHA-256.
func (s *Service) startSession(ctx context.Context, u User) (string, Session, error) {
	var id [32]byte
	if _, err := io.ReadFull(s.cfg.Rand, id[:]); err != nil {
		return "", Session{}, err
	}
	tok := base64.RawURLEncoding.EncodeToString(id[:])
	now := s.cfg.Now().UTC()
	sess := Session{Hash: sha256.Sum256([]byte(tok)), Tenant: u.Tenant, User: u.ID, Created: now, Seen: now, Expires: now.Add(s.cfg.AbsoluteTimeout)}
	if err := s.cfg.Store.CreateSession(ctx, sess); err != nil {
		return "", Session{}, err
	}
	return tok, sess, nil
}
