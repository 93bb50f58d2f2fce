package rollup

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/custos-iot/custos/internal/wire"
)

// Row holds the buckets of one stream at one resolution within one period
// (see Resolution.Period), sorted by Start, none of them empty. It is the
// unit in which aggregates are stored.
type Row struct {
	Res     Resolution // one of Aggregated
	Period  int64      // Res.Period of every bucket's Start
	Buckets []Bucket
}

// Key identifies a row of one stream.
type Key struct {
	Res    Resolution
	Period int64
}

// Add adds r to the bucket that holds its time, creating the bucket if
// needed. Readings that do not count (see the package doc) are ignored.
// Add panics if row.Res is not one of Aggregated or r's time falls outside
// the row's period: both are bugs of the caller, which Apply avoids.
func (row *Row) Add(r wire.Reading) {
	row.mustAggregate()
	if p := row.Res.Period(r.Time); p != row.Period {
		panic(fmt.Sprintf("rollup: reading at %d added to the %s row of period %d", r.Time, row.Res, row.Period))
	}
	if counts(r) {
		row.bucket(row.Res.Bucket(r.Time)).Add(r)
	}
}

func (row *Row) mustAggregate() {
	if !row.Res.aggregated() {
		panic(fmt.Sprintf("rollup: a row of resolution %.40q: only aggregated resolutions have rows", string(row.Res)))
	}
}

// bucket returns the aggregate of the bucket starting at start, inserting
// an empty one if there is none.
func (row *Row) bucket(start int64) *Agg {
	n := len(row.Buckets)
	if n == 0 || row.Buckets[n-1].Start < start { // in-order data: append
		row.Buckets = append(row.Buckets, Bucket{Start: start})
		return &row.Buckets[n].Agg
	}
	if row.Buckets[n-1].Start == start {
		return &row.Buckets[n-1].Agg
	}
	i, found := slices.BinarySearchFunc(row.Buckets, start, byStart)
	if !found {
		row.Buckets = slices.Insert(row.Buckets, i, Bucket{Start: start})
	}
	return &row.Buckets[i].Agg
}

func byStart(b Bucket, start int64) int { return cmp.Compare(b.Start, start) }

// Merge adds the buckets of other to row. It panics if the two rows differ
// in resolution or period. other is not modified.
func (row *Row) Merge(other *Row) {
	row.mustAggregate()
	if other.Res != row.Res || other.Period != row.Period {
		panic(fmt.Sprintf("rollup: merging the %s row of period %d into the %s row of period %d",
			other.Res, other.Period, row.Res, row.Period))
	}
	if len(other.Buckets) == 0 {
		return
	}
	a, b := row.Buckets, other.Buckets
	out := make([]Bucket, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		switch {
		case a[0].Start < b[0].Start:
			out, a = append(out, a[0]), a[1:]
		case a[0].Start > b[0].Start:
			out, b = append(out, b[0]), b[1:]
		default:
			m := a[0]
			m.Merge(b[0].Agg)
			out, a, b = append(out, m), a[1:], b[1:]
		}
	}
	out = append(append(out, a...), b...)
	row.Buckets = out
}

// Apply folds readings, in any order and at any times, into rows at every
// resolution of res, creating the rows it needs. rows MUST be non-nil.
// A resolution listed twice is applied once. Apply panics if res holds a
// resolution that is not one of Aggregated. Readings that do not count (see
// the package doc) are ignored.
func Apply(rows map[Key]*Row, rs []wire.Reading, res []Resolution) {
	for i, r := range res {
		if !r.aggregated() {
			panic(fmt.Sprintf("rollup: Apply at resolution %.40q: only aggregated resolutions have rows", string(r)))
		}
		if slices.Contains(res[:i], r) {
			continue
		}
		var row *Row
		var lo, hi int64 // the period of row
		for _, x := range rs {
			if !counts(x) {
				continue
			}
			if row == nil || x.Time < lo || x.Time >= hi {
				lo = r.Period(x.Time)
				hi = r.periodEnd(lo)
				k := Key{r, lo}
				if row = rows[k]; row == nil {
					row = &Row{Res: r, Period: lo}
					rows[k] = row
				}
			}
			row.bucket(r.Bucket(x.Time)).Add(x)
		}
	}
}

// Buckets returns copies of the buckets of rows whose Start is in
// [from, to), sorted by Start. The rows should be of one resolution; nil
// rows are skipped. Buckets with the same Start (from rows of the same
// period built apart) are merged into one.
func Buckets(rows []*Row, from, to int64) []Bucket {
	var out []Bucket
	sorted := true
	for _, row := range rows {
		if row == nil {
			continue
		}
		i, _ := slices.BinarySearchFunc(row.Buckets, from, byStart)
		j, _ := slices.BinarySearchFunc(row.Buckets, to, byStart)
		if i >= j {
			continue
		}
		if len(out) > 0 && out[len(out)-1].Start >= row.Buckets[i].Start {
			sorted = false
		}
		out = append(out, row.Buckets[i:j]...)
	}
	if sorted {
		return out
	}
	slices.SortStableFunc(out, func(a, b Bucket) int { return cmp.Compare(a.Start, b.Start) })
	merged := out[:1]
	for _, b := range out[1:] {
		if last := &merged[len(merged)-1]; last.Start == b.Start {
			last.Merge(b.Agg)
		} else {
			merged = append(merged, b)
		}
	}
	return merged
}

// Get returns the aggregate of the bucket starting at start, and whether
// the row holds that bucket.
func (row *Row) Get(start int64) (Agg, bool) {
	i, found := slices.BinarySearchFunc(row.Buckets, start, byStart)
	if !found {
		return Agg{}, false
	}
	return row.Buckets[i].Agg, true
}

// Set replaces the aggregate of the bucket starting at start with a, or
// removes the bucket if a is empty (rows never hold empty buckets). It
// is how a bucket recomputed from scratch replaces what was folded into
// it. Set panics if row.Res is not one of Aggregated or start is not the
// start of a bucket of the row's period: both are bugs of the caller.
func (row *Row) Set(start int64, a Agg) {
	row.mustAggregate()
	if row.Res.Bucket(start) != start || row.Res.Period(start) != row.Period {
		panic(fmt.Sprintf("rollup: %d is not the start of a %s bucket of the row of period %d", start, row.Res, row.Period))
	}
	i, found := slices.BinarySearchFunc(row.Buckets, start, byStart)
	switch {
	case a.Count == 0 && found:
		row.Buckets = slices.Delete(row.Buckets, i, i+1)
	case a.Count == 0:
	case found:
		row.Buckets[i].Agg = a
	default:
		row.Buckets = slices.Insert(row.Buckets, i, Bucket{Start: start, Agg: a})
	}
}

// Clone returns a copy of row that shares nothing with it.
func (row *Row) Clone() *Row {
	c := *row
	c.Buckets = slices.Clone(row.Buckets)
	return &c
}
