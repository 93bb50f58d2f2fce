package eval

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
)

// reading is a generated reading with the attack that produced it (0 for
// clean) and the true time at which the device sent it.
type reading struct {
	t, sent int64
	v       float64
	label   attack
}

// series is one stream of a household.
type series struct {
	ctx  plausibility.StreamContext
	role plausibility.Role // 0 when not part of the balance
	rs   []reading
}

type household struct {
	site   plausibility.Site
	series []series
	// replaceAt is the time of a recorded meter replacement, 0 if none.
	replaceAt int64
}

const ms5 = 5 * 60_000

// lastSunday returns the Unix day of the last Sunday of month m (1-12)
// of year y.
func lastSunday(y, m int) int64 {
	// days from civil (Howard Hinnant's algorithm) of the first of the next month, minus one.
	ny, nm := y, m+1
	if nm == 13 {
		ny, nm = y+1, 1
	}
	d := daysFromCivil(ny, nm, 1) - 1
	wd := (d + 4) % 7 // 0 Sunday
	return d - wd
}

func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era*146097 + doe - 719468)
}

func civilYear(day int64) int {
	z := day + 719468
	era := z / 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y := int(yoe + era*400)
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	if mp >= 10 { // January or February belong to the next civil year
		y++
	}
	return y
}

// localOffset is the offset of Central European (Summer) Time at t: people
// live by the clock, so the household loads move by an hour in UTC on the
// DST days while the sun does not.
func localOffset(t int64) int64 {
	y := civilYear(t / 86_400_000)
	start := lastSunday(y, 3)*86_400_000 + 3_600_000 // 01:00 UTC
	end := lastSunday(y, 10)*86_400_000 + 3_600_000
	if t >= start && t < end {
		return 2 * 3_600_000
	}
	return 3_600_000
}

// generate builds the clean fleet.
func generate(cfg *Config) []household {
	start := cfg.Start.UnixMilli()
	n := cfg.Days * 288
	hs := make([]household, cfg.Households)
	for h := range hs {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(h)))
		hs[h] = genHousehold(cfg, rng, h, start, n)
	}
	return hs
}

func genHousehold(cfg *Config, rng *rand.Rand, h int, start int64, n int) household {
	hasPV := rng.Float64() < 0.6
	hasHP := rng.Float64() < 0.5
	hasEV := rng.Float64() < 0.35
	site := plausibility.Site{MaxPowerW: 17250, NetMetered: hasPV, HasLocation: true,
		Lat: 47 + 7*rng.Float64(), Lon: 6 + 9*rng.Float64()}
	if hasEV {
		site.MaxPowerW = 24150
	}
	tenant := registry.TenantID("ten_eval")
	meter := fmt.Sprintf("meter-%04d", h)
	mk := func(name string, kind plausibility.Kind, role plausibility.Role) series {
		return series{role: role, ctx: plausibility.StreamContext{Tenant: tenant, Stream: registry.StreamID(fmt.Sprintf("h%04d/%s", h, name)),
			Kind: kind, Site: site, MeterID: meter, BoundMeterID: meter}, rs: make([]reading, 0, n)}
	}
	imp := mk("import_power_w", plausibility.KindPower, plausibility.RoleImport)
	exp := mk("export_power_w", plausibility.KindPower, plausibility.RoleExport)
	exp.ctx.NoBaseline = true
	pv := mk("pv_power_w", plausibility.KindPower, plausibility.RoleProduction)
	pv.ctx.Production = true
	hp := mk("heatpump_power_w", plausibility.KindSwitchedPower, plausibility.RoleLoad)
	ev := mk("ev_power_w", plausibility.KindSwitchedPower, plausibility.RoleLoad)
	ctr := mk("import_energy_wh", plausibility.KindEnergy, 0)
	tmp := mk("outdoor_temp_c", plausibility.KindTemperature, 0)

	base := 80 + 200*rng.Float64()
	amp := 200 + 600*rng.Float64()
	peak := 3000 + 7000*rng.Float64()
	hpRated := 2000 + 1500*rng.Float64()
	evRate := 11000.0
	if rng.Float64() < 0.4 {
		evRate = 3700
	}
	counter := 1e6 + 4e7*rng.Float64()
	var hh household
	if h == 1 { // this household's register rolls over during the run
		ctr.ctx.CounterWrap = 1e8
		counter = 1e8 - 20_000
	}
	if h == 2 { // this one gets a new meter half way
		hh.replaceAt = start + int64(n/2)*ms5 + 7*60_000
	}
	noise, weather, cloud, cloudIntra := 0.0, 0.0, 0.7, 0.0
	evLeft, evTarget := 0.0, 0.0
	for i := range n {
		t := start + int64(i)*ms5
		local := t + localOffset(t)
		lday := local / 86_400_000
		lh := float64(local%86_400_000) / 3_600_000
		wd := (lday + 4) % 7
		weekend := wd == 0 || wd == 6
		doy := float64((t/86_400_000)%365) + 0 // good enough for seasons
		solarH := math.Mod(float64(t%86_400_000)/3_600_000+site.Lon/15, 24)
		if i%288 == 0 {
			weather = 0.6*weather + 3*rng.NormFloat64()
			cloud = 0.25 + 0.75*rng.Float64()
			// EV sessions are planned per local day.
			if hasEV && rng.Float64() < 0.45 {
				evTarget = 6000 + 25000*rng.Float64()
			}
		}
		tout := 9 - 9*math.Cos(2*math.Pi*(doy-20)/365) + 4*math.Sin(2*math.Pi*(solarH-9)/24) + weather + 0.3*rng.NormFloat64()

		// Household load.
		prof := 0.15
		switch {
		case !weekend && lh >= 6.5 && lh < 8.5, weekend && lh >= 8 && lh < 10.5:
			prof = 0.8
		case lh >= 17 && lh < 22:
			prof = 1
		case weekend && lh >= 11 && lh < 17:
			prof = 0.6
		case lh >= 8.5 && lh < 17:
			prof = 0.3
		}
		noise = 0.7*noise + 0.25*rng.NormFloat64()
		load := (base + amp*prof) * math.Exp(noise)
		if lh > 6 && lh < 23 && rng.Float64() < 0.06 {
			load += 500 + 2000*rng.Float64()
		}
		// Heat pump.
		hpP := 0.0
		if hasHP {
			duty := (16-tout)/18 + 0.1*rng.NormFloat64()
			if duty > 0.15 {
				hpP = hpRated * min(duty, 1) * (0.97 + 0.06*rng.Float64())
			}
		}
		// EV.
		evP := 0.0
		if evTarget > 0 && evLeft == 0 && ((!weekend && lh >= 17.5+2*rng.Float64()) || (weekend && lh >= 11 && rng.Float64() < 0.05)) {
			evLeft, evTarget = evTarget, 0
		}
		if evLeft > 0 {
			e := min(evLeft, evRate/12)
			evP = e * 12 * (0.99 + 0.02*rng.Float64())
			evLeft -= e
			if evLeft < 1 {
				evLeft = 0
			}
		}
		// PV.
		pvP := 0.0
		if hasPV {
			cloudIntra = 0.8*cloudIntra + 0.15*rng.NormFloat64()
			if el := sunElev(t, site.Lat, site.Lon); el > 0 {
				pvP = peak * 0.85 * math.Pow(math.Sin(el*math.Pi/180), 1.2) * max(0.05, min(1.05, cloud+cloudIntra))
			}
		}
		total := load + hpP + evP
		net := total - pvP
		impP, expP := max(0, net), max(0, -net)
		counter += impP / 12
		if hh.replaceAt != 0 && t >= hh.replaceAt && t-ms5 < hh.replaceAt {
			counter = 3 // the new meter starts near zero
		}
		if ctr.ctx.CounterWrap > 0 && counter >= ctr.ctx.CounterWrap {
			counter -= ctr.ctx.CounterWrap
		}
		add := func(s *series, v float64) { s.rs = append(s.rs, reading{t: t, sent: t, v: v}) }
		add(&imp, round(impP, 10))
		add(&ctr, math.Floor(counter))
		if hasPV {
			add(&exp, round(expP, 10))
			add(&pv, round(pvP, 10))
		}
		if hasHP {
			add(&hp, round(hpP, 10))
			add(&tmp, round(tout, 10))
		}
		if hasEV {
			add(&ev, round(evP, 10))
		}
	}
	hh.site = site
	hh.series = append(hh.series, imp, ctr)
	if hasPV {
		hh.series = append(hh.series, exp, pv)
	}
	if hasHP {
		hh.series = append(hh.series, hp, tmp)
	}
	if hasEV {
		hh.series = append(hh.series, ev)
	}
	for i := range hh.series {
		hh.series[i].ctx.ReplacedAt = 0
		if hh.replaceAt != 0 && hh.series[i].ctx.Kind == plausibility.KindEnergy {
			hh.series[i].ctx.ReplacedAt = hh.replaceAt // known to the registry from the start of the run for simplicity
		}
	}
	return hh
}

func round(v, per float64) float64 { return math.Round(v*per) / per }

// sunElev is the eval's own copy of the solar model, so that the generator
// does not share code with what it tests.
func sunElev(t int64, lat, lon float64) float64 {
	const rad = math.Pi / 180
	d := float64(t)/86_400_000 - 10957.5
	g := (357.529 + 0.98560028*d) * rad
	q := 280.459 + 0.98564736*d
	l := (q + 1.915*math.Sin(g) + 0.020*math.Sin(2*g)) * rad
	e := (23.439 - 0.00000036*d) * rad
	ra := math.Atan2(math.Cos(e)*math.Sin(l), math.Cos(l))
	decl := math.Asin(math.Sin(e) * math.Sin(l))
	gmst := 18.697374558 + 24.06570982441908*d
	ha := (gmst*15+lon)*rad - ra
	return math.Asin(math.Sin(lat*rad)*math.Sin(decl)+math.Cos(lat*rad)*math.Cos(decl)*math.Cos(ha)) / rad
}
