package plausibility

import (
	"fmt"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/wire"
)

// Role is what a power stream means for a site's energy balance.
type Role uint8

// The roles.
const (
	RoleImport     Role = iota + 1 // power drawn from the grid, W ≥ 0
	RoleExport                     // power fed into the grid, W ≥ 0
	RoleProduction                 // local generation (PV), W ≥ 0
	RoleLoad                       // a sub-metered load (heat pump, EV charger), W ≥ 0
)

// SiteSeries is one power stream of a site within one batch.
type SiteSeries struct {
	Role     Role
	Readings []wire.Reading
}

// SiteVerdict flags reading Verdict.Index of series Series.
type SiteVerdict struct {
	Series int
	Verdict
}

// CheckSite checks the power streams of one site that arrived in one batch
// for consistency: at each time carried by an import series, import −
// export + production (the site's consumption) must not fall below zero,
// nor below the sum of the sub-metered loads, by more than the tolerance.
// Only times present in every series are judged; the series' readings must
// be in time order. It blames the series most likely to be false — export
// when consumption would be negative, import when it would be below the
// sub-metered loads — and keeps no state. For a consistent site it does
// not allocate.
func (d *Detector) CheckSite(tenant registry.TenantID, ss []SiteSeries) []SiteVerdict {
	d.mu.RLock()
	r, ok := d.tenants[tenant]
	if !ok {
		r = d.rules
	}
	d.mu.RUnlock()
	imp, exp := -1, -1
	for i := range ss {
		switch ss[i].Role {
		case RoleImport:
			imp = i
		case RoleExport:
			exp = i
		}
	}
	if imp < 0 {
		return nil
	}
	var pos [16]int // cursor per series; sites with more series are checked on their first 16
	n := min(len(ss), len(pos))
	var out []SiteVerdict
	for k, ri := range ss[imp].Readings {
		t := ri.Time
		var total, sub, mag float64
		complete := true
		for i := 0; i < n && complete; i++ {
			rs := ss[i].Readings
			j := pos[i]
			for j < len(rs) && rs[j].Time < t {
				j++
			}
			pos[i] = j
			if j == len(rs) || rs[j].Time != t {
				complete = false
				break
			}
			v := rs[j].Value
			switch ss[i].Role {
			case RoleImport, RoleProduction:
				total += v
			case RoleExport:
				total -= v
			case RoleLoad:
				sub += v
			}
			if v < 0 {
				mag -= v
			} else {
				mag += v
			}
		}
		if !complete {
			continue
		}
		tol := r.BalanceTolW + r.BalanceTolRel*mag
		switch {
		case total < -tol:
			blame := imp
			if exp >= 0 {
				blame = exp
			}
			out = append(out, SiteVerdict{blame, Verdict{pos[blame], []Reason{{RuleBalance,
				fmt.Sprintf("export exceeds import plus production by more than %g W + %g%%", r.BalanceTolW, 100*r.BalanceTolRel)}}}})
		case total < sub-tol:
			out = append(out, SiteVerdict{imp, Verdict{k, []Reason{{RuleBalance,
				fmt.Sprintf("consumption below the sub-metered loads by more than %g W + %g%%", r.BalanceTolW, 100*r.BalanceTolRel)}}}})
		}
	}
	return out
}
