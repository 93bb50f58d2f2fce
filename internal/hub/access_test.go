package hub_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/consent"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/wire"
)

var resolutions = []string{"raw", "15m", "1h", "1d", "1mo"}

// readAt reads stream s at res through the API and returns the HTTP status
// and error message (200 and "" if allowed).
func readAt(t *testing.T, c *client.Client, ten registry.TenantID, s registry.StreamID, res string) (int, string) {
	t.Helper()
	ctx := context.Background()
	from, to := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	var err error
	if res == "raw" {
		_, err = c.Readings(ctx, ten, s, from, to, 10, "")
	} else {
		_, err = c.Aggregates(ctx, ten, s, res, from, to)
	}
	if err == nil {
		return 200, ""
	}
	ce, ok := err.(*client.Error)
	if !ok {
		t.Fatalf("read %s: %v", res, err)
	}
	return ce.Status, ce.Message
}

// wantReads checks that c may read s at exactly the resolutions in allowed,
// and that each refusal is a 403 naming finest (or "no access" if "").
func wantReads(t *testing.T, who string, c *client.Client, ten registry.TenantID, s registry.StreamID, finest string, allowed ...string) {
	t.Helper()
	for _, res := range resolutions {
		st, msg := readAt(t, c, ten, s, res)
		want := 403
		for _, a := range allowed {
			if a == res {
				want = 200
			}
		}
		if st != want {
			t.Errorf("%s reads %s: status %d (%q), want %d", who, res, st, msg, want)
			continue
		}
		if st == 403 {
			wantMsg := "no access to this resource for this purpose"
			if finest != "" {
				wantMsg = "finest granted: " + finest
			}
			if !strings.Contains(msg, wantMsg) {
				t.Errorf("%s reads %s: 403 %q, want it to say %q", who, res, msg, wantMsg)
			}
		}
	}
}

// declarePurposes declares purposes in tenant ten with lawful basis
// contract, covering every data category at raw resolution.
func declarePurposes(t *testing.T, c *client.Client, ten registry.TenantID, ids ...string) {
	t.Helper()
	for _, id := range ids {
		p := consent.Purpose{ID: consent.PurposeID(id), Basis: consent.BasisContract, Categories: registry.Categories,
			RetentionDays: 365, Finest: rollup.Raw, Notice: "Test purpose " + id + "."}
		if err := c.Do(context.Background(), "POST", "/v1/tenants/"+string(ten)+"/purposes", p, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// The purposes the consent tests use: real-time monitoring on consent,
// billing (15-minute values) on a contract.
var (
	monitoringByConsent = consent.Purpose{ID: "monitoring", Basis: consent.BasisConsent, Categories: registry.Categories,
		RetentionDays: 30, Finest: rollup.Raw, Notice: "Real-time monitoring."}
	billingByContract = consent.Purpose{ID: "billing", Basis: consent.BasisContract, Categories: registry.Categories,
		RetentionDays: 3650, Finest: rollup.Min15, Notice: "Billing."}
)

// definePurposes declares ps in tenant ten.
func definePurposes(t *testing.T, c *client.Client, ten registry.TenantID, ps ...consent.Purpose) {
	t.Helper()
	for _, p := range ps {
		if err := c.Do(context.Background(), "POST", "/v1/tenants/"+string(ten)+"/purposes", p, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// giveConsent records subject s's consent to purpose, through the API.
func giveConsent(t *testing.T, c *client.Client, ten registry.TenantID, s registry.SubjectID, purpose string) {
	t.Helper()
	if err := c.Do(context.Background(), "POST", "/v1/tenants/"+string(ten)+"/subjects/"+string(s)+"/consents", map[string]any{"purpose": purpose, "method": "web-form"}, nil); err != nil {
		t.Fatal(err)
	}
}

// tokenClient creates a token scoped to tenant ten with roles and returns a
// client using it, and its principal ID.
func tokenClient(t *testing.T, c *client.Client, ten registry.TenantID, name string, roles ...access.Role) (*client.Client, string) {
	t.Helper()
	tok, err := c.CreateToken(context.Background(), api.TokenIn{Name: name, Tenant: ten, Roles: roles})
	if err != nil {
		t.Fatal(err)
	}
	return c.WithToken(tok.Secret), tok.ID
}

// TestReadsEnforceGrants: resolution is a permission, enforced on the read
// endpoint: a daily-only grant gets 403 naming "1d" for raw, 15 min and 1 h;
// a monthly grant sees only months; an expired grant or another purpose
// sees nothing; a revocation applies to the very next request.
func TestReadsEnforceGrants(t *testing.T) {
	h, c := startHub(t, hub.Config{})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Grant Coop")
	if err != nil {
		t.Fatal(err)
	}
	hh, err := c.AddHousehold(ctx, ten.ID, "house-g", "Member G")
	if err != nil {
		t.Fatal(err)
	}
	s := hh.Streams[0].ID
	declarePurposes(t, c, ten.ID, "monitoring", "marketing")
	daily, dailyID := tokenClient(t, c, ten.ID, "daily analyst", access.RoleAnalyst)
	monthly, monthlyID := tokenClient(t, c, ten.ID, "monthly analyst", access.RoleAnalyst)
	expired, expiredID := tokenClient(t, c, ten.ID, "expired analyst", access.RoleAnalyst)

	// No grant: nothing, not even the platform operator's own token.
	wantReads(t, "platform token without grant", c, ten.ID, s, "")
	wantReads(t, "analyst without grant", daily, ten.ID, s, "")

	g, err := c.Grant(ctx, ten.ID, api.GrantIn{Principal: dailyID, Resource: "site:" + string(hh.Site.ID), Finest: "1d", Purposes: []string{"monitoring"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Grant(ctx, ten.ID, api.GrantIn{Principal: monthlyID, Resource: "tenant:" + string(ten.ID), Finest: "1mo", Purposes: []string{"monitoring"}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := c.Grant(ctx, ten.ID, api.GrantIn{Principal: expiredID, Resource: "tenant:" + string(ten.ID), Finest: "raw", Purposes: []string{"monitoring"},
		NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	wantReads(t, "daily", daily, ten.ID, s, "1d", "1d", "1mo")
	wantReads(t, "monthly", monthly, ten.ID, s, "1mo", "1mo")
	wantReads(t, "expired", expired, ten.ID, s, "")

	// Another purpose than granted: nothing.
	daily.Purpose = "marketing"
	wantReads(t, "daily for marketing", daily, ten.ID, s, "")
	daily.Purpose = client.DefaultPurpose

	// explain names the grant that decided, and why raw is refused.
	x, err := c.Explain(ctx, ten.ID, dailyID, s, "raw", "monitoring")
	if err != nil {
		t.Fatal(err)
	}
	if x.Allowed || x.Finest != "1d" || !strings.Contains(x.Text, g.ID) {
		t.Errorf("explain raw for the daily analyst: %+v", x)
	}

	// Revocation: the very next request is refused.
	if err := c.RevokeGrant(ctx, ten.ID, g.ID); err != nil {
		t.Fatal(err)
	}
	wantReads(t, "daily after revocation", daily, ten.ID, s, "")

	// A tenant token stays in its tenant: another tenant's stream and
	// registry are refused, whatever the IDs.
	other, err := c.CreateTenant(ctx, "Other Coop")
	if err != nil {
		t.Fatal(err)
	}
	ho, err := c.AddHousehold(ctx, other.ID, "house-o", "Member O")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := readAt(t, monthly, other.ID, ho.Streams[0].ID, "1mo"); st != 403 {
		t.Errorf("cross-tenant read: status %d, want 403", st)
	}
	if st, _ := readAt(t, monthly, ten.ID, ho.Streams[0].ID, "1mo"); st != 404 {
		t.Errorf("another tenant's stream under the token's tenant: status %d, want 404", st)
	}
	if _, err := monthly.Subjects(ctx, ten.ID); err == nil || !strings.Contains(err.Error(), "registry is visible to") {
		t.Errorf("an analyst lists subjects: %v, want refused", err)
	}
	if _, err := monthly.CreateTenant(ctx, "Sneaky"); err == nil {
		t.Error("a tenant token created a tenant")
	}
	if _, err := monthly.Grant(ctx, ten.ID, api.GrantIn{Principal: monthlyID, Resource: "tenant:" + string(ten.ID), Finest: "raw", Purposes: []string{"monitoring"}}); err == nil {
		t.Error("an analyst granted itself raw access")
	}
	_ = h
}

// TestRevocationOnEveryReplica: a grant revoked through one replica is
// enforced by another on its very next request.
func TestRevocationOnEveryReplica(t *testing.T) {
	_, cs := startReplicas(t, 2)
	ctx := context.Background()
	ten, err := cs[0].CreateTenant(ctx, "Replica Coop")
	if err != nil {
		t.Fatal(err)
	}
	hh, err := cs[0].AddHousehold(ctx, ten.ID, "house-r", "Member R")
	if err != nil {
		t.Fatal(err)
	}
	s := hh.Streams[0].ID
	for round := range 3 {
		g, err := cs[0].GrantSelf(ctx, ten.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st, msg := readAt(t, cs[1], ten.ID, s, "raw"); st != 200 {
			t.Fatalf("round %d: replica 1 refuses a read granted through replica 0: %d %s", round, st, msg)
		}
		if err := cs[0].RevokeGrant(ctx, ten.ID, g.ID); err != nil {
			t.Fatal(err)
		}
		if st, _ := readAt(t, cs[1], ten.ID, s, "raw"); st != 403 {
			t.Fatalf("round %d: replica 1 still allows a read revoked through replica 0: %d", round, st)
		}
	}
}

// TestWithdrawalStopsReads: a read for a consent-based purpose needs the
// grant and the subject's consent in force; withdrawing consent refuses
// the very next read. (Restrictions and objections: consent gate tests.)
func TestWithdrawalStopsReads(t *testing.T) {
	_, c := startHub(t, hub.Config{})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Consent Coop")
	if err != nil {
		t.Fatal(err)
	}
	hh, err := c.AddHousehold(ctx, ten.ID, "house-c", "Member C")
	if err != nil {
		t.Fatal(err)
	}
	tp := "/v1/tenants/" + string(ten.ID)
	definePurposes(t, c, ten.ID, monitoringByConsent)
	analyst, analystID := tokenClient(t, c, ten.ID, "analyst", access.RoleAnalyst)
	if _, err := c.Grant(ctx, ten.ID, api.GrantIn{Principal: analystID, Resource: "tenant:" + string(ten.ID), Finest: "raw", Purposes: []string{"monitoring"}}); err != nil {
		t.Fatal(err)
	}
	s := hh.Streams[0].ID
	if st, msg := readAt(t, analyst, ten.ID, s, "raw"); st != 403 || !strings.Contains(msg, "no consent") {
		t.Errorf("before consent: %d %q, want 403 naming the missing consent", st, msg)
	}
	sp := tp + "/subjects/" + string(hh.Subject.ID)
	giveConsent(t, c, ten.ID, hh.Subject.ID, "monitoring")
	if st, msg := readAt(t, analyst, ten.ID, s, "raw"); st != 200 {
		t.Fatalf("with consent: %d %q", st, msg)
	}
	if err := c.Do(ctx, "POST", sp+"/consents/monitoring/withdraw", map[string]any{"method": "app"}, nil); err != nil {
		t.Fatal(err)
	}
	if st, msg := readAt(t, analyst, ten.ID, s, "raw"); st != 403 || !strings.Contains(msg, "withdrawn") {
		t.Errorf("the next read after withdrawal: %d %q, want 403 naming the withdrawal", st, msg)
	}
}

// TestSubjectEraseReachesEveryStore: `custos subject erase` (the erase
// route) runs the whole data map, not only the key and the registry: the
// subject's consents and the grants on their data go too.
func TestSubjectEraseReachesEveryStore(t *testing.T) {
	h, c := startHub(t, hub.Config{})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Erase Coop")
	if err != nil {
		t.Fatal(err)
	}
	hh, err := c.AddHousehold(ctx, ten.ID, "house-e", "Member E")
	if err != nil {
		t.Fatal(err)
	}
	tp := "/v1/tenants/" + string(ten.ID)
	definePurposes(t, c, ten.ID, monitoringByConsent)
	giveConsent(t, c, ten.ID, hh.Subject.ID, "monitoring")
	if _, err := c.Grant(ctx, ten.ID, api.GrantIn{Principal: "usr_someone", Resource: "subject:" + string(hh.Subject.ID), Finest: "1d", Purposes: []string{"monitoring"}}); err != nil {
		t.Fatal(err)
	}
	var out struct {
		Subject registry.SubjectID `json:"subject"`
		Stores  []struct {
			Store string `json:"store"`
		} `json:"stores"`
	}
	if err := c.Do(ctx, "POST", tp+"/subjects/"+string(hh.Subject.ID)+"/erase", nil, &out); err != nil {
		t.Fatal(err)
	}
	if out.Subject != hh.Subject.ID || len(out.Stores) < 5 {
		t.Errorf("erasure evidence: %+v, want every store of the data map", out)
	}
	if rs, err := h.Store.ConsentHistory(ctx, ten.ID, hh.Subject.ID); err != nil || len(rs) != 0 {
		t.Errorf("consents left after erasure: %v %v", rs, err)
	}
	gs, err := c.Grants(ctx, ten.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.Resource == "subject:"+string(hh.Subject.ID) {
			t.Errorf("grant on the erased subject left: %+v", g)
		}
	}
}

// TestWithdrawalWithErase: a member withdraws consent to real-time
// monitoring and asks for the data collected under it to be erased. Billing
// (a contract) still needs 15-minute values: the raw readings and nothing
// else go; the 15-minute and coarser aggregates stay, unchanged.
func TestWithdrawalWithErase(t *testing.T) {
	h, c := startHub(t, hub.Config{})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Erase On Withdrawal Coop")
	if err != nil {
		t.Fatal(err)
	}
	tp := "/v1/tenants/" + string(ten.ID)
	definePurposes(t, c, ten.ID, monitoringByConsent, billingByContract)
	if _, err := c.GrantSelf(ctx, ten.ID, "billing"); err != nil {
		t.Fatal(err)
	}
	c.Purpose = "billing"
	m := addMember(t, h, c, ten.ID, "house-w", registry.Profile{Name: "Member W"})
	sp := tp + "/subjects/" + string(m.hh.Subject.ID)
	giveConsent(t, c, ten.ID, m.hh.Subject.ID, "monitoring")
	var rs []wire.Reading
	for i := range 3600 {
		rs = append(rs, wire.Reading{Time: t0.UnixMilli() + int64(i)*1000, Value: float64(i % 100)})
	}
	m.post(t, h, 0, rs)
	if err := h.Compactor.Once(ctx); err != nil {
		t.Fatal(err)
	}
	s := m.hh.Streams[0].ID
	aggsBefore, err := c.Aggregates(ctx, ten.ID, s, "15m", t0.UnixMilli(), t0.UnixMilli()+3600_000)
	if err != nil || len(aggsBefore.Buckets) != 4 {
		t.Fatalf("15-minute aggregates before: %+v %v", aggsBefore, err)
	}
	var ans api.ConsentAnswer
	if err := c.Do(ctx, "POST", sp+"/consents/monitoring/withdraw", map[string]any{"method": "app", "erase": true}, &ans); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range ans.Erased {
		if e.Stream == s {
			found = e.Kept == rollup.Min15 && e.Rows > 0
		}
	}
	if !found {
		t.Errorf("erasure evidence %+v: want stream %s erased finer than 15m", ans.Erased, s)
	}
	if raw, err := c.AllReadings(ctx, ten.ID, s, 0, 1<<50); err != nil || len(raw) != 0 {
		t.Errorf("raw readings after the erasure: %d, %v", len(raw), err)
	}
	aggsAfter, err := c.Aggregates(ctx, ten.ID, s, "15m", t0.UnixMilli(), t0.UnixMilli()+3600_000)
	if err != nil || len(aggsAfter.Buckets) != 4 {
		t.Fatalf("15-minute aggregates after: %+v %v", aggsAfter, err)
	}
	for i := range aggsAfter.Buckets {
		if aggsAfter.Buckets[i] != aggsBefore.Buckets[i] {
			t.Errorf("15-minute bucket %d changed: %+v, was %+v", i, aggsAfter.Buckets[i], aggsBefore.Buckets[i])
		}
	}
}
