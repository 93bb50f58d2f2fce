package plausibility

import (
	"math"
)

// compress maps x into the baseline's domain: sign(x)·log2(1 + |x|/scale),
// or x itself when scale is 0. A cubic approximation of log2 is accurate to
// about 0.01, plenty for a robust statistic.
func compress(x, scale float64) float64 {
	if scale == 0 {
		return x
	}
	a := math.Abs(x)/scale + 1
	bits := math.Float64bits(a)
	e := float64(int64(bits>>52&0x7ff) - 1023)
	f := math.Float64frombits(bits&(1<<52-1)|1023<<52) - 1 // mantissa − 1, in [0, 1)
	y := e + f*(1.4425449+f*(-0.7181452+f*0.2755669))
	if x < 0 {
		return -y
	}
	return y
}

// bucketOf returns the baseline bucket of solar time ts (Unix ms shifted by
// the site's longitude): hour of day × weekday or weekend.
func bucketOf(ts int64) int {
	day := ts / msPerDay
	if ts < 0 && ts%msPerDay != 0 {
		day--
	}
	hour := int((ts - day*msPerDay) / msPerHour)
	wd := (day + 4) % 7 // 1970-01-01 was a Thursday; 0 is Sunday
	if wd < 0 {
		wd += 7
	}
	if wd == 0 || wd == 6 {
		return 24 + hour
	}
	return hour
}

// baseline scores v against its bucket and returns the statistical reason
// bits. With full it also feeds the CUSUM and learns from v (slowly if it
// was flagged); otherwise v is only scored (scoreOnly) and shares the
// CUSUM's current verdict.
func (s *stream) baseline(bl *BaselineRules, ts int64, v float64, full bool) uint32 {
	if !full {
		return s.scoreOnly(bl, ts, v)
	}
	s.bounds.ok = false // the bucket learns from v
	y := compress(v, bl.Scale)
	b := &s.base[bucketOf(ts)]
	var why uint32
	eta := bl.Rate
	if int(b.n) >= bl.MinSamples {
		z := (y - b.m) / (1.4826*b.d + bl.Floor)
		if bl.Z > 0 && (z > bl.Z || z < -bl.Z) {
			why |= 1 << RuleBaseline
		}
		if bl.CusumH > 0 {
			c := max(-zClip, min(zClip, z))
			s.cusumUp = min(max(0, s.cusumUp+c-bl.CusumK), bl.CusumH*1.25)
			s.cusumDown = min(max(0, s.cusumDown-c-bl.CusumK), bl.CusumH*1.25)
			if s.cusumUp > bl.CusumH || s.cusumDown > bl.CusumH {
				why |= 1 << RuleLevelShift
			}
		}
		if why&(1<<RuleBaseline) != 0 {
			return why // gross outliers teach nothing
		}
		if why != 0 {
			eta /= 4 // a lasting genuine change is learned, slowly
		}
	} else {
		eta = max(eta, 1/float64(b.n+2))
	}
	if b.n == 0 {
		b.m = y
	}
	if b.n < math.MaxUint32 {
		b.n++
	}
	// Move the median and the MAD one step towards y (but not past it),
	// without data-dependent branches.
	step := eta * b.d
	if b.d < bl.Floor {
		step = eta * bl.Floor
	}
	dm := y - b.m
	b.m += math.Copysign(math.Min(step, math.Abs(dm)), dm)
	dd := math.Abs(y-b.m) - b.d
	b.d += math.Copysign(math.Min(step, math.Abs(dd)), dd)
	return why
}

// bounds caches, for the readings between two the baseline learns from,
// the values outside which the current hour's bucket flags a reading: the
// z-test in the value domain, two comparisons instead of a logarithm and a
// division per reading. Not persisted.
type bounds struct {
	ok     bool
	hourLo int64 // the cached hour (solar time)
	lo, hi float64
	shift  bool // the CUSUM's verdict
}

// scoreOnly scores v against its bucket without learning (see
// BaselineRules.Every).
func (s *stream) scoreOnly(bl *BaselineRules, ts int64, v float64) uint32 {
	c := &s.bounds
	if !c.ok || ts < c.hourLo || ts >= c.hourLo+msPerHour {
		c.ok, c.hourLo = true, ts-((ts%msPerHour)+msPerHour)%msPerHour
		c.lo, c.hi, c.shift = math.Inf(-1), math.Inf(1), false
		if b := &s.base[bucketOf(ts)]; int(b.n) >= bl.MinSamples {
			if bl.Z > 0 {
				w := bl.Z * (1.4826*b.d + bl.Floor)
				c.lo, c.hi = expand(b.m-w, bl.Scale), expand(b.m+w, bl.Scale)
			}
			c.shift = bl.CusumH > 0 && (s.cusumUp > bl.CusumH || s.cusumDown > bl.CusumH)
		}
	}
	var why uint32
	if v < c.lo || v > c.hi {
		why |= 1 << RuleBaseline
	}
	if c.shift {
		why |= 1 << RuleLevelShift
	}
	return why
}

// expand is the inverse of compress (exact, where compress approximates
// log2 to about 0.01: the bounds agree with the z-test to that precision).
func expand(y, scale float64) float64 {
	if scale == 0 {
		return y
	}
	x := scale * (math.Exp2(math.Abs(y)) - 1)
	if y < 0 {
		return -x
	}
	return x
}

// fingerprints is a set of 32-bit window fingerprints in two generations:
// inserts go to the current table; when it is half full the older one is
// cleared and becomes current. 0 marks an empty slot.
type fingerprints struct {
	cur   uint8
	count [2]uint32
	tab   [2][]uint32
}

func (f *fingerprints) contains(fp uint32) bool {
	for g := range f.tab {
		t := f.tab[g]
		if len(t) == 0 {
			continue
		}
		mask := uint32(len(t) - 1)
		for i := fp & mask; ; i = (i + 1) & mask {
			switch t[i] {
			case fp:
				return true
			case 0:
				goto next
			}
		}
	next:
	}
	return false
}

func (f *fingerprints) insert(fp uint32, slots int) {
	if len(f.tab[0]) != slots {
		f.tab = [2][]uint32{make([]uint32, slots), make([]uint32, slots)}
		f.count, f.cur = [2]uint32{}, 0
	}
	t := f.tab[f.cur]
	mask := uint32(len(t) - 1)
	for i := fp & mask; ; i = (i + 1) & mask {
		if t[i] == fp {
			return
		}
		if t[i] == 0 {
			t[i] = fp
			break
		}
	}
	if f.count[f.cur]++; int(f.count[f.cur]) >= slots/2 {
		f.cur ^= 1
		clear(f.tab[f.cur])
		f.count[f.cur] = 0
	}
}

// replayCheck slides v into the value window and reports whether the
// window repeats a remembered one. Windows with two equal neighbours
// (idle zeros, plateaus) carry no fingerprint and keep the previous
// decision. Zeros are excluded the same way. Only one window in sample
// (by fingerprint) is looked up and remembered. learn says v may be
// remembered.
func (s *stream) replayCheck(kr *KindRules, k int, sample uint64, v float64, learn bool) bool {
	bits := math.Float64bits(v)
	n := int(s.wn)
	// Windows with a zero or two equal neighbours (idle, plateaus) carry
	// too little information to fingerprint.
	if n > k-1 { // the window was shortened since
		copy(s.win[:k-1], s.win[n-(k-1):n])
		n = k - 1
		s.wn = uint8(n)
	}
	eligible := n >= k-1 && v != 0
	h := uint64(0x9e3779b97f4a7c15)
	if eligible {
		prev := bits
		for j := n - 1; j >= n-(k-1); j-- {
			w := s.win[j]
			if w == prev || w == 0 || w == 1<<63 {
				eligible = false
				break
			}
			h = (h ^ w) * 0x100000001b3
			h ^= h >> 29
			prev = w
		}
	}
	// Slide the window.
	if n < k-1 {
		s.win[n] = bits
		s.wn++
	} else if k > 1 {
		copy(s.win[:k-2], s.win[1:k-1])
		s.win[k-2] = bits
	}
	if !eligible {
		return s.replaying
	}
	h = (h ^ bits) * 0xbf58476d1ce4e5b9
	h ^= h >> 31
	fp := uint32(h >> 32)
	if fp == 0 {
		fp = 1
	}
	// Sample about one window per ReplaySample so the memory spans the
	// same time at any rate.
	if sample > 1 && uint64(h)%sample != 0 {
		return s.replaying
	}
	hit := s.fp.contains(fp)
	if sample > 1 {
		// On a fast stream with coarse values (1 Hz, whole watts) one
		// short window now and then repeats by chance; a replay repeats
		// sampled window after sampled window. So it takes two in a row.
		s.replaying = hit && s.replayHit
		s.replayHit = hit
	} else {
		s.replaying = hit
	}
	if learn && !hit {
		s.fp.insert(fp, kr.ReplaySlots)
	}
	return s.replaying
}

// isNight reports whether the sun is down at t (Unix ms) at site s. It
// computes the elevation once per 15-minute slot and exactly only near the
// threshold.
func (st *stream) isNight(s *Site, t int64, elevation float64) bool {
	if !s.HasLocation {
		m := int((t % msPerDay) / 60_000)
		return m < s.DaylightFrom || m >= s.DaylightTo
	}
	const slot, margin = 15 * 60_000, 4.5
	if k := t/slot + 1; k != st.sunSlot {
		st.sunSlot, st.sunElev = k, sunElevation((k-1)*slot+slot/2, s.Lat, s.Lon)
	}
	if e := st.sunElev - elevation; e > margin || e < -margin {
		return e < 0
	}
	return sunElevation(t, s.Lat, s.Lon) < elevation
}

// sunElevation returns the sun's elevation in degrees at t (Unix ms) seen
// from lat, lon (degrees), from the low-precision formulas of the
// Astronomical Almanac (about 0.1° until 2050), without refraction.
func sunElevation(t int64, lat, lon float64) float64 {
	const rad = math.Pi / 180
	d := float64(t)/msPerDay - 10957.5 // days since J2000.0
	g := (357.529 + 0.98560028*d) * rad
	q := 280.459 + 0.98564736*d
	sg, cg := math.Sincos(g)
	l := (q + 1.915*sg + 0.020*2*sg*cg) * rad
	e := (23.439 - 0.00000036*d) * rad
	sl, cl := math.Sincos(l)
	se, ce := math.Sincos(e)
	ra := math.Atan2(ce*sl, cl)
	decl := math.Asin(se * sl)
	gmst := 18.697374558 + 24.06570982441908*d // hours
	ha := gmst*15*rad + lon*rad - ra
	sp, cp := math.Sincos(lat * rad)
	sd, cd := math.Sincos(decl)
	return math.Asin(sp*sd+cp*cd*math.Cos(ha)) / rad
}
