package identity

import (
	"context"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/registry"
)

// Store keeps users, sessions, providers and login flows. internal/store
// implements it on SQLite and PostgreSQL. Lookups of something missing
// return an error of kind errs.NotFound; a duplicate login name or OIDC
// account errs.Exists.
type Store interface {
	UserStore
	SessionStore
	ProviderStore
}

// UserStore keeps users.
type UserStore interface {
	CreateUser(ctx context.Context, u User) error
	User(ctx context.Context, t registry.TenantID, id access.PrincipalID) (User, error)
	UserByName(ctx context.Context, t registry.TenantID, name string) (User, error)
	UserByExternal(ctx context.Context, t registry.TenantID, issuer, externalID string) (User, error)
	Users(ctx context.Context, t registry.TenantID) ([]User, error)
	SetUserPassword(ctx context.Context, t registry.TenantID, id access.PrincipalID, hash string) error
	// DisableUser marks the user disabled at the given time and deletes
	// their sessions, in one transaction.
	DisableUser(ctx context.Context, t registry.TenantID, id access.PrincipalID, at time.Time) error
}

// Session is a web session as stored. Its ID is known only to the
// browser; the store holds its SHA-256.
type Session struct {
	Hash    [32]byte
	Tenant  registry.TenantID
	User    access.PrincipalID
	Created time.Time
	// Seen is the last time the session was used (for the idle timeout).
	Seen time.Time
	// Expires is the absolute end of the session.
	Expires time.Time
}

// SessionStore keeps sessions.
type SessionStore interface {
	// CreateSession stores s and deletes the user's expired sessions.
	CreateSession(ctx context.Context, s Session) error
	Session(ctx context.Context, hash [32]byte) (Session, error)
	TouchSession(ctx context.Context, hash [32]byte, seen time.Time) error
	// DeleteSession deletes a session; deleting a missing one is no error.
	DeleteSession(ctx context.Context, hash [32]byte) error
}

// Provider is an OpenID Connect provider a tenant's users may log in with.
type Provider struct {
	// ID is "idp_...".
	ID     string            `json:"id"`
	Tenant registry.TenantID `json:"tenant"`
	// Issuer is the provider's issuer URL; discovery starts there and ID
	// tokens must name it exactly.
	Issuer string `json:"issuer"`
	// ClientID and ClientSecret are Custos's registration at the provider.
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"-"`
	// RedirectURL is the hub's callback as registered at the provider:
	// https://<hub>/v1/oidc/<tenant>/<provider>/callback.
	RedirectURL string `json:"redirect_url"`
	// AutoCreate makes a user at first login (just in time) with
	// DefaultRoles; without it only pre-provisioned users may log in.
	AutoCreate   bool          `json:"auto_create"`
	DefaultRoles []access.Role `json:"default_roles"`
	Created      time.Time     `json:"created"`
}

// Flow is an authorization code flow under way, keyed by its state's hash.
type Flow struct {
	StateHash [32]byte
	Tenant    registry.TenantID
	Provider  string
	Nonce     string
	Verifier  string // PKCE code verifier
	Expires   time.Time
}

// ProviderStore keeps OIDC providers and flows.
type ProviderStore interface {
	CreateProvider(ctx context.Context, p Provider) error
	Provider(ctx context.Context, t registry.TenantID, id string) (Provider, error)
	Providers(ctx context.Context, t registry.TenantID) ([]Provider, error)
	// CreateFlow stores f and deletes expired flows.
	CreateFlow(ctx context.Context, f Flow) error
	// TakeFlow returns the flow with this state hash and deletes it, so a
	// state is used at most once, also when two callbacks race.
	TakeFlow(ctx context.Context, stateHash [32]byte) (Flow, error)
}
