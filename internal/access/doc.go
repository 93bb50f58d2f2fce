// Package access owns the access decision of Custos: who (a principal) may
// read what (a resource of a tenant) at which resolution for which purpose,
// and why. It defines principals, roles, resources, grants, the Decider
// that holds a tenant's grants and answers one Request at a time, and
// Explain, which says for every candidate grant why it did or did not apply.
//
// Every read path (API, export, UI, apps) asks the same Decider before it
// touches data; the read path then serves the requested resolution, which
// the decision guarantees is no finer than granted.
//
// # Model
//
// A Grant gives one grantee — a principal (PrincipalID) or every holder of
// a Role in the tenant — read access to one Resource and everything below
// it (stream ∈ device ∈ site ∈ subject ∈ tenant; a named group covers the
// resources the caller says are in it), at its Finest resolution or any
// coarser one, for the listed Purposes, from NotBefore (inclusive) to
// NotAfter (exclusive); a zero bound is open.
//
// Roles grant nothing by themselves, with one exception fixed in the policy
// set: a principal holding RoleMember with MemberOf set always reads the
// resources of its own subject, raw, for any purpose, at any time. A tenant
// admin manages grants but sees data only through grants like anyone else.
//
// # Policy engine
//
// Decisions come from Cedar (github.com/cedar-policy/cedar-go). Each grant
// is compiled once, when it is added, into one permit policy:
//
//	permit (
//	    principal == Custos::Principal::"<tenant>/<principal>",   // or: principal in Custos::Role::"<tenant>/<role>"
//	    action == Custos::Action::"read",
//	    resource in Custos::Stream::"<tenant>/<stream>"          // or Device, Site, Subject, Group, Tenant
//	) when {
//	    resource in Custos::Tenant::"<tenant>" &&
//	    context.rank >= 4 &&                                      // raw 1, 15m 2, 1h 3, 1d 4, 1mo 5
//	    ["billing", "monitoring"].contains(context.purpose) &&
//	    context.now >= <NotBefore ns> && context.now < <NotAfter ns>
//	};
//
// plus the fixed member rule (see memberRule). Entity IDs carry their
// tenant with a length prefix, so equal ID strings of two tenants are
// different entities. Grants are indexed by (tenant, grantee); a decision
// hands Cedar only the policies of the requesting principal and of its
// roles in the request's tenant, with the request's resource path as
// entities and its rank, purpose and time as context.
//
// # Guarantees
//
// The package MUST NOT allow on error: an invalid request, an evaluation
// error of any policy, or a disagreement between its evaluations (see decide) is a
// deny. It MUST NOT decide across tenants: a grant of tenant A never takes
// part in a decision for tenant B, whatever the IDs look like — the index,
// the entity IDs and the policy condition each keep tenants apart. Add,
// Revoke and Replace take effect on the very next decision: each decision
// reads one immutable, versioned snapshot of the grants it needs; nothing
// is cached across decisions.
//
// The package does no I/O and keeps grants in memory only; storing them,
// and telling every hub replica about a change, is the caller's job.
// Errors and reasons carry IDs, resolutions and purposes, never personal
// data.
package access
