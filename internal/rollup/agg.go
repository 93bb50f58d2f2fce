package rollup

import (
	"encoding/json"
	"math"

	"github.com/custos-iot/custos/internal/wire"
)

// Agg is a mergeable aggregate of readings. The zero Agg is empty.
//
// Adding or merging the same readings in any order and any grouping gives
// the same Count, Min, Max, FirstTime, LastTime, First and Last, bit for
// bit; Sum differs only by floating-point rounding.
//
// First is the value of the earliest reading and Last that of the latest.
// When several readings share the earliest time, First is the smallest of
// their values; when several share the latest time, Last is the largest.
// The tie-break depends on values only, never on arrival order, so that
// late and duplicated data cannot change a served aggregate.
type Agg struct {
	Count               int64
	Sum, Min, Max       float64
	FirstTime, LastTime int64 // Unix ms of the earliest and latest reading
	First, Last         float64
}

// counts reports whether r is aggregated at all; see the package doc.
func counts(r wire.Reading) bool {
	return r.Quality&wire.QualityBad == 0 &&
		r.Time >= minTime && r.Time < maxTime &&
		!math.IsNaN(r.Value) && !math.IsInf(r.Value, 0)
}

// Add adds r to a. Readings that do not count (bad quality, a non-finite
// value, a time out of range; see the package doc) are ignored.
func (a *Agg) Add(r wire.Reading) {
	if !counts(r) {
		return
	}
	v := r.Value
	if v == 0 {
		v = 0 // -0 → +0: keeps Min, Max, First and Last order-independent
	}
	if a.Count == 0 {
		*a = Agg{Count: 1, Sum: v, Min: v, Max: v, FirstTime: r.Time, LastTime: r.Time, First: v, Last: v}
		return
	}
	a.Count++
	a.Sum += v
	a.Min = min(a.Min, v)
	a.Max = max(a.Max, v)
	if r.Time < a.FirstTime || r.Time == a.FirstTime && v < a.First {
		a.FirstTime, a.First = r.Time, v
	}
	if r.Time > a.LastTime || r.Time == a.LastTime && v > a.Last {
		a.LastTime, a.Last = r.Time, v
	}
}

// Merge adds the readings aggregated in b to a.
func (a *Agg) Merge(b Agg) {
	switch {
	case b.Count == 0:
		return
	case a.Count == 0:
		*a = b
		return
	}
	a.Count += b.Count
	a.Sum += b.Sum
	a.Min = min(a.Min, b.Min)
	a.Max = max(a.Max, b.Max)
	if b.FirstTime < a.FirstTime || b.FirstTime == a.FirstTime && b.First < a.First {
		a.FirstTime, a.First = b.FirstTime, b.First
	}
	if b.LastTime > a.LastTime || b.LastTime == a.LastTime && b.Last > a.Last {
		a.LastTime, a.Last = b.LastTime, b.Last
	}
}

// Mean returns Sum / Count, or 0 for an empty aggregate (rows never hold
// empty buckets).
func (a Agg) Mean() float64 {
	if a.Count == 0 {
		return 0
	}
	return a.Sum / float64(a.Count)
}

// Delta returns Last - First: for an energy counter, what was consumed
// between the first and the last reading of the bucket.
func (a Agg) Delta() float64 { return a.Last - a.First }

// Bucket is one aggregated bucket as served to readers.
type Bucket struct {
	Start int64 // Unix ms of the bucket's UTC start
	Agg
}

// MarshalJSON encodes b as {"t", "count", "sum", "min", "max", "mean",
// "delta"}; the first and last readings themselves are not served. It
// fails if Sum has overflowed to an infinity or NaN.
func (b Bucket) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		T     int64   `json:"t"`
		Count int64   `json:"count"`
		Sum   float64 `json:"sum"`
		Min   float64 `json:"min"`
		Max   float64 `json:"max"`
		Mean  float64 `json:"mean"`
		Delta float64 `json:"delta"`
	}{b.Start, b.Count, b.Sum, b.Min, b.Max, b.Mean(), b.Delta()})
}
