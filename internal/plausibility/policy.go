package plausibility

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Policy is a tenant's plausibility policy as operators set it: the site
// facts the rules need and which rules run. Its zero value is the hub's
// default (DefaultPolicy). It is stored as JSON.
type Policy struct {
	// Disabled turns the checks off for the tenant: every reading is
	// stored as received.
	Disabled bool `json:"disabled,omitempty"`
	// MaxPowerW is the connection limit of the tenant's sites in W; 0 uses
	// the rules' default (43,470 W, 3 × 63 A at 230 V).
	MaxPowerW float64 `json:"max_power_w,omitempty"`
	// NetMetered says the tenant's sites may export: power streams may be
	// negative.
	NetMetered bool `json:"net_metered,omitempty"`
	// MaxAge is how far in the past a reading may lie when it arrives, as
	// a Go duration ("2160h"). Empty means DefaultMaxAge, which is
	// generous on purpose: a spooling agent or a meter's own history may
	// be backfilled long after the fact.
	MaxAge Duration `json:"max_age,omitzero"`
	// Skew is how far in the future a reading may lie ("2m"). Empty means
	// the rules' default of 2 minutes.
	Skew Duration `json:"skew,omitzero"`
	// Lat and Lon (degrees), when Located, place the tenant's sites for
	// the production-at-night rule and the solar-time baseline.
	Located bool    `json:"located,omitempty"`
	Lat     float64 `json:"lat,omitempty"`
	Lon     float64 `json:"lon,omitempty"`
	// Off lists rules switched off by name (see Rule.String), e.g.
	// ["frozen", "baseline"].
	Off []Rule `json:"off,omitempty"`
}

// DefaultMaxAge is the past window of a tenant that sets none: ten years.
// Tenants that never backfill history should tighten it.
const DefaultMaxAge = 10 * 365 * 24 * time.Hour

// Duration is a time.Duration written as a Go duration string in JSON.
type Duration time.Duration

// MarshalText writes the duration as "90h0m0s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("plausibility: %q is not a duration such as 2160h or 2m", b)
	}
	*d = Duration(v)
	return nil
}

// Check reports why p cannot be used, if it cannot.
func (p *Policy) Check() error {
	switch {
	case p.MaxPowerW < 0 || math.IsNaN(p.MaxPowerW) || math.IsInf(p.MaxPowerW, 0):
		return fmt.Errorf("plausibility policy: max_power_w must be a positive number of watts or 0 for the default")
	case p.MaxAge < 0 || p.Skew < 0:
		return fmt.Errorf("plausibility policy: max_age and skew must not be negative")
	case p.Located && (p.Lat < -90 || p.Lat > 90 || p.Lon < -180 || p.Lon > 180):
		return fmt.Errorf("plausibility policy: lat must be in [-90, 90] and lon in [-180, 180]")
	}
	for _, r := range p.Off {
		if r == 0 || int(r) >= len(ruleNames) {
			return fmt.Errorf("plausibility policy: unknown rule in off")
		}
	}
	_, err := p.Rules()
	return err
}

// IsOff reports whether rule r is switched off.
func (p *Policy) IsOff(r Rule) bool {
	for _, o := range p.Off {
		if o == r {
			return true
		}
	}
	return false
}

// Rules returns the detector rules of the policy: DefaultRules with the
// policy's windows and with the rules it switches off disabled where the
// rules have a switch. Rules without one (duplicate, out_of_order,
// counter_backwards, negative, production_at_night, balance, config,
// meter_identity) are switched off by the caller dropping those reasons
// (see Filter).
func (p *Policy) Rules() (Rules, error) {
	r := DefaultRules()
	r.MaxAge = DefaultMaxAge
	if p.MaxAge > 0 {
		r.MaxAge = time.Duration(p.MaxAge)
	}
	if p.Skew > 0 {
		r.Skew = time.Duration(p.Skew)
	}
	if p.MaxPowerW > 0 {
		r.MaxPowerW = p.MaxPowerW
	}
	kinds := []*KindRules{&r.Power, &r.SwitchedPower, &r.Energy, &r.Temperature}
	for _, o := range p.Off {
		switch o {
		case RuleTooOld:
			r.MaxAge = math.MaxInt64
		case RuleFuture:
			r.Skew = math.MaxInt64 / 4
		case RuleClockJump:
			r.ClockJump = 0
		}
		for _, k := range kinds {
			switch o {
			case RuleLimit:
				k.Min, k.Max = math.Inf(-1), math.Inf(1)
			case RuleRate:
				k.MaxRate = 0
			case RuleFrozen:
				k.FrozenSamples, k.FrozenSpan = 0, 0
			case RuleGap:
				k.MaxGap = 0
			case RuleReplay:
				k.ReplayWindow = 0
			case RuleBaseline:
				k.Baseline.Z = 0
			case RuleLevelShift:
				k.Baseline.CusumH = 0
			}
		}
	}
	return r, r.Check()
}

// Site returns the site facts the policy gives.
func (p *Policy) Site() Site {
	return Site{MaxPowerW: p.MaxPowerW, NetMetered: p.NetMetered, HasLocation: p.Located, Lat: p.Lat, Lon: p.Lon}
}

// Filter drops from vs the reasons of rules the policy switches off and
// the verdicts left without a reason, in place, and returns what is left.
func (p *Policy) Filter(vs []Verdict) []Verdict {
	if len(p.Off) == 0 {
		return vs
	}
	out := vs[:0]
	for _, v := range vs {
		rs := v.Reasons[:0]
		for _, r := range v.Reasons {
			if !p.IsOff(r.Rule) {
				rs = append(rs, r)
			}
		}
		if len(rs) > 0 {
			v.Reasons = rs
			out = append(out, v)
		}
	}
	return out
}

// ParsePolicy decodes and checks a stored policy; empty input is the
// default policy.
func ParsePolicy(b []byte) (Policy, error) {
	var p Policy
	if len(b) == 0 {
		return p, nil
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return Policy{}, fmt.Errorf("plausibility policy: %w", err)
	}
	return p, p.Check()
}
