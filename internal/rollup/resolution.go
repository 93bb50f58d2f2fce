// Package rollup owns aggregation by resolution: the resolutions at which a
// stream may be read (raw, 15 minutes, 1 hour, 1 day, 1 month), the UTC
// bucket arithmetic behind them, the mergeable aggregate kept per bucket
// (count, sum, min, max, first and last), the row in which the buckets of
// one stream, resolution and period are stored, and that row's binary
// encoding.
//
// Access control grants a resolution; a request Finer than the grant is
// refused, and the read path serves the aggregated Buckets instead of the
// readings. The package does no I/O, holds no state, and never sees who
// the data belongs to: callers key rows by stream themselves.
//
// # Buckets
//
// Buckets are UTC: 15 minutes, 1 hour and 1 day are fixed widths counted
// from the Unix epoch (floor division, so negative times work), and months
// are calendar months. Local time zones and daylight saving time play no
// part; a client that wants local days asks for 15-minute or hourly buckets
// and regroups them.
//
// # What is aggregated
//
// A reading counts towards an aggregate unless
//   - its Quality has the wire.QualityBad bit (the source says the value is
//     wrong; such readings will be quarantined, never averaged in),
//   - its value is NaN or infinite (the wire format rejects those anyway),
//   - its time is outside [-2⁵², 2⁵²) ms, about ±142,000 years (wire
//     readings lie in [0, wire.MaxTime)).
//
// Readings flagged uncertain, substituted or clock-unsynchronised do count.
// A negative zero value counts as zero, so that aggregates are the same
// bits whatever the order of the readings.
package rollup

import (
	"fmt"

	"github.com/custos-iot/custos/internal/errs"
)

// Resolution is a granularity at which a stream can be read.
type Resolution string

// The resolutions, finest first.
const (
	Raw   Resolution = "raw" // the readings themselves
	Min15 Resolution = "15m" // 15-minute UTC buckets
	Hour  Resolution = "1h"  // hourly UTC buckets
	Day   Resolution = "1d"  // UTC days
	Month Resolution = "1mo" // UTC calendar months
)

// Aggregated lists the resolutions that have buckets, finest to coarsest.
// Do not modify it.
var Aggregated = []Resolution{Min15, Hour, Day, Month}

const (
	min15MS = 15 * 60_000
	hourMS  = 60 * 60_000
	dayMS   = 24 * hourMS

	// minTime and maxTime bound the times that count (see the package doc).
	minTime = -1 << 52
	maxTime = 1 << 52
)

// rank orders the resolutions; 0 means not a resolution.
func (r Resolution) rank() int {
	switch r {
	case Raw:
		return 1
	case Min15:
		return 2
	case Hour:
		return 3
	case Day:
		return 4
	case Month:
		return 5
	}
	return 0
}

// ParseResolution parses one of "raw", "15m", "1h", "1d" and "1mo". The
// error is of kind errs.Invalid and lists the valid values.
func ParseResolution(s string) (Resolution, error) {
	if r := Resolution(s); r.rank() != 0 {
		return r, nil
	}
	return "", errs.E(errs.Op("rollup.ParseResolution"), errs.Invalid,
		fmt.Sprintf("unknown resolution %.40q: want one of raw, 15m, 1h, 1d, 1mo", s))
}

// Valid reports whether r is one of the five resolutions.
func (r Resolution) Valid() bool { return r.rank() != 0 }

// Finer reports whether r is strictly finer than than, in the order
// raw < 15m < 1h < 1d < 1mo. Access control refuses a request finer than
// the grant. To fail closed, an invalid resolution on either side is finer:
// r.Finer(than) is true whenever r or than is not Valid.
func (r Resolution) Finer(than Resolution) bool {
	a, b := r.rank(), than.rank()
	return a == 0 || b == 0 || a < b
}

// width returns the fixed bucket width of r in ms, or 0 for Month.
func (r Resolution) width() int64 {
	switch r {
	case Raw:
		return 1
	case Min15:
		return min15MS
	case Hour:
		return hourMS
	case Day:
		return dayMS
	case Month:
		return 0
	}
	panic(fmt.Sprintf("rollup: invalid resolution %.40q", string(r)))
}

// Bucket returns the start, in Unix ms, of the UTC bucket that holds t. A
// raw bucket is the millisecond itself. It panics if r is not Valid.
// Bucket, Next and Period are exact for all times within ±2⁵² ms.
func (r Resolution) Bucket(t int64) int64 {
	if w := r.width(); w != 0 {
		return floorDiv(t, w) * w
	}
	y, m, _ := civil(floorDiv(t, dayMS))
	return daysFromCivil(y, m, 1) * dayMS
}

// Next returns the start of the bucket following the one that holds
// bucketStart (which need not be a bucket start). It panics if r is not
// Valid.
func (r Resolution) Next(bucketStart int64) int64 {
	if w := r.width(); w != 0 {
		return floorDiv(bucketStart, w)*w + w
	}
	y, m, _ := civil(floorDiv(bucketStart, dayMS))
	if m == 12 {
		y, m = y+1, 0
	}
	return daysFromCivil(y, m+1, 1) * dayMS
}

// Period returns the start of the storage row that holds t's bucket: the
// UTC day for Raw, Min15 and Hour (at most 96 buckets), the UTC calendar
// year for Day and Month (at most 366). It panics if r is not Valid.
func (r Resolution) Period(t int64) int64 {
	switch r {
	case Raw, Min15, Hour:
		return floorDiv(t, dayMS) * dayMS
	case Day, Month:
		y, _, _ := civil(floorDiv(t, dayMS))
		return daysFromCivil(y, 1, 1) * dayMS
	}
	panic(fmt.Sprintf("rollup: invalid resolution %.40q", string(r)))
}

// periodEnd returns the start of the period after the one starting at p.
func (r Resolution) periodEnd(p int64) int64 {
	if r == Day || r == Month {
		y, _, _ := civil(floorDiv(p, dayMS))
		return daysFromCivil(y+1, 1, 1) * dayMS
	}
	return p + dayMS
}

// maxBuckets returns the most buckets a row of r can hold.
func (r Resolution) maxBuckets() int {
	switch r {
	case Min15:
		return dayMS / min15MS
	case Hour:
		return dayMS / hourMS
	case Day:
		return 366
	case Month:
		return 12
	}
	return 0
}

// index returns the position of the bucket starting at start within the
// row of period p.
func (r Resolution) index(p, start int64) int {
	if r == Month {
		_, m, _ := civil(floorDiv(start, dayMS))
		return m - 1
	}
	return int((start - p) / r.width())
}

// startAt returns the start of the bucket at position i of the row of
// period p, or false if the period has no such bucket.
func (r Resolution) startAt(p int64, i int) (int64, bool) {
	if i < 0 || i >= r.maxBuckets() {
		return 0, false
	}
	if r == Month {
		y, _, _ := civil(floorDiv(p, dayMS))
		return daysFromCivil(y, i+1, 1) * dayMS, true
	}
	s := p + int64(i)*r.width()
	return s, s < r.periodEnd(p)
}

// aggregated reports whether r is one of Aggregated.
func (r Resolution) aggregated() bool { return r.maxBuckets() != 0 }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// civil returns the proleptic Gregorian date of day d since 1970-01-01
// (Howard Hinnant's civil_from_days).
func civil(d int64) (y int64, m, day int) {
	z := d + 719468
	era := floorDiv(z, 146097)
	doe := z - era*146097                                  // [0, 146096]
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // [0, 399]
	doy := doe - (365*yoe + yoe/4 - yoe/100)               // [0, 365]
	mp := (5*doy + 2) / 153                                // [0, 11], from March
	day = int(doy - (153*mp+2)/5 + 1)
	m = int(mp + 3)
	if m > 12 {
		m -= 12
	}
	y = yoe + era*400
	if m <= 2 {
		y++
	}
	return y, m, day
}

// daysFromCivil returns the day since 1970-01-01 of a proleptic Gregorian
// date (Howard Hinnant's days_from_civil).
func daysFromCivil(y int64, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := floorDiv(y, 400)
	yoe := y - era*400 // [0, 399]
	mp := int64(m + 9)
	if m > 2 {
		mp = int64(m - 3)
	}
	doy := (153*mp+2)/5 + int64(d) - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}
