package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// AuthzResult is the outcome of Authz.
type AuthzResult struct {
	// Grants is how many grants the decider held; HeapMB the live heap
	// with them loaded (after a GC), GCPercent the GOGC in effect.
	Grants    int     `json:"grants"`
	HeapMB    float64 `json:"heap_mb"`
	GCPercent int     `json:"gc_percent"`
	// P50/P99DecisionUS: in-process decisions with Grants loaded, µs.
	P50DecisionUS float64 `json:"p50_decision_us"`
	P99DecisionUS float64 `json:"p99_decision_us"`
	// ReadOverheadRatio: median latency of an API read of a day of
	// 15-minute aggregates with authorization (and Grants grants in the
	// hub's store) over the same read on a hub without it, same run.
	ReadOverheadRatio  float64 `json:"read_overhead_ratio"`
	ReadAuthorizedMS   float64 `json:"read_authorized_p50_ms"`
	ReadUnauthorizedMS float64 `json:"read_unauthorized_p50_ms"`
}

// grantWorld makes n grants spread over 10 tenants: principals with five
// grants each at stream, device, site, subject and group level, random
// finest resolutions and purposes, half with a validity window; and
// requests that hit those principals' grants, allowed and denied.
func grantWorld(n int, now time.Time) ([]access.Grant, []access.Request) {
	const tenants, perPrincipal = 10, 5
	principals := n / tenants / perPrincipal
	r := rand.New(rand.NewPCG(1, 2))
	res := []rollup.Resolution{rollup.Raw, rollup.Min15, rollup.Hour, rollup.Day, rollup.Month}
	var grants []access.Grant
	var reqs []access.Request
	for ti := range tenants {
		t := registry.TenantID(fmt.Sprintf("ten_%02d", ti))
		for pi := range principals {
			p := access.PrincipalID(fmt.Sprintf("usr_%06d", pi))
			sub := fmt.Sprintf("sub_%06d", pi)
			path := access.Path{Subject: registry.SubjectID(sub), Site: registry.SiteID(sub + "_site"),
				Device: registry.DeviceID(sub + "_dev"), Stream: registry.StreamID(sub + "_str"),
				Groups: []access.GroupID{access.GroupID(fmt.Sprintf("grp_%03d", pi%100))}}
			levels := []access.Resource{access.StreamResource(path.Stream), access.DeviceResource(path.Device),
				access.SiteResource(path.Site), access.SubjectResource(path.Subject), access.GroupResource(path.Groups[0])}
			for gi := range perPrincipal {
				g := access.Grant{ID: fmt.Sprintf("grt_%02d_%06d_%d", ti, pi, gi), Tenant: t, Principal: p, Resource: levels[gi],
					Finest: res[r.IntN(len(res))], Purposes: []access.Purpose{"monitoring", "billing"}[:1+r.IntN(2)],
					NotBefore: now.Add(-time.Hour)}
				if gi%2 == 0 {
					g.NotAfter = now.Add(24 * time.Hour)
				}
				grants = append(grants, g)
			}
			if pi%10 == 0 {
				reqs = append(reqs, access.Request{Tenant: t, Principal: p, Roles: []access.Role{access.RoleAnalyst},
					Resource: path, Resolution: res[r.IntN(len(res))],
					Purpose: []access.Purpose{"monitoring", "billing", "research"}[r.IntN(3)], Now: now})
			}
		}
	}
	return grants, reqs
}

// Authz measures the access decision: its latency in process with 100,000
// grants, and what it adds to an API read (two hubs side by side, one
// deciding and one not, alternating requests).
func Authz(ctx context.Context, dir string, progress io.Writer) (AuthzResult, error) {
	var res AuthzResult
	if dir == "" {
		t, err := os.MkdirTemp("", "custos-bench-authz-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(t)
		dir = t
	}
	now := time.Now()
	grants, reqs := grantWorld(100_000, now)
	fmt.Fprintf(progress, "loading %d grants...\n", len(grants))
	d := access.NewDecider()
	if err := d.Replace(grants); err != nil {
		return res, err
	}
	res.Grants = d.Len()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapMB = float64(ms.HeapAlloc) / (1 << 20)
	res.GCPercent = debug.SetGCPercent(-1)
	debug.SetGCPercent(res.GCPercent)
	fmt.Fprintf(progress, "timing %d decisions...\n", 10*len(reqs))
	var ds []time.Duration
	for range 10 {
		for _, q := range reqs {
			t := time.Now()
			if _, err := d.Decide(q); err != nil {
				return res, err
			}
			ds = append(ds, time.Since(t))
		}
	}
	res.P50DecisionUS = percentile(ds, 0.50) * 1000
	res.P99DecisionUS = percentile(ds, 0.99) * 1000

	fmt.Fprintf(progress, "timing reads with and without authorization...\n")
	on, err := newReadBedWith(ctx, filepath.Join(dir, "authorized"), nil)
	if err != nil {
		return res, err
	}
	defer on.stop()
	off, err := newReadBedWith(ctx, filepath.Join(dir, "unauthorized"), func(c *hub.Config) { c.AuthzOff = true })
	if err != nil {
		return res, err
	}
	defer off.stop()
	// The deciding hub holds the 100,000 grants in the tenant it serves.
	mine := make([]access.Grant, 0, len(grants))
	for _, g := range grants {
		g.Tenant = on.ten
		if g.Resource.Kind == access.KindTenant {
			g.Resource.ID = string(on.ten)
		}
		mine = append(mine, g)
	}
	if err := on.h.Store.AddGrants(ctx, on.ten, mine, now); err != nil {
		return res, err
	}
	var a, u []time.Duration
	for i := range 600 {
		first, second := on, off
		if i%2 == 1 {
			first, second = off, on
		}
		d1, err := first.read(ctx, false)
		if err != nil {
			return res, err
		}
		d2, err := second.read(ctx, false)
		if err != nil {
			return res, err
		}
		if first == on {
			a, u = append(a, d1), append(u, d2)
		} else {
			u, a = append(u, d1), append(a, d2)
		}
	}
	res.ReadAuthorizedMS = percentile(a, 0.5)
	res.ReadUnauthorizedMS = percentile(u, 0.5)
	if res.ReadUnauthorizedMS > 0 {
		res.ReadOverheadRatio = res.ReadAuthorizedMS / res.ReadUnauthorizedMS
	}
	return res, nil
}
