package access

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// benchWorld loads 100,000 grants: 10 tenants × 2,000 principals × 5
// grants (stream, device, site, subject, group) plus a few role grants,
// and returns the Decider and requests that hit a principal's grants at
// every level, with resolutions and purposes both allowed and denied.
func benchWorld(b *testing.B) (*Decider, []Request) {
	const tenants, principals, perPrincipal = 10, 2000, 5
	r := rand.New(rand.NewPCG(1, 2))
	var grants []Grant
	var reqs []Request
	res := []rollup.Resolution{rollup.Raw, rollup.Min15, rollup.Hour, rollup.Day, rollup.Month}
	for ti := range tenants {
		t := registry.TenantID(fmt.Sprintf("ten_%02d", ti))
		for _, role := range []Role{RoleAnalyst, RoleOperator} {
			grants = append(grants, Grant{ID: "grt_" + string(role), Tenant: t, Role: role,
				Resource: TenantResource(t), Finest: rollup.Month, Purposes: []Purpose{"research"}})
		}
		for pi := range principals {
			p := PrincipalID(fmt.Sprintf("usr_%05d", pi))
			sub := fmt.Sprintf("sub_%05d", pi)
			path := Path{Subject: registry.SubjectID(sub), Site: registry.SiteID(sub + "_site"),
				Device: registry.DeviceID(sub + "_dev"), Stream: registry.StreamID(sub + "_str"),
				Groups: []GroupID{GroupID(fmt.Sprintf("grp_%03d", pi%100))}}
			levels := []Resource{StreamResource(path.Stream), DeviceResource(path.Device), SiteResource(path.Site),
				SubjectResource(path.Subject), GroupResource(path.Groups[0])}
			for gi := range perPrincipal {
				g := Grant{ID: fmt.Sprintf("grt_%05d_%d", pi, gi), Tenant: t, Principal: p, Resource: levels[gi],
					Finest: res[r.IntN(len(res))], Purposes: []Purpose{"monitoring", "billing"}[:1+r.IntN(2)],
					NotBefore: t0.Add(-time.Hour)}
				if gi%2 == 0 {
					g.NotAfter = t0.Add(24 * time.Hour)
				}
				grants = append(grants, g)
			}
			if pi%20 == 0 {
				reqs = append(reqs, Request{Tenant: t, Principal: p, Roles: []Role{RoleAnalyst, RoleMember},
					MemberOf: "sub_other", Resource: path, Resolution: res[r.IntN(len(res))],
					Purpose: []Purpose{"monitoring", "billing", "research"}[r.IntN(3)], Now: t0})
			}
		}
	}
	d := NewDecider()
	if err := d.Replace(grants); err != nil {
		b.Fatal(err)
	}
	if d.Len() < 100_000 {
		b.Fatalf("only %d grants", d.Len())
	}
	r.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
	return d, reqs
}

// reportP99 reports the median and 99th percentile of the per-op wall
// durations, and of the per-op CPU time of the thread, in µs. On a shared
// machine the wall figures include time other processes held the core.
func reportP99(b *testing.B, wall, cpu []time.Duration) {
	report := func(ds []time.Duration, unit string) {
		if len(ds) == 0 {
			return
		}
		slices.Sort(ds)
		b.ReportMetric(float64(ds[len(ds)/2].Nanoseconds())/1000, "p50"+unit)
		b.ReportMetric(float64(ds[(len(ds)*99)/100].Nanoseconds())/1000, "p99"+unit)
	}
	report(wall, "-µs")
	report(cpu, "-cpu-µs")
}

func BenchmarkDecide(b *testing.B) {
	d, reqs := benchWorld(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	wall := make([]time.Duration, 0, b.N)
	cpu := make([]time.Duration, 0, b.N)
	allowed := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c0, start := threadCPU(), time.Now()
		dec, err := d.Decide(reqs[i%len(reqs)])
		wall, cpu = append(wall, time.Since(start)), append(cpu, threadCPU()-c0)
		if err != nil {
			b.Fatal(err)
		}
		if dec.Allow {
			allowed++
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(allowed)/float64(len(wall)), "allowed/op")
	reportP99(b, wall, cpu)
}

func BenchmarkDecideParallel(b *testing.B) {
	d, reqs := benchWorld(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(len(reqs))
		for pb.Next() {
			if _, err := d.Decide(reqs[i%len(reqs)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

func BenchmarkExplain(b *testing.B) {
	d, reqs := benchWorld(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	wall := make([]time.Duration, 0, b.N)
	cpu := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c0, start := threadCPU(), time.Now()
		x := d.Explain(reqs[i%len(reqs)])
		wall, cpu = append(wall, time.Since(start)), append(cpu, threadCPU()-c0)
		if x.Err != nil {
			b.Fatal(x.Err)
		}
	}
	b.StopTimer()
	reportP99(b, wall, cpu)
}

// BenchmarkAddRevoke measures adding one grant to a Decider holding 100,000,
// then revoking it.
func BenchmarkAddRevoke(b *testing.B) {
	d, _ := benchWorld(b)
	g := Grant{ID: "grt_bench", Tenant: "ten_00", Principal: "usr_00001", Resource: StreamResource("s"),
		Finest: rollup.Day, Purposes: []Purpose{"monitoring"}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := d.Add(g); err != nil {
			b.Fatal(err)
		}
		if err := d.Revoke(g.Tenant, g.ID); err != nil {
			b.Fatal(err)
		}
	}
}
