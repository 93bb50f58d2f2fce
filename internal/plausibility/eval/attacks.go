package eval

import (
	"math/rand/v2"

	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
)

// inject applies attack a to one household after scoreFrom, labelling
// every reading it forges.
func inject(hh *household, a attack, rng *rand.Rand, scoreFrom int64, cfg *Config) {
	imp := &hh.series[0] // generate puts grid import first
	first := 0
	for first < len(imp.rs) && imp.rs[first].t < scoreFrom {
		first++
	}
	n := len(imp.rs)
	if n-first < 3*288 {
		return
	}
	// window picks a start index leaving room for length readings.
	window := func(length int) int { return first + 288 + rng.IntN(n-first-length-288) }
	switch a {
	case spikes:
		// Single readings pushed beyond the physical envelope: power
		// above the connection limit, temperatures jumping tens of kelvin.
		for range 12 {
			s := &hh.series[rng.IntN(len(hh.series))]
			i := first + rng.IntN(len(s.rs)-first)
			r := &s.rs[i]
			switch s.ctx.Kind {
			case plausibility.KindTemperature:
				r.v += 20 + 20*rng.Float64()
			case plausibility.KindEnergy:
				r.v += hh.site.MaxPowerW * (2 + 10*rng.Float64()) / 12
			default:
				r.v = hh.site.MaxPowerW * (1.3 + 4*rng.Float64())
			}
			r.label = spikes
		}
	case scaledValues:
		// Import scaled for two days: hiding consumption or faking it.
		f := []float64{0.4, 0.5, 0.6, 1.6, 2, 2.5}[rng.IntN(6)]
		i0 := window(2 * 288)
		for i := i0; i < i0+2*288; i++ {
			imp.rs[i].v = round(imp.rs[i].v*f, 10)
			imp.rs[i].label = scaledValues
		}
	case slowDrift:
		// Import drifting by up to ±50 % over a week.
		dir := 1.0
		if rng.IntN(2) == 0 {
			dir = -1
		}
		i0 := window(7 * 288)
		for k := range 7 * 288 {
			r := &imp.rs[i0+k]
			r.v = round(r.v*(1+dir*0.5*float64(k)/(7*288)), 10)
			r.label = slowDrift
		}
	case replayedDay:
		// Yesterday's import values sent again as today's.
		i0 := window(288)
		i0 -= (i0 - first) % 288 // align to a UTC day
		if i0 < first+288 {
			i0 += 288
		}
		for k := range 288 {
			imp.rs[i0+k].v = imp.rs[i0+k-288].v
			imp.rs[i0+k].label = replayedDay
		}
	case fakeDevice:
		// A device nobody bound pushes three days of plausible import
		// values through this household's connector.
		fake := series{ctx: imp.ctx, role: 0}
		fake.ctx.Stream = registry.StreamID(string(imp.ctx.Stream) + "-fake")
		fake.ctx.MeterID = "meter-fake"
		i0 := window(3 * 288)
		for k := range 3 * 288 {
			r := imp.rs[i0+k]
			r.v = round(r.v*(0.8+0.4*rng.Float64()), 10)
			r.label = fakeDevice
			fake.rs = append(fake.rs, r)
		}
		hh.series = append(hh.series, fake)
	case timeShift:
		// The import meter's clock moves by 30 minutes to 6 hours, either
		// way, for half a day.
		d := int64(30*60_000 + rng.IntN(330*60_000))
		if rng.IntN(2) == 0 {
			d = -d
		}
		i0 := window(144)
		for i := i0; i < i0+144; i++ {
			imp.rs[i].t += d
			imp.rs[i].label = timeShift
		}
	case flatLine:
		// Import frozen at its last value for 12 to 24 hours.
		length := 144 + rng.IntN(145)
		i0 := window(length)
		for imp.rs[i0-1].v == 0 {
			i0++
		}
		v := imp.rs[i0-1].v
		for i := i0; i < i0+length; i++ {
			imp.rs[i].v = v
			imp.rs[i].label = flatLine
		}
	}
	_ = cfg
}
