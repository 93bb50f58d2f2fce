package access

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// Tenants and IDs chosen to collide: equal strings in several tenants, IDs
// that look like scoped IDs of another tenant, separators.
var (
	isoTenants = []registry.TenantID{"ten_a", "ten_b", "t", "t/1", "1:t", "5:ten_a", "ten_a/x"}
	isoIDs     = []string{"x", "1/x", "t/1/x", "ten_a", "ten_b", "5:ten_a/x", "sub_1"}
	isoUsers   = []PrincipalID{"usr_a", "app_a", "tok_a", "usr_5:ten_a/usr_a"}
)

// grantEverything gives p (and every role) raw access, for every purpose in
// purposes, to every resource named by ids, in tenant t.
func grantEverything(t testing.TB, d *Decider, tenant registry.TenantID, ps []PrincipalID, ids []string, purposes []Purpose) {
	t.Helper()
	n := 0
	add := func(g Grant) {
		n++
		g.ID, g.Tenant, g.Finest, g.Purposes = "grt_"+strconv.Itoa(n), tenant, rollup.Raw, purposes
		if err := d.Add(g); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	res := []Resource{TenantResource(tenant)}
	for _, id := range ids {
		for _, k := range []Kind{KindSubject, KindSite, KindDevice, KindStream, KindGroup} {
			res = append(res, Resource{k, id})
		}
	}
	for _, r := range res {
		for _, p := range ps {
			add(Grant{Principal: p, Resource: r})
		}
		for _, role := range Roles {
			add(Grant{Role: role, Resource: r})
		}
	}
}

// pathsOver returns paths of every depth whose every level, and group, is id.
func pathsOver(id string) []Path {
	g := []GroupID{GroupID(id)}
	return []Path{
		{Groups: g},
		{Subject: registry.SubjectID(id), Groups: g},
		{Subject: registry.SubjectID(id), Site: registry.SiteID(id), Groups: g},
		{Subject: registry.SubjectID(id), Site: registry.SiteID(id), Device: registry.DeviceID(id), Groups: g},
		{Subject: registry.SubjectID(id), Site: registry.SiteID(id), Device: registry.DeviceID(id), Stream: registry.StreamID(id), Groups: g},
	}
}

// nonMemberRoles: every role but member (a member of tenant B may read its
// own subject in B; that is not a cross-tenant read).
var nonMemberRoles = slices.DeleteFunc(slices.Clone(Roles), func(r Role) bool { return r == RoleMember })

// TestTenantIsolationMatrix: everything granted in tenant A; every
// principal, role set and resource path with the same ID strings in every
// other tenant B is denied, with nothing granted.
func TestTenantIsolationMatrix(t *testing.T) {
	purposes := []Purpose{"monitoring"}
	n := 0
	for _, a := range isoTenants {
		d := NewDecider()
		grantEverything(t, d, a, isoUsers, isoIDs, purposes)
		for _, b := range isoTenants {
			for _, p := range isoUsers {
				for _, id := range isoIDs {
					for _, path := range pathsOver(id) {
						req := Request{Tenant: b, Principal: p, Roles: nonMemberRoles, Resource: path,
							Resolution: rollup.Month, Purpose: "monitoring", Now: t0}
						dec, err := d.Decide(req)
						if err != nil {
							t.Fatal(err)
						}
						n++
						if a == b {
							if !dec.Allow || dec.Finest != rollup.Raw {
								t.Fatalf("own tenant %s denied: %+v\n%s", a, dec, d.Explain(req))
							}
							continue
						}
						if dec.Allow || dec.Finest != "" {
							t.Fatalf("grants of %q leak into %q: %+v\n%s", a, b, dec, d.Explain(req))
						}
					}
				}
			}
		}
	}
	t.Logf("%d decisions", n)
}

// TestTenantNonInterference: a Decider holding the grants of every tenant
// decides each query exactly as one holding only the query's tenant's
// grants.
func TestTenantNonInterference(t *testing.T) {
	s := seed(t)
	w := newWorld(rand.New(rand.NewPCG(s, 1)))
	all := NewDecider()
	own := map[registry.TenantID]*Decider{}
	for i := range 600 {
		g := w.grant("grt_" + strconv.Itoa(i))
		if err := all.Add(g); err != nil {
			t.Fatal(err)
		}
		if own[g.Tenant] == nil {
			own[g.Tenant] = NewDecider()
		}
		if err := own[g.Tenant].Add(g); err != nil {
			t.Fatal(err)
		}
	}
	for range *casesFlag {
		q := w.query()
		got, err := all.Decide(q)
		if err != nil {
			t.Fatal(err)
		}
		single := own[q.Tenant]
		if single == nil {
			single = NewDecider()
		}
		want, err := single.Decide(q)
		if err != nil {
			t.Fatal(err)
		}
		got.Version, want.Version = 0, 0
		if got != want {
			t.Fatalf("seed %d: query %+v: with all tenants %+v, with its own %+v", s, q, got, want)
		}
	}
}

// FuzzTenantIsolation: a grant of every kind on a fuzzed ID to a fuzzed
// principal and to every role in tenant a never allows anything in tenant
// b, for any resource path built from the same ID, while it does allow the
// same request in tenant a.
func FuzzTenantIsolation(f *testing.F) {
	f.Add("ten_a", "ten_b", "usr_a", "x", "monitoring")
	f.Add("t", "t/1", "usr_1/x", "1/x", "p")
	f.Add("1:t", "t", "app_x", "t/x", "billing")
	f.Add("ten_a", "5:ten_a", "tok_5:ten_a/usr_a", "5:ten_a/x", "\"]; permit(")
	f.Add("a", "a\x00", "usr_\"", "x\"/", "p\\")
	f.Fuzz(func(t *testing.T, a, b, principal, id, purpose string) {
		trim := func(s string) string {
			if len(s) > 64 {
				s = s[:64]
			}
			if s == "" {
				s = "x"
			}
			return s
		}
		ta, tb := registry.TenantID(trim(a)), registry.TenantID(trim(b))
		if ta == tb {
			return
		}
		p := PrincipalID("usr_" + trim(principal))
		id, pu := trim(id), Purpose(trim(purpose))
		d := NewDecider()
		grantEverything(t, d, ta, []PrincipalID{p}, []string{id}, []Purpose{pu})
		for _, path := range pathsOver(id) {
			for _, tenant := range []registry.TenantID{ta, tb} {
				req := Request{Tenant: tenant, Principal: p, Roles: nonMemberRoles, Resource: path,
					Resolution: rollup.Raw, Purpose: pu, Now: t0}
				dec, err := d.Decide(req)
				if err != nil {
					t.Fatal(err)
				}
				if tenant == ta && !dec.Allow {
					t.Fatalf("own tenant denied: %+v\n%s", dec, d.Explain(req))
				}
				if tenant == tb {
					if dec.Allow || dec.Finest != "" {
						t.Fatalf("grants of %q leak into %q: %+v\n%s", ta, tb, dec, d.Explain(req))
					}
					for _, c := range d.Explain(req).Candidates {
						if c.Applies() {
							t.Fatalf("candidate applies across tenants: %+v", c)
						}
					}
				}
			}
		}
	})
}
