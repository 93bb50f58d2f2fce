package access

import (
	"flag"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

var (
	seedFlag  = flag.Uint64("access.seed", 0, "seed of the property tests (0: from the clock)")
	casesFlag = flag.Int("access.cases", 4000, "queries per property test round")
)

func seed(t *testing.T) uint64 {
	s := *seedFlag
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -access.seed=%d)", s, s)
	return s
}

// The reference model: plain loops over every grant, written from the
// package doc and sharing no code with the Decider.

var refOrder = []rollup.Resolution{rollup.Raw, rollup.Min15, rollup.Hour, rollup.Day, rollup.Month}

func refRank(r rollup.Resolution) int { return slices.Index(refOrder, r) } // -1 if invalid

func refCovers(g Grant, q Request) bool {
	p := q.Resource
	switch g.Resource.Kind {
	case KindTenant:
		return g.Resource.ID == string(q.Tenant)
	case KindSubject:
		return p.Subject != "" && g.Resource.ID == string(p.Subject)
	case KindSite:
		return p.Site != "" && g.Resource.ID == string(p.Site)
	case KindDevice:
		return p.Device != "" && g.Resource.ID == string(p.Device)
	case KindStream:
		return p.Stream != "" && g.Resource.ID == string(p.Stream)
	case KindGroup:
		return slices.Contains(p.Groups, GroupID(g.Resource.ID))
	}
	return false
}

// refDecide returns whether q is allowed and the finest resolution the
// principal could get ("" if none).
func refDecide(grants []Grant, q Request) (bool, rollup.Resolution) {
	best := -1
	take := func(r int) {
		if best < 0 || r < best {
			best = r
		}
	}
	if slices.Contains(q.Roles, RoleMember) && q.MemberOf != "" && q.Resource.Subject == q.MemberOf {
		take(0)
	}
	for _, g := range grants {
		if g.Tenant != q.Tenant {
			continue
		}
		if g.Principal != "" && g.Principal != q.Principal {
			continue
		}
		if g.Role != "" && !slices.Contains(q.Roles, g.Role) {
			continue
		}
		if !refCovers(g, q) || !slices.Contains(g.Purposes, q.Purpose) {
			continue
		}
		if !g.NotBefore.IsZero() && q.Now.Before(g.NotBefore) {
			continue
		}
		if !g.NotAfter.IsZero() && !q.Now.Before(g.NotAfter) {
			continue
		}
		take(refRank(g.Finest))
	}
	if best < 0 {
		return false, ""
	}
	return best <= refRank(q.Resolution), refOrder[best]
}

// world generates random grants and queries over small ID pools, so that
// IDs collide across tenants, kinds and levels. The pools contain '/' and
// ':' to attack the tenant scoping of entity IDs.
type world struct {
	r        *rand.Rand
	tenants  []registry.TenantID
	ids      []string
	purposes []Purpose
	base     time.Time
}

func newWorld(r *rand.Rand) *world {
	return &world{
		r:        r,
		tenants:  []registry.TenantID{"ten_a", "ten_b", "t", "t/1", "1:t", "ten_a/"},
		ids:      []string{"x", "y", "1/x", "t/1/x", "ten_a", "usr_a", "sub_1", "5:ten_a/x"},
		purposes: []Purpose{"monitoring", "billing", "research", "grid-flexibility"},
		base:     t0,
	}
}

func (w *world) pick(n int) int { return w.r.IntN(n) }

func (w *world) tenant() registry.TenantID { return w.tenants[w.pick(len(w.tenants))] }
func (w *world) id() string                { return w.ids[w.pick(len(w.ids))] }

func (w *world) principal() PrincipalID {
	return []PrincipalID{"usr_a", "usr_b", "app_a", "tok_a", "usr_x", "app_usr_a"}[w.pick(6)]
}

func (w *world) role() Role { return Roles[w.pick(len(Roles))] }

func (w *world) resolution() rollup.Resolution { return refOrder[w.pick(len(refOrder))] }

// instant returns a time within ±3 hours of the base, at times on the
// nanosecond, to hit window bounds exactly now and then.
func (w *world) instant() time.Time {
	return w.base.Add(time.Duration(w.pick(7)-3) * time.Hour).Add(time.Duration(w.pick(3)-1) * time.Nanosecond)
}

func (w *world) grant(id string) Grant {
	g := Grant{ID: id, Tenant: w.tenant(), Finest: w.resolution()}
	if w.pick(4) == 0 {
		g.Role = w.role()
	} else {
		g.Principal = w.principal()
	}
	kinds := []Kind{KindTenant, KindSubject, KindSite, KindDevice, KindStream, KindGroup}
	g.Resource = Resource{Kind: kinds[w.pick(len(kinds))], ID: w.id()}
	if g.Resource.Kind == KindTenant {
		g.Resource.ID = string(g.Tenant)
	}
	for _, p := range w.purposes {
		if w.pick(3) == 0 {
			g.Purposes = append(g.Purposes, p)
		}
	}
	if len(g.Purposes) == 0 {
		g.Purposes = []Purpose{w.purposes[w.pick(len(w.purposes))]}
	}
	if w.pick(2) == 0 {
		g.NotBefore = w.instant()
	}
	if w.pick(2) == 0 {
		g.NotAfter = w.instant()
		if !g.NotBefore.IsZero() && !g.NotBefore.Before(g.NotAfter) {
			g.NotAfter = g.NotBefore.Add(time.Duration(1+w.pick(2)) * time.Hour)
		}
	}
	return g
}

func (w *world) query() Request {
	q := Request{Tenant: w.tenant(), Principal: w.principal(), Resolution: w.resolution(),
		Purpose: w.purposes[w.pick(len(w.purposes))], Now: w.instant()}
	for _, r := range Roles {
		if w.pick(4) == 0 {
			q.Roles = append(q.Roles, r)
		}
	}
	if w.pick(2) == 0 {
		q.MemberOf = registry.SubjectID(w.id())
	}
	depth := w.pick(5) // 0: the tenant ... 4: a stream
	if depth >= 1 {
		q.Resource.Subject = registry.SubjectID(w.id())
	}
	if depth >= 2 {
		q.Resource.Site = registry.SiteID(w.id())
	}
	if depth >= 3 {
		q.Resource.Device = registry.DeviceID(w.id())
	}
	if depth >= 4 {
		q.Resource.Stream = registry.StreamID(w.id())
	}
	for range w.pick(3) {
		q.Resource.Groups = append(q.Resource.Groups, GroupID(w.id()))
	}
	return q
}

// TestDecideMatchesReference: random grants, revocations and queries; the
// Cedar-backed Decider and the reference model agree on every decision,
// Finest included, and Explain agrees with both.
func TestDecideMatchesReference(t *testing.T) {
	s := seed(t)
	r := rand.New(rand.NewPCG(s, s^0x9e3779b97f4a7c15))
	w := newWorld(r)
	d := NewDecider()
	var grants []Grant
	checked, allowed := 0, 0
	for round := range 8 {
		// Grow by a random batch, sometimes replacing everything.
		n := 20 + r.IntN(150)
		if round == 4 {
			grants = nil
			for i := range n {
				grants = append(grants, w.grant("grt_r"+strconv.Itoa(i)))
			}
			if err := d.Replace(grants); err != nil {
				t.Fatal(err)
			}
		} else {
			for i := range n {
				g := w.grant("grt_" + strconv.Itoa(round) + "_" + strconv.Itoa(i))
				grants = append(grants, g)
				if err := d.Add(g); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Revoke a few.
		for range r.IntN(10) {
			i := r.IntN(len(grants))
			g := grants[i]
			if err := d.Revoke(g.Tenant, g.ID); err != nil {
				t.Fatal(err)
			}
			grants = slices.Delete(grants, i, i+1)
		}
		for range *casesFlag / 8 {
			q := w.query()
			dec, err := d.Decide(q)
			if err != nil {
				t.Fatalf("seed %d: Decide(%+v): %v", s, q, err)
			}
			allow, finest := refDecide(grants, q)
			if dec.Allow != allow || dec.Finest != finest {
				t.Fatalf("seed %d: query %+v\ngot allow=%v finest=%q (%s)\nwant allow=%v finest=%q\n%s",
					s, q, dec.Allow, dec.Finest, dec.Reason, allow, finest, d.Explain(q))
			}
			checked++
			if allow {
				allowed++
			}
			if r.IntN(8) == 0 {
				checkExplain(t, s, d, q, dec)
			}
		}
	}
	t.Logf("%d queries over up to %d grants agree with the reference model; %d allowed", checked, len(grants), allowed)
	if allowed == 0 || allowed == checked {
		t.Errorf("degenerate test: %d of %d allowed", allowed, checked)
	}
}

// checkExplain: the explanation carries the decision, and its verdicts
// reproduce it: allowed iff some candidate applies, finest is the finest
// of those that apply or fail only on the resolution.
func checkExplain(t *testing.T, s uint64, d *Decider, q Request, dec Decision) {
	t.Helper()
	x := d.Explain(q)
	if x.Err != nil || x.Decision != dec {
		t.Fatalf("seed %d: Explain decided %+v (%v), Decide %+v", s, x.Decision, x.Err, dec)
	}
	applies, best := false, -1
	for _, c := range x.Candidates {
		if c.Grant.Tenant != "" && c.Grant.Tenant != q.Tenant && !slices.Contains(c.Verdicts, VerdictWrongTenant) {
			t.Fatalf("seed %d: candidate %s of tenant %s not marked wrong tenant", s, c.Grant.ID, c.Grant.Tenant)
		}
		if c.Applies() {
			applies = true
		}
		if c.Applies() || slices.Equal(c.Verdicts, []Verdict{VerdictTooFine}) {
			k := 0
			if c.Rule == "" {
				k = refRank(c.Grant.Finest)
			}
			if best < 0 || k < best {
				best = k
			}
		}
	}
	finest := rollup.Resolution("")
	if best >= 0 {
		finest = refOrder[best]
	}
	if applies != dec.Allow || finest != dec.Finest {
		t.Fatalf("seed %d: explanation (applies=%v finest=%q) disagrees with decision %+v:\n%s", s, applies, finest, dec, x)
	}
}
