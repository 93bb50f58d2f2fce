package access

import (
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

var (
	t0   = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	all5 = []rollup.Resolution{rollup.Raw, rollup.Min15, rollup.Hour, rollup.Day, rollup.Month}
)

const (
	tenA  registry.TenantID = "ten_a"
	alice PrincipalID       = "usr_alice"
	bob   PrincipalID       = "usr_bob"
)

// home is the stream meter-1/import_power_w of subject sub_1's home.
var home = Path{Subject: "sub_1", Site: "sit_1", Device: "dev_1", Stream: "str_1", Groups: []GroupID{"grp_flex"}}

// neighbour is a stream of subject sub_2.
var neighbour = Path{Subject: "sub_2", Site: "sit_2", Device: "dev_2", Stream: "str_2"}

func read(p PrincipalID, path Path, r rollup.Resolution, purpose Purpose) Request {
	return Request{Tenant: tenA, Principal: p, Resource: path, Resolution: r, Purpose: purpose, Now: t0}
}

func grant(id string, p PrincipalID, res Resource, finest rollup.Resolution, purposes ...Purpose) Grant {
	if len(purposes) == 0 {
		purposes = []Purpose{"monitoring"}
	}
	return Grant{ID: id, Tenant: tenA, Principal: p, Resource: res, Finest: finest, Purposes: purposes}
}

func mustAdd(t testing.TB, d *Decider, gs ...Grant) {
	t.Helper()
	for _, g := range gs {
		if err := d.Add(g); err != nil {
			t.Fatalf("Add(%s): %v", g.ID, err)
		}
	}
}

func mustDecide(t testing.TB, d *Decider, req Request) Decision {
	t.Helper()
	dec, err := d.Decide(req)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return dec
}

// wantAllowed checks the decision at every resolution: allowed exactly at
// those in allowed, and Finest as given.
func wantAllowed(t *testing.T, d *Decider, req Request, finest rollup.Resolution, allowed ...rollup.Resolution) {
	t.Helper()
	for _, r := range all5 {
		req.Resolution = r
		dec := mustDecide(t, d, req)
		want := false
		for _, a := range allowed {
			want = want || a == r
		}
		if dec.Allow != want || dec.Finest != finest {
			t.Errorf("%s: got allow=%v finest=%q (%s), want allow=%v finest=%q", r, dec.Allow, dec.Finest, dec.Reason, want, finest)
		}
	}
}

func TestResolutionGrants(t *testing.T) {
	tests := []struct {
		name    string
		grant   Grant
		finest  rollup.Resolution
		allowed []rollup.Resolution
	}{
		{"daily on the stream", grant("g", alice, StreamResource("str_1"), rollup.Day), rollup.Day, []rollup.Resolution{rollup.Day, rollup.Month}},
		{"daily on the site", grant("g", alice, SiteResource("sit_1"), rollup.Day), rollup.Day, []rollup.Resolution{rollup.Day, rollup.Month}},
		{"monthly on the tenant", grant("g", alice, TenantResource(tenA), rollup.Month), rollup.Month, []rollup.Resolution{rollup.Month}},
		{"monthly on the subject", grant("g", alice, SubjectResource("sub_1"), rollup.Month), rollup.Month, []rollup.Resolution{rollup.Month}},
		{"hourly on the device", grant("g", alice, DeviceResource("dev_1"), rollup.Hour), rollup.Hour, []rollup.Resolution{rollup.Hour, rollup.Day, rollup.Month}},
		{"15m on a group", grant("g", alice, GroupResource("grp_flex"), rollup.Min15), rollup.Min15, []rollup.Resolution{rollup.Min15, rollup.Hour, rollup.Day, rollup.Month}},
		{"raw on the stream", grant("g", alice, StreamResource("str_1"), rollup.Raw), rollup.Raw, all5},
		{"another stream", grant("g", alice, StreamResource("str_9"), rollup.Raw), "", nil},
		{"another group", grant("g", alice, GroupResource("grp_other"), rollup.Raw), "", nil},
		{"another principal", grant("g", bob, StreamResource("str_1"), rollup.Raw), "", nil},
		{"expired", func() Grant {
			g := grant("g", alice, StreamResource("str_1"), rollup.Raw)
			g.NotBefore, g.NotAfter = t0.Add(-48*time.Hour), t0
			return g
		}(), "", nil},
		{"not yet valid", func() Grant {
			g := grant("g", alice, StreamResource("str_1"), rollup.Raw)
			g.NotBefore = t0.Add(time.Nanosecond)
			return g
		}(), "", nil},
		{"valid from now until 1ns later", func() Grant {
			g := grant("g", alice, StreamResource("str_1"), rollup.Day)
			g.NotBefore, g.NotAfter = t0, t0.Add(time.Nanosecond)
			return g
		}(), rollup.Day, []rollup.Resolution{rollup.Day, rollup.Month}},
		{"purpose not granted", grant("g", alice, StreamResource("str_1"), rollup.Raw, "billing"), "", nil},
		{"one of the purposes", grant("g", alice, StreamResource("str_1"), rollup.Day, "billing", "monitoring"), rollup.Day, []rollup.Resolution{rollup.Day, rollup.Month}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecider()
			mustAdd(t, d, tt.grant)
			wantAllowed(t, d, read(alice, home, "", "monitoring"), tt.finest, tt.allowed...)
		})
	}
}

func TestDailyOnlyMessage(t *testing.T) {
	d := NewDecider()
	mustAdd(t, d, grant("grt_daily", alice, StreamResource("str_1"), rollup.Day))
	dec := mustDecide(t, d, read(alice, home, rollup.Hour, "monitoring"))
	err := dec.Err("api.Read")
	if !errs.Is(errs.Forbidden, err) || !strings.Contains(err.Error(), "finest granted: 1d") {
		t.Errorf("Err = %v, want forbidden naming 1d", err)
	}
	dec = mustDecide(t, d, read(alice, home, rollup.Day, "monitoring"))
	if dec.Err("api.Read") != nil || dec.Reason != "allowed by grant grt_daily" {
		t.Errorf("day: %+v", dec)
	}
	dec = mustDecide(t, d, read(bob, home, rollup.Day, "monitoring"))
	if err := dec.Err("api.Read"); !errs.Is(errs.Forbidden, err) || strings.Contains(err.Error(), "finest") {
		t.Errorf("no grant: Err = %v", err)
	}
}

func TestFinestOverSeveralGrants(t *testing.T) {
	d := NewDecider()
	mustAdd(t, d,
		grant("month", alice, TenantResource(tenA), rollup.Month),
		grant("hour", alice, SiteResource("sit_1"), rollup.Hour),
		grant("raw-billing", alice, StreamResource("str_1"), rollup.Raw, "billing"),
	)
	wantAllowed(t, d, read(alice, home, "", "monitoring"), rollup.Hour, rollup.Hour, rollup.Day, rollup.Month)
	wantAllowed(t, d, read(alice, neighbour, "", "monitoring"), rollup.Month, rollup.Month)
	wantAllowed(t, d, read(alice, home, "", "billing"), rollup.Raw, all5...)
	dec := mustDecide(t, d, read(alice, home, rollup.Month, "monitoring"))
	if dec.Reason != "allowed by grant hour, grant month" {
		t.Errorf("reason %q", dec.Reason)
	}
}

func TestRevocationIsImmediate(t *testing.T) {
	d := NewDecider()
	mustAdd(t, d, grant("g1", alice, StreamResource("str_1"), rollup.Raw), grant("g2", alice, SiteResource("sit_1"), rollup.Day))
	req := read(alice, home, rollup.Raw, "monitoring")
	v0 := d.Version()
	if !mustDecide(t, d, req).Allow {
		t.Fatal("raw not allowed before revocation")
	}
	if err := d.Revoke(tenA, "g1"); err != nil {
		t.Fatal(err)
	}
	dec := mustDecide(t, d, req)
	if dec.Allow || dec.Finest != rollup.Day || dec.Version != v0+1 {
		t.Errorf("after revoking g1: %+v", dec)
	}
	if err := d.Revoke(tenA, "g2"); err != nil {
		t.Fatal(err)
	}
	req.Resolution = rollup.Month
	if dec := mustDecide(t, d, req); dec.Allow || dec.Finest != "" {
		t.Errorf("after revoking g2: %+v", dec)
	}
	if err := d.Revoke(tenA, "g2"); !errs.Is(errs.NotFound, err) {
		t.Errorf("second revoke: %v", err)
	}
	if err := d.Revoke("ten_b", "g1"); !errs.Is(errs.NotFound, err) {
		t.Errorf("revoke in another tenant: %v", err)
	}
	// Re-adding works, and Replace swaps everything at once.
	mustAdd(t, d, grant("g1", alice, StreamResource("str_1"), rollup.Raw))
	if !mustDecide(t, d, req).Allow {
		t.Error("re-added grant not effective")
	}
	if err := d.Replace([]Grant{grant("g9", bob, StreamResource("str_1"), rollup.Raw)}); err != nil {
		t.Fatal(err)
	}
	if mustDecide(t, d, req).Allow {
		t.Error("grant survived Replace")
	}
	req.Principal = bob
	if !mustDecide(t, d, req).Allow {
		t.Error("replaced grant not effective")
	}
	if d.Len() != 1 {
		t.Errorf("Len = %d", d.Len())
	}
}

func TestMemberOwnData(t *testing.T) {
	d := NewDecider()
	member := func(path Path, purpose Purpose) Request {
		r := read(alice, path, "", purpose)
		r.Roles, r.MemberOf = []Role{RoleMember}, "sub_1"
		return r
	}
	wantAllowed(t, d, member(home, "anything"), rollup.Raw, all5...)
	wantAllowed(t, d, member(Path{Subject: "sub_1"}, "monitoring"), rollup.Raw, all5...)
	wantAllowed(t, d, member(Path{Subject: "sub_1", Site: "sit_1"}, "monitoring"), rollup.Raw, all5...)
	wantAllowed(t, d, member(neighbour, "monitoring"), "")
	wantAllowed(t, d, member(Path{}, "monitoring"), "") // not the whole tenant

	// MemberOf without the member role, or the role without MemberOf: nothing.
	r := member(home, "monitoring")
	r.Roles = []Role{RoleAnalyst}
	wantAllowed(t, d, r, "")
	r = member(home, "monitoring")
	r.MemberOf = ""
	wantAllowed(t, d, r, "")

	// A grant on the neighbour adds to the member's rights.
	mustAdd(t, d, grant("g", alice, SubjectResource("sub_2"), rollup.Month))
	wantAllowed(t, d, member(neighbour, "monitoring"), rollup.Month, rollup.Month)
	r = member(home, "x")
	r.Resolution = rollup.Raw
	dec := mustDecide(t, d, r)
	if dec.Reason != "allowed by member's own data" {
		t.Errorf("reason %q", dec.Reason)
	}
}

func TestRoleGrants(t *testing.T) {
	d := NewDecider()
	mustAdd(t, d, Grant{ID: "analysts", Tenant: tenA, Role: RoleAnalyst, Resource: TenantResource(tenA), Finest: rollup.Day, Purposes: []Purpose{"research"}})
	r := read(alice, home, "", "research")
	wantAllowed(t, d, r, "")
	r.Roles = []Role{RoleOperator, RoleAnalyst, RoleAnalyst}
	wantAllowed(t, d, r, rollup.Day, rollup.Day, rollup.Month)
	r.Tenant = "ten_b"
	wantAllowed(t, d, r, "")
}

func TestInvalid(t *testing.T) {
	d := NewDecider()
	good := read(alice, home, rollup.Day, "monitoring")
	reqs := map[string]func(*Request){
		"no tenant":         func(r *Request) { r.Tenant = "" },
		"no principal":      func(r *Request) { r.Principal = "" },
		"bad principal":     func(r *Request) { r.Principal = "alice" },
		"bad resolution":    func(r *Request) { r.Resolution = "1w" },
		"empty resolution":  func(r *Request) { r.Resolution = "" },
		"no purpose":        func(r *Request) { r.Purpose = "" },
		"no time":           func(r *Request) { r.Now = time.Time{} },
		"time out of range": func(r *Request) { r.Now = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) },
		"stream no device":  func(r *Request) { r.Resource.Device = "" },
		"device no site":    func(r *Request) { r.Resource = Path{Subject: "s", Device: "d"} },
		"site no subject":   func(r *Request) { r.Resource = Path{Site: "s"} },
		"bad role":          func(r *Request) { r.Roles = []Role{"root"} },
		"empty group":       func(r *Request) { r.Resource.Groups = []GroupID{""} },
	}
	mustAdd(t, d, grant("g", alice, TenantResource(tenA), rollup.Raw))
	if !mustDecide(t, d, good).Allow {
		t.Fatal("good request denied")
	}
	for name, mutate := range reqs {
		r := good
		mutate(&r)
		dec, err := d.Decide(r)
		if dec.Allow || !errs.Is(errs.Invalid, err) {
			t.Errorf("%s: got %+v, %v; want deny and an invalid error", name, dec, err)
		}
		if x := d.Explain(r); x.Decision.Allow || !errs.Is(errs.Invalid, x.Err) {
			t.Errorf("%s: Explain %+v", name, x)
		}
	}

	base := grant("g2", alice, StreamResource("str_1"), rollup.Day)
	grants := map[string]func(*Grant){
		"no ID":              func(g *Grant) { g.ID = "" },
		"no tenant":          func(g *Grant) { g.Tenant = "" },
		"no grantee":         func(g *Grant) { g.Principal = "" },
		"two grantees":       func(g *Grant) { g.Role = RoleAnalyst },
		"bad role":           func(g *Grant) { g.Principal, g.Role = "", "root" },
		"bad principal":      func(g *Grant) { g.Principal = "bob" },
		"no resource":        func(g *Grant) { g.Resource.ID = "" },
		"bad kind":           func(g *Grant) { g.Resource.Kind = "planet" },
		"other tenant":       func(g *Grant) { g.Resource = TenantResource("ten_b") },
		"bad resolution":     func(g *Grant) { g.Finest = "1s" },
		"no purpose":         func(g *Grant) { g.Purposes = nil },
		"empty purpose":      func(g *Grant) { g.Purposes = []Purpose{""} },
		"empty window":       func(g *Grant) { g.NotBefore, g.NotAfter = t0, t0 },
		"inverted window":    func(g *Grant) { g.NotBefore, g.NotAfter = t0, t0.Add(-1) },
		"window out of rage": func(g *Grant) { g.NotAfter = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) },
	}
	for name, mutate := range grants {
		g := base
		mutate(&g)
		if err := d.Add(g); !errs.Is(errs.Invalid, err) {
			t.Errorf("grant %s: Add = %v, want invalid", name, err)
		}
		if err := d.Replace([]Grant{base, g}); !errs.Is(errs.Invalid, err) {
			t.Errorf("grant %s: Replace = %v, want invalid", name, err)
		}
	}
	if err := d.Add(grant("g", bob, TenantResource(tenA), rollup.Raw)); !errs.Is(errs.Exists, err) {
		t.Errorf("duplicate ID: %v", err)
	}
	if err := d.Replace([]Grant{base, base}); !errs.Is(errs.Exists, err) {
		t.Errorf("duplicate ID in Replace: %v", err)
	}
	if !mustDecide(t, d, good).Allow || d.Len() != 1 {
		t.Error("a failed Add or Replace changed the grants")
	}
}

// TestGrantIsCopied: the caller's purposes slice is not shared.
func TestGrantIsCopied(t *testing.T) {
	d := NewDecider()
	ps := []Purpose{"monitoring"}
	mustAdd(t, d, grant("g", alice, StreamResource("str_1"), rollup.Raw, ps...))
	ps[0] = "other"
	if x := d.Explain(read(alice, home, rollup.Raw, "monitoring")); !x.Decision.Allow || x.Candidates[1].Grant.Purposes[0] != "monitoring" {
		t.Errorf("%v", x)
	}
}

func TestRankMatchesRollup(t *testing.T) {
	for _, a := range all5 {
		for _, b := range all5 {
			if (rank(a) < rank(b)) != a.Finer(b) {
				t.Errorf("rank(%s)=%d, rank(%s)=%d disagrees with Finer", a, rank(a), b, rank(b))
			}
		}
		if byRank[rank(a)] != a {
			t.Errorf("byRank[%d] = %s", rank(a), byRank[rank(a)])
		}
	}
	if rank("") != 0 || rank("1w") != 0 {
		t.Error("invalid resolutions must rank 0")
	}
}

func TestPolicyText(t *testing.T) {
	g := grant("g", alice, SiteResource("sit_1"), rollup.Day, "billing")
	g.NotBefore, g.NotAfter = t0, t0.Add(time.Hour)
	got := string(compile(g).policy.MarshalCedar())
	for _, want := range []string{
		`principal == Custos::Principal::"5:ten_a/usr_alice"`,
		`action == Custos::Action::"read"`,
		`resource in Custos::Site::"5:ten_a/sit_1"`,
		`resource in Custos::Tenant::"ten_a"`,
		`context.rank >= 4`,
		`["billing"].contains(context.purpose)`,
		`context.now >= 1772366400000000000`,
		`context.now < 1772370000000000000`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("policy lacks %s:\n%s", want, got)
		}
	}
	g = Grant{ID: "r", Tenant: tenA, Role: RoleOperator, Resource: GroupResource("grp"), Finest: rollup.Raw, Purposes: []Purpose{`a"b`}}
	got = string(compile(g).policy.MarshalCedar())
	for _, want := range []string{`principal in Custos::Role::"5:ten_a/operator"`, `resource in Custos::Group::"5:ten_a/grp"`, `["a\"b"]`} {
		if !strings.Contains(got, want) {
			t.Errorf("policy lacks %s:\n%s", want, got)
		}
	}
}

func TestExplain(t *testing.T) {
	d := NewDecider()
	expired := grant("expired", alice, StreamResource("str_1"), rollup.Raw)
	expired.NotAfter = t0
	future := grant("future", alice, StreamResource("str_1"), rollup.Raw)
	future.NotBefore = t0.Add(time.Hour)
	other := grant("other", alice, StreamResource("str_1"), rollup.Raw)
	other.Tenant = "ten_b"
	mustAdd(t, d,
		grant("daily", alice, SiteResource("sit_1"), rollup.Day),
		grant("billing", alice, StreamResource("str_1"), rollup.Raw, "billing"),
		grant("elsewhere", alice, StreamResource("str_2"), rollup.Raw),
		expired, future, other,
		Grant{ID: "ops", Tenant: tenA, Role: RoleOperator, Resource: TenantResource(tenA), Finest: rollup.Month, Purposes: []Purpose{"monitoring"}},
	)
	req := read(alice, home, rollup.Hour, "monitoring")
	req.Roles = []Role{RoleOperator}
	x := d.Explain(req)
	if x.Err != nil || x.Decision.Allow || x.Decision.Finest != rollup.Day {
		t.Fatalf("decision %+v %v", x.Decision, x.Err)
	}
	if dec := mustDecide(t, d, req); dec != x.Decision {
		t.Errorf("Explain decided %+v, Decide %+v", x.Decision, dec)
	}
	want := map[string]string{
		"member-own-data": "principal is not a member",
		"daily":           "resolution finer than granted",
		"billing":         "purpose not granted",
		"elsewhere":       "does not cover the resource",
		"expired":         "expired",
		"future":          "not yet valid",
		"other":           "grant of another tenant",
		"ops":             "resolution finer than granted",
	}
	for _, c := range x.Candidates {
		name := c.Rule + c.Grant.ID
		var vs []string
		for _, v := range c.Verdicts {
			vs = append(vs, string(v))
		}
		if got := strings.Join(vs, "; "); got != want[name] {
			t.Errorf("%s: verdicts %q, want %q", name, got, want[name])
		}
		delete(want, name)
		if c.Policy == "" {
			t.Errorf("%s: no policy text", name)
		}
	}
	if len(want) != 0 {
		t.Errorf("missing candidates %v", want)
	}
	s := x.String()
	for _, w := range []string{"DENY: usr_alice reads stream:str_1 in tenant ten_a at 1h for monitoring", "finest granted: 1d", "grant daily (tenant ten_a, to usr_alice, site:sit_1, finest 1d, purposes monitoring): resolution finer than granted"} {
		if !strings.Contains(s, w) {
			t.Errorf("String lacks %q:\n%s", w, s)
		}
	}
	req.Resolution = rollup.Day
	if x := d.Explain(req); !x.Decision.Allow || !x.Candidates[1].Applies() {
		t.Errorf("at 1d: %s", x)
	}
}

// TestConcurrentUpdates: decisions run while grants are added and revoked
// (run with -race); once Revoke returns, no decision allows any more.
func TestConcurrentUpdates(t *testing.T) {
	d := NewDecider()
	mustAdd(t, d, grant("keep", bob, StreamResource("str_1"), rollup.Raw))
	stop := make(chan struct{})
	done := make(chan error)
	for range 2 {
		go func() {
			for {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				if dec, err := d.Decide(read(bob, home, rollup.Raw, "monitoring")); err != nil || !dec.Allow {
					done <- errs.E(errs.Other, "bob lost access: "+dec.Reason)
					return
				}
			}
		}()
	}
	req := read(alice, home, rollup.Raw, "monitoring")
	for i := range 200 {
		id := "g" + strings.Repeat("x", i%3)
		mustAdd(t, d, grant(id, alice, StreamResource("str_1"), rollup.Raw))
		if !mustDecide(t, d, req).Allow {
			t.Fatal("added grant not effective")
		}
		if err := d.Revoke(tenA, id); err != nil {
			t.Fatal(err)
		}
		if mustDecide(t, d, req).Allow {
			t.Fatal("revoked grant still effective")
		}
	}
	close(stop)
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestReplaceTenant: a replica's reload of one tenant's grants replaces
// exactly that tenant's grants, revocations included, and leaves other
// tenants' grants deciding as before.
func TestReplaceTenant(t *testing.T) {
	const tenB registry.TenantID = "ten_b"
	d := NewDecider()
	gb := grant("g_b", alice, StreamResource("str_1"), rollup.Raw)
	gb.Tenant = tenB
	mustAdd(t, d, grant("g1", alice, StreamResource("str_1"), rollup.Raw), grant("g2", bob, TenantResource(tenA), rollup.Day), gb)
	// Reload tenant A without g1 (revoked elsewhere) and with a new g3.
	if err := d.ReplaceTenant(tenA, []Grant{grant("g2", bob, TenantResource(tenA), rollup.Day), grant("g3", alice, StreamResource("str_1"), rollup.Hour)}); err != nil {
		t.Fatal(err)
	}
	if dec := mustDecide(t, d, read(alice, home, rollup.Raw, "monitoring")); dec.Allow || dec.Finest != rollup.Hour {
		t.Errorf("alice in A after reload: %+v, want denied with finest 1h", dec)
	}
	if dec := mustDecide(t, d, read(bob, home, rollup.Day, "monitoring")); !dec.Allow {
		t.Errorf("bob's daily grant lost: %+v", dec)
	}
	reqB := read(alice, home, rollup.Raw, "monitoring")
	reqB.Tenant = tenB
	if dec := mustDecide(t, d, reqB); !dec.Allow {
		t.Errorf("tenant B's grant lost by reloading A: %+v", dec)
	}
	if d.Len() != 3 {
		t.Errorf("Len = %d, want 3", d.Len())
	}
	// A grant of another tenant is refused and nothing changes.
	if err := d.ReplaceTenant(tenA, []Grant{gb}); !errs.Is(errs.Invalid, err) {
		t.Errorf("foreign grant: %v, want Invalid", err)
	}
	if d.Len() != 3 {
		t.Errorf("after refused reload Len = %d, want 3", d.Len())
	}
}
