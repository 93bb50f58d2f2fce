package access

import (
	"fmt"
	"slices"
	"strings"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// Verdict says why a candidate grant or rule did or did not apply.
type Verdict string

// The verdicts. A candidate that applies has exactly VerdictApplies; one
// that does not lists every condition it fails.
const (
	VerdictApplies       Verdict = "applies"
	VerdictTooFine       Verdict = "resolution finer than granted"
	VerdictPurpose       Verdict = "purpose not granted"
	VerdictNotYetValid   Verdict = "not yet valid"
	VerdictExpired       Verdict = "expired"
	VerdictOtherResource Verdict = "does not cover the resource"
	VerdictWrongTenant   Verdict = "grant of another tenant"
	VerdictNotMember     Verdict = "principal is not a member"
	VerdictNotOwnData    Verdict = "not the member's own subject"
)

// Candidate is one grant, or the member rule, that could have decided.
type Candidate struct {
	// Rule is "member-own-data" for the member rule, "" for a grant.
	Rule string
	// Grant is the candidate grant; zero for the member rule.
	Grant Grant
	// Verdicts is [VerdictApplies] or the conditions not met.
	Verdicts []Verdict
	// Policy is the candidate's Cedar policy.
	Policy string
}

// Applies reports whether the candidate allows the request.
func (c Candidate) Applies() bool {
	return len(c.Verdicts) == 1 && c.Verdicts[0] == VerdictApplies
}

// Explanation says why a request is allowed or denied: the decision and
// every candidate with its verdicts. It serves `custos access explain`.
//
// Candidates include grants to the same principal ID in other tenants,
// marked VerdictWrongTenant; an endpoint that shows explanations to a
// tenant admin MUST drop candidates whose Grant.Tenant is not the admin's.
type Explanation struct {
	Request    Request
	Decision   Decision
	Err        error // from Decide; the decision denies if set
	Candidates []Candidate
}

// Explain decides req and explains the decision. The decision is the one
// Decide returns; the verdicts are worked out condition by condition, for
// people.
func (d *Decider) Explain(req Request) Explanation {
	const op = errs.Op("access.Explain")
	x := Explanation{Request: req}
	if err := req.check(op); err != nil {
		x.Decision, x.Err = Decision{Reason: "invalid request"}, err
		return x
	}
	s := d.snapshot(req)
	x.Decision, x.Err = s.decide(req)
	if x.Err != nil {
		x.Err = errs.E(op, x.Err)
	}

	member := Candidate{Rule: "member-own-data", Policy: memberRuleText}
	switch {
	case !req.isMember():
		member.Verdicts = []Verdict{VerdictNotMember}
	case req.Resource.Subject != req.MemberOf:
		member.Verdicts = []Verdict{VerdictNotOwnData}
	default:
		member.Verdicts = []Verdict{VerdictApplies}
	}
	x.Candidates = append(x.Candidates, member)
	for _, cs := range s.sets {
		for _, c := range cs {
			x.Candidates = append(x.Candidates, candidate(c, req))
		}
	}
	for _, c := range d.otherTenants(req) {
		x.Candidates = append(x.Candidates, candidate(c, req))
	}
	return x
}

// otherTenants returns the grants to req.Principal in tenants other than
// req.Tenant.
func (d *Decider) otherTenants(req Request) []*compiled {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var ts []registry.TenantID
	for t := range d.tenantsOf[req.Principal] {
		if t != req.Tenant {
			ts = append(ts, t)
		}
	}
	slices.Sort(ts)
	var out []*compiled
	for _, t := range ts {
		out = append(out, d.sets[grantee{tenant: t, principal: req.Principal}]...)
	}
	return out
}

func candidate(c *compiled, req Request) Candidate {
	g := c.grant
	x := Candidate{Grant: g, Policy: string(c.policy.MarshalCedar())}
	if g.Tenant != req.Tenant {
		x.Verdicts = append(x.Verdicts, VerdictWrongTenant)
	}
	if !g.Resource.Covers(req.Tenant, req.Resource) {
		x.Verdicts = append(x.Verdicts, VerdictOtherResource)
	}
	if rank(req.Resolution) < c.rank {
		x.Verdicts = append(x.Verdicts, VerdictTooFine)
	}
	if !slices.Contains(g.Purposes, req.Purpose) {
		x.Verdicts = append(x.Verdicts, VerdictPurpose)
	}
	if !g.NotBefore.IsZero() && req.Now.Before(g.NotBefore) {
		x.Verdicts = append(x.Verdicts, VerdictNotYetValid)
	}
	if !g.NotAfter.IsZero() && !req.Now.Before(g.NotAfter) {
		x.Verdicts = append(x.Verdicts, VerdictExpired)
	}
	if len(x.Verdicts) == 0 {
		x.Verdicts = []Verdict{VerdictApplies}
	}
	return x
}

// String renders the explanation for the CLI.
func (x Explanation) String() string {
	var b strings.Builder
	r := x.Request
	verdict := "DENY"
	if x.Decision.Allow {
		verdict = "ALLOW"
	}
	fmt.Fprintf(&b, "%s: %s reads %s in tenant %s at %s for %s (grants version %d)\n",
		verdict, r.Principal, r.Resource.Target(r.Tenant), r.Tenant, r.Resolution, r.Purpose, x.Decision.Version)
	fmt.Fprintf(&b, "  reason: %s\n", x.Decision.Reason)
	if x.Decision.Finest != "" {
		fmt.Fprintf(&b, "  finest granted: %s\n", x.Decision.Finest)
	}
	if x.Err != nil {
		fmt.Fprintf(&b, "  error: %v\n", x.Err)
	}
	for _, c := range x.Candidates {
		vs := make([]string, len(c.Verdicts))
		for i, v := range c.Verdicts {
			vs[i] = string(v)
		}
		if c.Rule != "" {
			fmt.Fprintf(&b, "  rule %s: %s\n", c.Rule, strings.Join(vs, "; "))
			continue
		}
		g := c.Grant
		fmt.Fprintf(&b, "  grant %s (tenant %s, to %s, %s, finest %s, purposes %s): %s\n",
			g.ID, g.Tenant, g.Grantee(), g.Resource, g.Finest, joinPurposes(g.Purposes), strings.Join(vs, "; "))
	}
	return b.String()
}
