package rollup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"

	"github.com/custos-iot/custos/internal/errs"
)

// ErrMalformed is wrapped by every error of DecodeRow: the bytes are not a
// row this version wrote, or describe aggregates no readings can produce.
// The stored row is damaged (or of a newer version); do not retry the
// decode, rebuild the row from the readings.
var ErrMalformed = errors.New("rollup: malformed row")

// The row encoding, version 1. Integers are uvarints (signed ones zigzag),
// always minimally encoded; floats are their IEEE 754 bits, 8 bytes little
// endian. The encoding of a row is unique: DecodeRow accepts nothing that
// AppendRow would not write byte for byte.
//
//	row    = version(1) res period:varint count bucket*
//	res    = 1 (15m) | 2 (1h) | 3 (1d) | 4 (1mo)
//	bucket = skip flags count firstOff lastOff min [max] [first] [last] [sum]
//
// skip is the number of empty buckets between this bucket and the previous
// one (for the first, since the start of the period): a varint delta of
// bucket starts counted in buckets. firstOff is FirstTime - Start and
// lastOff is LastTime - FirstTime. flags says which floats equal which
// others and are therefore left out; for a one-reading bucket only min is
// written, for a monotonic counter only min, max and sum.
const version = 1

const (
	maxIsMin   = 1 << iota // Max == Min
	firstIsMin             // First == Min
	firstIsMax             // First == Max
	lastIsMin              // Last == Min
	lastIsMax              // Last == Max
	sumIsFirst             // Sum == First

	// minBucketLen is the fewest bytes a bucket takes: skip, flags,
	// count, two offsets and min.
	minBucketLen = 5 + 8
)

var resCodes = [...]Resolution{1: Min15, 2: Hour, 3: Day, 4: Month}

func resCode(r Resolution) byte {
	for c, x := range resCodes {
		if x == r && r != "" {
			return byte(c)
		}
	}
	panic("unreachable")
}

// sameBits reports whether two floats are the same bits (NaN included).
func sameBits(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

func flagsOf(a *Agg) byte {
	var f byte
	for _, c := range [...]struct {
		bit  byte
		x, y float64
	}{
		{maxIsMin, a.Max, a.Min}, {firstIsMin, a.First, a.Min}, {firstIsMax, a.First, a.Max},
		{lastIsMin, a.Last, a.Min}, {lastIsMax, a.Last, a.Max}, {sumIsFirst, a.Sum, a.First},
	} {
		if sameBits(c.x, c.y) {
			f |= c.bit
		}
	}
	return f
}

// AppendRow appends the encoding of row to dst and returns the extended
// slice. row MUST be well formed, as Add, Merge, Apply and DecodeRow leave
// it; AppendRow panics otherwise, so that it never writes what DecodeRow
// would reject.
func AppendRow(dst []byte, row *Row) []byte {
	if err := row.check(); err != nil {
		panic(fmt.Sprintf("rollup: AppendRow of a malformed row: %v", err))
	}
	dst = append(dst, version, resCode(row.Res))
	dst = binary.AppendVarint(dst, row.Period)
	dst = binary.AppendUvarint(dst, uint64(len(row.Buckets)))
	prev := -1
	for i := range row.Buckets {
		b := &row.Buckets[i]
		idx := row.Res.index(row.Period, b.Start)
		f := flagsOf(&b.Agg)
		dst = binary.AppendUvarint(dst, uint64(idx-prev-1))
		prev = idx
		dst = append(dst, f)
		dst = binary.AppendUvarint(dst, uint64(b.Count))
		dst = binary.AppendUvarint(dst, uint64(b.FirstTime-b.Start))
		dst = binary.AppendUvarint(dst, uint64(b.LastTime-b.FirstTime))
		dst = appendFloat(dst, b.Min)
		if f&maxIsMin == 0 {
			dst = appendFloat(dst, b.Max)
		}
		if f&(firstIsMin|firstIsMax) == 0 {
			dst = appendFloat(dst, b.First)
		}
		if f&(lastIsMin|lastIsMax) == 0 {
			dst = appendFloat(dst, b.Last)
		}
		if f&sumIsFirst == 0 {
			dst = appendFloat(dst, b.Sum)
		}
	}
	return dst
}

func appendFloat(dst []byte, v float64) []byte {
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

// check reports why row is not well formed, if it is not.
func (row *Row) check() error {
	r := row.Res
	if !r.aggregated() {
		return fmt.Errorf("resolution %.40q has no rows", string(r))
	}
	if row.Period < minTime || row.Period >= maxTime || r.Period(row.Period) != row.Period {
		return errors.New("period is not the start of a period in range")
	}
	if len(row.Buckets) > r.maxBuckets() {
		return errors.New("too many buckets")
	}
	end := r.periodEnd(row.Period)
	prev := row.Period - 1
	for i := range row.Buckets {
		b := &row.Buckets[i]
		if b.Start <= prev || b.Start >= end || r.Bucket(b.Start) != b.Start {
			return fmt.Errorf("bucket %d: start not a bucket of the period after the previous one", i)
		}
		prev = b.Start
		if why := checkAgg(&b.Agg, b.Start, r.Next(b.Start)); why != "" {
			return fmt.Errorf("bucket %d: %s", i, why)
		}
	}
	return nil
}

// checkAgg reports why a is not the aggregate of readings within
// [start, next), if it is not.
func checkAgg(a *Agg, start, next int64) string {
	finite := func(v float64) bool {
		return !math.IsNaN(v) && !math.IsInf(v, 0) && math.Float64bits(v) != 1<<63
	}
	switch {
	case a.Count < 1:
		return "empty bucket"
	case a.FirstTime < start || a.LastTime < a.FirstTime || a.LastTime >= next:
		return "first and last times not in order within the bucket"
	case !finite(a.Min) || !finite(a.Max) || !finite(a.First) || !finite(a.Last):
		return "non-finite or negative-zero value"
	case a.First < a.Min || a.First > a.Max || a.Last < a.Min || a.Last > a.Max:
		return "first or last value outside [min, max]"
	case a.FirstTime == a.LastTime && (a.First != a.Min || a.Last != a.Max):
		return "readings of one time with first not min or last not max"
	case a.Count == 1 && (a.FirstTime != a.LastTime || a.Min != a.Max || !sameBits(a.Sum, a.First)):
		return "one reading but several values"
	}
	return ""
}

// DecodeRow decodes the row that occupies all of b. It never panics, and
// allocates only for the buckets the input holds — never more than a
// period's (366, about 26 KB), whatever counts the input claims. The error is of
// kind errs.Integrity and wraps ErrMalformed.
func DecodeRow(b []byte) (*Row, error) {
	d := decoder{b: b}
	row, err := d.row()
	if err != nil {
		return nil, errs.E(errs.Op("rollup.DecodeRow"), errs.Integrity, err)
	}
	return row, nil
}

type decoder struct {
	b   []byte
	pos int
	err error // the first error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w at byte %d: %s", ErrMalformed, d.pos, what)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || d.pos >= len(d.b) {
		d.fail("truncated")
		return 0
	}
	d.pos++
	return d.b[d.pos-1]
}

// uvarint reads a minimally encoded uvarint.
func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, k := binary.Uvarint(d.b[d.pos:])
	switch {
	case k == 0:
		d.fail("truncated")
		return 0
	case k < 0 || k != (bits.Len64(v|1)+6)/7:
		d.fail("overlong varint")
		return 0
	}
	d.pos += k
	return v
}

func (d *decoder) float() float64 {
	if d.err != nil || len(d.b)-d.pos < 8 {
		d.fail("truncated")
		return 0
	}
	d.pos += 8
	return math.Float64frombits(binary.LittleEndian.Uint64(d.b[d.pos-8:]))
}

func (d *decoder) row() (*Row, error) {
	if v := d.byte(); d.err == nil && v != version {
		d.pos--
		d.fail(fmt.Sprintf("unknown version %d", v))
	}
	c := d.byte()
	if d.err == nil && (int(c) >= len(resCodes) || resCodes[c] == "") {
		d.pos--
		d.fail("unknown resolution")
	}
	u := d.uvarint()
	n := d.uvarint()
	if d.err != nil {
		return nil, d.err
	}
	r := resCodes[c]
	period := int64(u>>1) ^ -int64(u&1)
	if period < minTime || period >= maxTime || r.Period(period) != period {
		d.fail("period is not the start of a period in range")
		return nil, d.err
	}
	if n > uint64(r.maxBuckets()) || n > uint64((len(d.b)-d.pos)/minBucketLen) {
		d.fail("more buckets than the period or the input can hold")
		return nil, d.err
	}
	row := &Row{Res: r, Period: period, Buckets: make([]Bucket, n)}
	idx := -1
	for i := range row.Buckets {
		at := d.pos
		skip := d.uvarint()
		if d.err == nil && skip >= uint64(r.maxBuckets()) {
			d.fail("bucket beyond the period")
		}
		idx += int(skip) + 1
		start, ok := r.startAt(period, idx)
		if d.err == nil && !ok {
			d.fail("bucket beyond the period")
		}
		f := d.byte()
		if d.err == nil && f >= sumIsFirst<<1 {
			d.fail("unknown flags")
		}
		count := d.uvarint()
		firstOff := d.uvarint()
		lastOff := d.uvarint()
		if d.err != nil {
			return nil, d.err
		}
		next := r.Next(start)
		if count > math.MaxInt64 || firstOff >= uint64(next-start) || lastOff >= uint64(next-start) {
			d.fail("count or times out of range")
			return nil, d.err
		}
		a := Agg{Count: int64(count), FirstTime: start + int64(firstOff)}
		a.LastTime = a.FirstTime + int64(lastOff)
		a.Min = d.float()
		a.Max = a.Min
		if f&maxIsMin == 0 {
			a.Max = d.float()
		}
		a.First = d.float2(f&firstIsMin != 0, a.Min, f&firstIsMax != 0, a.Max)
		a.Last = d.float2(f&lastIsMin != 0, a.Min, f&lastIsMax != 0, a.Max)
		a.Sum = a.First
		if f&sumIsFirst == 0 {
			a.Sum = d.float()
		}
		if d.err != nil {
			return nil, d.err
		}
		if why := checkAgg(&a, start, next); why != "" {
			d.pos = at
			d.fail(why)
			return nil, d.err
		}
		if flagsOf(&a) != f {
			d.pos = at
			d.fail("flags do not match the values")
			return nil, d.err
		}
		row.Buckets[i] = Bucket{Start: start, Agg: a}
	}
	if d.pos != len(d.b) {
		d.fail("trailing bytes after the row")
		return nil, d.err
	}
	return row, nil
}

// float2 returns x if isX, else y if isY, else the next float.
func (d *decoder) float2(isX bool, x float64, isY bool, y float64) float64 {
	switch {
	case isX:
		return x
	case isY:
		return y
	}
	return d.float()
}
