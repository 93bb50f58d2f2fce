// Package identity owns the people who log in to a Custos hub: local
// users with argon2id password hashes, users who log in through an OpenID
// Connect provider configured per tenant, and the server-side web sessions
// both kinds of login end in.
//
// A session resolves to an access.Principal (see Sessions.Authenticate):
// the user's ID ("usr_..."), tenant, roles and, for a member, the data
// subject they are. What a principal may read is decided by package access,
// not here.
//
// # Guarantees
//
// The package MUST NOT store a password, a session ID or an OIDC state in
// the clear: passwords as argon2id PHC strings, session IDs and states as
// SHA-256 hashes. It MUST NOT tell an unknown login name from a wrong
// password: both cost one argon2id verification and end in the same error.
// Logins are throttled per account and per client address before any
// password is checked. Authentication fails closed: a session that is
// unknown, expired, idle too long or whose user is disabled is refused, as
// is an ID token whose signature, issuer, audience, expiry or nonce does
// not check out.
//
// Errors and logs carry IDs, never passwords, login names, tokens or
// claims of an ID token.
//
// The package does no I/O of its own beyond the OIDC provider's HTTP
// endpoints; it keeps its state through the Store interface (implemented
// by internal/store) and is driven by the HTTP adapter (internal/api).
package identity
