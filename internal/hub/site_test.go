package hub_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/uplink"
	"github.com/custos-iot/custos/internal/wire"
)

// roleSite is a site whose power streams have roles, served by one
// connector per device (so its streams arrive in separate batches from
// separate connectors).
type roleSite struct {
	streams map[registry.Role]registry.Stream
	members map[registry.Role]member // the connector serving each role's device
}

// addRoleSite provisions a subject with a site and one device, connector
// and stream per role.
func addRoleSite(t *testing.T, h *hub.Hub, c *client.Client, ten registry.TenantID, house string, roles ...registry.Role) roleSite {
	t.Helper()
	ctx := context.Background()
	sub, err := c.CreateSubject(ctx, ten, "Member "+house)
	if err != nil {
		t.Fatal(err)
	}
	site, err := c.CreateSite(ctx, ten, sub.ID, house)
	if err != nil {
		t.Fatal(err)
	}
	rs := roleSite{streams: map[registry.Role]registry.Stream{}, members: map[registry.Role]member{}}
	for _, role := range roles {
		name := house + "-" + string(role)
		offer, err := c.CreateConnector(ctx, ten, name+"-gw")
		if err != nil {
			t.Fatal(err)
		}
		dev, err := c.CreateDevice(ctx, ten, site.ID, offer.Connector.ID, name)
		if err != nil {
			t.Fatal(err)
		}
		cat := registry.Category("energy.consumption")
		switch role {
		case registry.RoleProduction:
			cat = "energy.production"
		case registry.RoleLoad:
			cat = "energy.heating"
		}
		st, err := c.CreateRoleStream(ctx, ten, dev.ID, "power_w", cat, role)
		if err != nil {
			t.Fatal(err)
		}
		if st.Role != role || st.Site != site.ID {
			t.Fatalf("stream: %+v", st)
		}
		creds, err := uplink.Enrol(ctx, t.TempDir(), h.APIURL(), offer.Token, nil)
		if err != nil {
			t.Fatal(err)
		}
		rs.streams[role] = st
		rs.members[role] = member{hh: client.Household{Subject: sub, Site: site, Connector: offer.Connector, Streams: []registry.Stream{st}}, device: deviceClient(t, creds.TLSConfig(""))}
	}
	return rs
}

// post sends a role's readings in their own batch, through the role's own
// connector; the per-stream checks must pass them all.
func (s roleSite) post(t *testing.T, h *hub.Hub, role registry.Role, rs []wire.Reading) {
	t.Helper()
	if res := s.members[role].postBatch(t, h, batchOf(s.streams[role].Key, rs)); res.Quarantined != 0 {
		t.Fatalf("%s: %d readings quarantined at ingest, want none (the site check runs later)", role, res.Quarantined)
	}
}

// scaled returns fiveMinutes readings with each value v turned into
// f(v), so that the streams of a site are distinct yet related.
func scaled(start time.Time, n int, f func(float64) float64) []wire.Reading {
	rs := fiveMinutes(start, n)
	for i := range rs {
		rs[i].Value = f(rs[i].Value)
	}
	return rs
}

// siteQuarantine returns the quarantined readings of a stream, by time,
// with their rules.
func siteQuarantine(t *testing.T, c *client.Client, ten registry.TenantID, st registry.StreamID) map[int64][]plausibility.Rule {
	t.Helper()
	page, err := c.Quarantine(context.Background(), ten, st, client.DefaultPurpose, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64][]plausibility.Rule{}
	for _, e := range page.Entries {
		for _, r := range e.Readings {
			for _, why := range r.Reasons {
				out[r.Time] = append(out[r.Time], why.Rule)
			}
		}
	}
	return out
}

// TestSiteBalance: the site balance check at ingest. A site's import,
// export, production and sub-metered load arrive in separate batches from
// separate connectors; before the compactor folds them, the check judges
// them together and quarantines what does not balance, in the move's
// transaction: out of reads, never in rollups, nothing lost.
func TestSiteBalance(t *testing.T) { eachBackend(t, testSiteBalance) }

func testSiteBalance(t *testing.T, cfg hub.Config) {
	cfg.SiteGrace = time.Millisecond // every hold has passed by the next compaction
	h, c := startHub(t, cfg)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Site Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	// compact folds everything landed: the holds are 1 ms, so it passes
	// until none is left (a block landed within the last millisecond
	// waits for the next pass).
	compact := func(t *testing.T) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if err := h.Compactor.Once(ctx); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := sqlOf(h).QueryRow(`SELECT COUNT(*) FROM landing`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d landed blocks not folded", n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	imp := func(v float64) float64 { return v }        // 400–500 W
	exp := func(v float64) float64 { return v / 2 }    // 200–250 W
	pv := func(v float64) float64 { return v + 10 }    // 410–510 W
	load := func(v float64) float64 { return v - 300 } // 100–200 W: consumption ≈ 650 W covers it
	day := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)

	t.Run("fake export across connectors", func(t *testing.T) {
		s := addRoleSite(t, h, c, ten.ID, "sb-a", registry.RoleImport, registry.RoleExport, registry.RoleProduction, registry.RoleLoad)
		e := scaled(day, 12, exp)
		e[5].Value = 1500 // exported more than import plus production: faked delivery
		s.post(t, h, registry.RoleExport, e)
		s.post(t, h, registry.RoleProduction, scaled(day, 12, pv))
		s.post(t, h, registry.RoleLoad, scaled(day, 12, load))
		// Until the check ran, nothing of the site reached the rollups.
		s.post(t, h, registry.RoleImport, scaled(day, 12, imp))
		compact(t)
		q := siteQuarantine(t, c, ten.ID, s.streams[registry.RoleExport].ID)
		if len(q) != 1 || len(q[e[5].Time]) == 0 || q[e[5].Time][0] != plausibility.RuleBalance {
			t.Fatalf("export quarantine: %v, want the faked reading for balance", q)
		}
		for _, role := range []registry.Role{registry.RoleImport, registry.RoleProduction, registry.RoleLoad} {
			if q := siteQuarantine(t, c, ten.ID, s.streams[role].ID); len(q) != 0 {
				t.Errorf("%s quarantined: %v", role, q)
			}
			if got := readsOf(t, c, ten.ID, s.streams[role].ID); len(got) != 12 {
				t.Errorf("%s: %d readings, want 12", role, len(got))
			}
		}
		got := readsOf(t, c, ten.ID, s.streams[registry.RoleExport].ID)
		if _, ok := got[e[5].Time]; ok || len(got) != 11 {
			t.Fatalf("export reads: %d readings, the faked one present: %v", len(got), ok)
		}
		if mx := dailyMax(t, h, c, ten.ID, s.streams[registry.RoleExport].ID); mx >= 1500 {
			t.Fatalf("the faked export reached the rollups: max %g", mx)
		}
		// Release puts it back, once: 12 readings, the rollup sees it.
		page, err := c.Quarantine(ctx, ten.ID, s.streams[registry.RoleExport].ID, client.DefaultPurpose, "", 0)
		if err != nil || len(page.Entries) != 1 {
			t.Fatalf("quarantine: %+v %v", page, err)
		}
		if _, err := c.ReleaseQuarantine(ctx, ten.ID, []int64{page.Entries[0].ID}); err != nil {
			t.Fatal(err)
		}
		if mx := dailyMax(t, h, c, ten.ID, s.streams[registry.RoleExport].ID); mx != 1500 {
			t.Fatalf("after release the rollup max is %g, want 1500", mx)
		}
		if got := readsOf(t, c, ten.ID, s.streams[registry.RoleExport].ID); len(got) != 12 {
			t.Fatalf("after release: %d readings", len(got))
		}
	})

	t.Run("late stream after folding", func(t *testing.T) {
		s := addRoleSite(t, h, c, ten.ID, "sb-late", registry.RoleImport, registry.RoleExport, registry.RoleProduction)
		s.post(t, h, registry.RoleImport, scaled(day, 12, imp))
		s.post(t, h, registry.RoleProduction, scaled(day, 12, pv))
		compact(t) // folded: export is later than the grace
		e := scaled(day, 12, exp)
		e[7].Value = 1600
		s.post(t, h, registry.RoleExport, e)
		compact(t)
		if q := siteQuarantine(t, c, ten.ID, s.streams[registry.RoleExport].ID); len(q) != 1 || len(q[e[7].Time]) == 0 {
			t.Fatalf("late export quarantine: %v", q)
		}
		// The other way round: a fake export folded before any import
		// could judge it; the import arriving late does not balance with
		// it and is held back instead, naming why.
		s2 := addRoleSite(t, h, c, ten.ID, "sb-late2", registry.RoleImport, registry.RoleExport)
		e2 := scaled(day, 6, exp)
		e2[2].Value = 1700
		s2.post(t, h, registry.RoleExport, e2)
		compact(t)
		i2 := scaled(day, 6, imp)
		s2.post(t, h, registry.RoleImport, i2)
		compact(t)
		q := siteQuarantine(t, c, ten.ID, s2.streams[registry.RoleImport].ID)
		if len(q) != 1 || len(q[i2[2].Time]) == 0 || q[i2[2].Time][0] != plausibility.RuleBalance {
			t.Fatalf("late import quarantine: %v", q)
		}
	})

	t.Run("site without PV, load above consumption", func(t *testing.T) {
		s := addRoleSite(t, h, c, ten.ID, "sb-nopv", registry.RoleImport, registry.RoleLoad)
		l := scaled(day, 12, func(v float64) float64 { return v + 300 }) // 700–800 W
		i := scaled(day, 12, func(v float64) float64 { return v + 600 }) // 1000–1100 W
		i[4].Value = 30                                                  // the grid meter claims less than the heat pump alone draws
		s.post(t, h, registry.RoleLoad, l)
		s.post(t, h, registry.RoleImport, i)
		compact(t)
		if q := siteQuarantine(t, c, ten.ID, s.streams[registry.RoleImport].ID); len(q) != 1 || len(q[i[4].Time]) == 0 {
			t.Fatalf("import quarantine: %v", q)
		}
		if q := siteQuarantine(t, c, ten.ID, s.streams[registry.RoleLoad].ID); len(q) != 0 {
			t.Fatalf("load quarantine: %v", q)
		}
	})

	t.Run("missing role", func(t *testing.T) {
		// Export is registered but silent: import and production are
		// judged without it, and balance.
		s := addRoleSite(t, h, c, ten.ID, "sb-miss", registry.RoleImport, registry.RoleExport, registry.RoleProduction)
		s.post(t, h, registry.RoleImport, scaled(day, 12, imp))
		s.post(t, h, registry.RoleProduction, scaled(day, 12, pv))
		compact(t)
		for _, role := range []registry.Role{registry.RoleImport, registry.RoleProduction} {
			if q := siteQuarantine(t, c, ten.ID, s.streams[role].ID); len(q) != 0 {
				t.Errorf("%s quarantined: %v", role, q)
			}
		}
		// A site without a grid meter has nothing to balance against.
		s2 := addRoleSite(t, h, c, ten.ID, "sb-noimp", registry.RoleExport, registry.RoleProduction)
		e := scaled(day, 6, exp)
		e[1].Value = 5000
		s2.post(t, h, registry.RoleExport, e)
		compact(t)
		if got := readsOf(t, c, ten.ID, s2.streams[registry.RoleExport].ID); len(got) != 6 {
			t.Fatalf("export without import: %d readings, want 6", len(got))
		}
	})

	t.Run("DST day", func(t *testing.T) {
		// 2026-03-29 01:00 UTC is when Central Europe skips an hour: times
		// are UTC on the wire, so the hour that does not exist locally is
		// judged like any other.
		dst := time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC)
		s := addRoleSite(t, h, c, ten.ID, "sb-dst", registry.RoleImport, registry.RoleExport, registry.RoleProduction)
		e := scaled(dst, 36, exp)
		e[12].Value = 1800 // 01:00 UTC
		s.post(t, h, registry.RoleImport, scaled(dst, 36, imp))
		s.post(t, h, registry.RoleProduction, scaled(dst, 36, pv))
		s.post(t, h, registry.RoleExport, e)
		compact(t)
		if q := siteQuarantine(t, c, ten.ID, s.streams[registry.RoleExport].ID); len(q) != 1 || len(q[e[12].Time]) == 0 {
			t.Fatalf("DST export quarantine: %v", q)
		}
	})

	t.Run("net metering", func(t *testing.T) {
		// A net-metered tenant's grid meter reads negative while the PV
		// feeds in: that balances; negative import without production
		// behind it does not.
		pol := plausibility.Policy{NetMetered: true}
		if _, err := c.SetPlausibilityPolicy(ctx, ten.ID, pol); err != nil {
			t.Fatal(err)
		}
		defer c.SetPlausibilityPolicy(ctx, ten.ID, plausibility.Policy{})
		s := addRoleSite(t, h, c, ten.ID, "sb-net", registry.RoleImport, registry.RoleProduction)
		i := scaled(day, 12, func(v float64) float64 { return -v }) // −400…−500 W: net export
		p := scaled(day, 12, func(v float64) float64 { return v + 300 })
		p[6].Value = 0 // the PV reports nothing while the meter still exports
		s.post(t, h, registry.RoleProduction, p)
		s.post(t, h, registry.RoleImport, i)
		compact(t)
		q := siteQuarantine(t, c, ten.ID, s.streams[registry.RoleImport].ID)
		if len(q) != 1 || len(q[i[6].Time]) == 0 {
			t.Fatalf("net-metered import quarantine: %v", q)
		}
	})
}

// TestSiteBalanceHold: a block of a stream with a site role waits in
// landing for its grace (readable meanwhile, not in rollups); others are
// folded at once.
func TestSiteBalanceHold(t *testing.T) {
	h, c := startHub(t, hub.Config{SiteGrace: time.Hour})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Hold Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	s := addRoleSite(t, h, c, ten.ID, "sh", registry.RoleImport)
	day := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	s.post(t, h, registry.RoleImport, fiveMinutes(day, 12))
	m := addMember(t, h, c, ten.ID, "sh-plain", registry.Profile{Name: "Plain"})
	m.postBatch(t, h, batchOf(m.hh.Streams[1].Key, fiveMinutes(day, 12)))
	if err := h.Compactor.Once(ctx); err != nil {
		t.Fatal(err)
	}
	var held, plain int
	db := sqlOf(h)
	db.QueryRow(`SELECT COUNT(*) FROM landing WHERE stream_id = ?`, s.streams[registry.RoleImport].ID).Scan(&held)
	db.QueryRow(`SELECT COUNT(*) FROM landing WHERE stream_id = ?`, m.hh.Streams[1].ID).Scan(&plain)
	if held != 1 || plain != 0 {
		t.Fatalf("landing after compaction: %d held blocks of the role stream (want 1), %d of the plain one (want 0)", held, plain)
	}
	if got := readsOf(t, c, ten.ID, s.streams[registry.RoleImport].ID); len(got) != 12 {
		t.Fatalf("held readings are readable: %d, want 12", len(got))
	}
	agg, err := c.Aggregates(ctx, ten.ID, s.streams[registry.RoleImport].ID, "1mo", 0, 1<<50)
	if b, _ := json.Marshal(agg); err != nil || len(agg.Buckets) != 0 {
		t.Fatalf("rollups of held readings: %s %v", b, err)
	}
}

// TestMeterIdentity: a device registered with its meter's serial accepts
// batches that report that meter; a batch reporting another meter for it,
// or none (an agent that predates meters), is acknowledged and
// quarantined with rule meter_identity, readable for release by an
// operator with a grant.
func TestMeterIdentity(t *testing.T) { eachBackend(t, testMeterIdentity) }

func testMeterIdentity(t *testing.T, cfg hub.Config) {
	h, c := startHub(t, cfg)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Meter Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	sub, err := c.CreateSubject(ctx, ten.ID, "Member M")
	if err != nil {
		t.Fatal(err)
	}
	site, err := c.CreateSite(ctx, ten.ID, sub.ID, "house-m")
	if err != nil {
		t.Fatal(err)
	}
	offer, err := c.CreateConnector(ctx, ten.ID, "house-m-gw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateMeterDevice(ctx, ten.ID, site.ID, offer.Connector.ID, "house-m-meter", "bad serial"); err == nil {
		t.Fatal("a serial with a space was accepted")
	}
	dev, err := c.CreateMeterDevice(ctx, ten.ID, site.ID, offer.Connector.ID, "house-m-meter", "E0044007131650217")
	if err != nil || dev.MeterSerial != "E0044007131650217" {
		t.Fatalf("device: %+v %v", dev, err)
	}
	st, err := c.CreateStream(ctx, ten.ID, dev.ID, "import_power_w", "energy.consumption", "W")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := uplink.Enrol(ctx, t.TempDir(), h.APIURL(), offer.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := member{hh: client.Household{Subject: sub, Site: site, Connector: offer.Connector, Streams: []registry.Stream{st}}, device: deviceClient(t, creds.TLSConfig(""))}
	day := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	for i, tc := range []struct {
		name        string
		meter       string
		quarantined int
	}{
		{"the bound meter", "E0044007131650217", 0},
		{"another meter", "E0044007999999999", 6},
		{"no meter reported", "", 6},
	} {
		b := batchOf(st.Key, fiveMinutes(day.Add(time.Duration(i)*time.Hour), 6))
		if tc.meter != "" {
			b.Meters = []wire.Meter{{Device: "house-m-meter", ID: tc.meter}}
		}
		if res := m.postBatch(t, h, b); res.Readings != 6 || res.Quarantined != tc.quarantined {
			t.Fatalf("%s: %+v, want %d quarantined", tc.name, res, tc.quarantined)
		}
	}
	q := siteQuarantine(t, c, ten.ID, st.ID)
	if len(q) != 12 {
		t.Fatalf("%d quarantined readings, want 12", len(q))
	}
	for tm, rules := range q {
		if len(rules) == 0 || rules[0] != plausibility.RuleMeterIdentity {
			t.Fatalf("reading at %d: rules %v", tm, rules)
		}
	}
	if got := readsOf(t, c, ten.ID, st.ID); len(got) != 6 {
		t.Fatalf("%d readings in the stream, want 6", len(got))
	}

	// The meter is replaced at 11:00: its energy counter restarts near
	// zero, and the device reports the new serial.
	counter, err := c.CreateStream(ctx, ten.ID, dev.ID, "import_energy_wh", "energy.consumption", "Wh")
	if err != nil {
		t.Fatal(err)
	}
	m.hh.Streams = append(m.hh.Streams, counter)
	count := func(hour int, from float64) []wire.Reading {
		rs := make([]wire.Reading, 6)
		for i := range rs {
			rs[i] = wire.Reading{Time: day.Add(time.Duration(hour)*time.Hour + time.Duration(i)*5*time.Minute).UnixMilli(), Value: from + 50*float64(i)}
		}
		return rs
	}
	const oldMeter, newMeter = "E0044007131650217", "E0044007000000001"
	post := func(name, meter string, rs []wire.Reading, key string, quarantined int) {
		t.Helper()
		b := batchOf(key, rs)
		b.Meters = []wire.Meter{{Device: "house-m-meter", ID: meter}}
		if res := m.postBatch(t, h, b); res.Readings != len(rs) || res.Quarantined != quarantined {
			t.Fatalf("%s: %+v, want %d quarantined", name, res, quarantined)
		}
	}
	post("counter before the replacement", oldMeter, count(10, 10_000), counter.Key, 0)
	replaced := day.Add(11 * time.Hour)
	if _, err := c.ReplaceMeter(ctx, ten.ID, dev.ID, newMeter, time.Now().Add(time.Hour)); err == nil {
		t.Fatal("a replacement in the future was recorded")
	}
	if _, err := c.ReplaceMeter(ctx, ten.ID, dev.ID, newMeter, time.Unix(0, 0)); err == nil {
		t.Fatal("a replacement at the epoch (stored as never) was recorded")
	}
	if _, err := c.ReplaceMeter(ctx, ten.ID, dev.ID, "bad serial", replaced); err == nil {
		t.Fatal("a serial with a space was accepted")
	}
	if _, err := c.ReplaceMeter(ctx, ten.ID, "dev_unknown", newMeter, replaced); err == nil {
		t.Fatal("an unknown device's meter was replaced")
	}
	got, err := c.ReplaceMeter(ctx, ten.ID, dev.ID, newMeter, replaced)
	if err != nil || got.MeterSerial != newMeter || !got.MeterReplaced.Equal(replaced) {
		t.Fatalf("replacement: %+v %v", got, err)
	}
	var ce *client.Error
	if _, err := c.ReplaceMeter(ctx, ten.ID, dev.ID, oldMeter, replaced.Add(-time.Hour)); !asClientError(err, &ce) || ce.Status != http.StatusConflict {
		t.Fatalf("a replacement before the latest: %v, want 409", err)
	}
	post("the new meter's counter from near zero", newMeter, count(11, 3), counter.Key, 0)
	if got.PreviousMeterSerial != oldMeter {
		t.Fatalf("previous serial %q, want %q", got.PreviousMeterSerial, oldMeter)
	}
	post("the old meter's late readings from before the replacement", oldMeter, fiveMinutes(day.Add(9*time.Hour), 6), st.Key, 0)
	post("the old meter after the replacement", oldMeter, fiveMinutes(day.Add(12*time.Hour), 6), st.Key, 6)
	post("the new meter", newMeter, fiveMinutes(day.Add(13*time.Hour), 6), st.Key, 0)
	if got := readsOf(t, c, ten.ID, counter.ID); len(got) != 12 {
		t.Fatalf("%d counter readings, want 12", len(got))
	}
	// Without a recorded replacement the same restart is quarantined.
	post("a counter restart without a replacement", newMeter, count(14, 1), counter.Key, 6)
}
