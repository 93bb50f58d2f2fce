package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// A block is the self-describing encoding of one series' readings:
//
//	version    1 byte (blockVersion)
//	count      uvarint, number of readings (0..MaxReadingsPerBatch)
//	if count > 0:
//	  times    intWriter residuals of order 2 (delta-of-delta, zigzag,
//	           zero runs as 0, uvarint(run-1))
//	  mode     1 byte: modeDelta|e or modeDoD|e (values are the integers
//	           round(v·10^e), e in 0..9, residuals of order 1 or 2), or
//	           modeXOR (float bits, Gorilla XOR, bit-packed, zero-padded
//	           to a byte)
//	  values   as mode says
//	  quality  runs of (flags byte, uvarint(run-1)) adding up to count
//
// A block round-trips every Reading exactly, whatever its time, flags or
// float64 bit pattern (NaN payloads and -0 included); checking readings for
// plausibility is the batch layer's job.
const (
	blockVersion = 1

	modeDelta = 0x10 // scaled integers, order 1; low nibble is the exponent
	modeDoD   = 0x20 // scaled integers, order 2; low nibble is the exponent
	modeXOR   = 0x40 // float bits, Gorilla XOR

	maxExp = 9 // largest decimal exponent of the scaled-integer modes
)

// AppendBlock appends the block encoding of rs to dst and returns the
// extended slice. rs MUST NOT hold more than MaxReadingsPerBatch readings:
// DecodeBlock rejects larger blocks.
func AppendBlock(dst []byte, rs []Reading) []byte {
	dst = append(dst, blockVersion)
	dst = binary.AppendUvarint(dst, uint64(len(rs)))
	if len(rs) == 0 {
		return dst
	}
	dst = appendTimes(dst, rs)
	dst = appendValues(dst, rs)
	return appendQualities(dst, rs)
}

// DecodeBlock decodes block, appends its readings to dst and returns the
// extended slice. On error it returns dst unchanged and an error wrapping
// ErrMalformed, ErrVersion or ErrTooLarge.
func DecodeBlock(block []byte, dst []Reading) ([]Reading, error) {
	n, pos, err := blockHeader(block, 0)
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	if err := decodeBlockBody(block, pos, dst[start:], 0); err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// BlockLen returns the number of readings in block, reading its header
// only. It does not validate the rest of the block.
func BlockLen(block []byte) (int, error) {
	n, _, err := blockHeader(block, 0)
	return n, err
}

// blockHeader returns the reading count and the offset of the body. base is
// the offset of block in the input, for error messages.
func blockHeader(block []byte, base int) (n, pos int, err error) {
	if len(block) == 0 {
		return 0, 0, errAt(ErrMalformed, base, "empty block")
	}
	if block[0] != blockVersion {
		return 0, 0, errAt(ErrVersion, base, fmt.Sprintf("block version %d", block[0]))
	}
	c, k := uvarint(block, 1)
	if k <= 0 {
		return 0, 0, errAt(ErrMalformed, base+1, "bad block reading count")
	}
	if c > MaxReadingsPerBatch {
		return 0, 0, errAt(ErrTooLarge, base+1, fmt.Sprintf("block holds more than %d readings", MaxReadingsPerBatch))
	}
	return int(c), 1 + k, nil
}

// decodeBlockBody decodes the body of block starting at pos into rs, whose
// length is the count from the header.
func decodeBlockBody(block []byte, pos int, rs []Reading, base int) error {
	var err error
	if len(rs) > 0 {
		if pos, err = decodeTimes(block, pos, rs, base); err != nil {
			return err
		}
		if pos, err = decodeValues(block, pos, rs, base); err != nil {
			return err
		}
		if pos, err = decodeQualities(block, pos, rs, base); err != nil {
			return err
		}
	}
	if pos != len(block) {
		return errAt(ErrMalformed, base+pos, "trailing bytes in block")
	}
	return nil
}

func appendTimes(dst []byte, rs []Reading) []byte {
	w := intWriter{buf: dst, order: 2}
	for i := range rs {
		w.add(rs[i].Time)
	}
	return w.finish()
}

func decodeTimes(src []byte, pos int, rs []Reading, base int) (int, error) {
	r := intReader{src: src, pos: pos, order: 2, left: len(rs)}
	for i := range rs {
		t, ok := r.next()
		if !ok {
			return 0, errAt(ErrMalformed, base+r.pos, "bad time residual")
		}
		rs[i].Time = t
	}
	return r.pos, nil
}

// appendValues writes the values as scaled integers if they all are
// exactly representable so, choosing the smaller of delta and
// delta-of-delta, and as Gorilla XOR otherwise.
func appendValues(dst []byte, rs []Reading) []byte {
	e, ok := scaleExponent(rs)
	if !ok {
		return appendXOR(append(dst, modeXOR), rs)
	}
	p := pow10(e)
	d1 := intWriter{count: true, order: 1}
	d2 := intWriter{count: true, order: 2}
	for i := range rs {
		x := scaled(rs[i].Value, p)
		d1.add(x)
		d2.add(x)
	}
	d1.flush()
	d2.flush()
	mode, order := modeDelta, 1
	if d2.size < d1.size {
		mode, order = modeDoD, 2
	}
	w := intWriter{buf: append(dst, byte(mode|e)), order: order}
	for i := range rs {
		w.add(scaled(rs[i].Value, p))
	}
	return w.finish()
}

func decodeValues(src []byte, pos int, rs []Reading, base int) (int, error) {
	if pos >= len(src) {
		return 0, errAt(ErrMalformed, base+pos, "missing value encoding")
	}
	mode := src[pos]
	switch {
	case mode == modeXOR:
		return decodeXOR(src, pos+1, rs, base)
	case (mode&0xf0 == modeDelta || mode&0xf0 == modeDoD) && mode&0x0f <= maxExp:
		return decodeScaled(src, pos+1, rs, base, int(mode>>4), pow10(int(mode&0x0f)))
	}
	return 0, errAt(ErrMalformed, base+pos, fmt.Sprintf("unknown value encoding 0x%02x", mode))
}

func decodeScaled(src []byte, pos int, rs []Reading, base, order int, p float64) (int, error) {
	r := intReader{src: src, pos: pos, order: order, left: len(rs)}
	for i := range rs {
		x, ok := r.next()
		if !ok {
			return 0, errAt(ErrMalformed, base+r.pos, "bad value residual")
		}
		rs[i].Value = float64(x) / p
	}
	return r.pos, nil
}

// scaleExponent returns the smallest e in 0..maxExp for which every value
// v of rs is exactly, bit for bit, float64(i)/10^e for some int64 i.
func scaleExponent(rs []Reading) (int, bool) {
	e, p := 0, 1.0
	for i := 0; i < len(rs); {
		if exactAt(rs[i].Value, p) {
			i++
			continue
		}
		if e++; e > maxExp {
			return 0, false
		}
		p *= 10
		i = 0 // a larger exponent need not suit the values already seen
	}
	return e, true
}

// exactAt reports whether float64(scaled(v, p))/p reproduces v bit for bit.
// It is false for -0, NaN, ±Inf and magnitudes beyond int64.
func exactAt(v, p float64) bool {
	x := v * p
	if !(x > -(1<<63) && x < 1<<63) {
		return false
	}
	return math.Float64bits(float64(int64(math.Round(x)))/p) == math.Float64bits(v)
}

// scaled returns the integer i with float64(i)/p == v, for v and p that
// passed exactAt.
func scaled(v, p float64) int64 { return int64(math.Round(v * p)) }

// pow10 returns 10^e exactly, for 0 <= e <= 22.
func pow10(e int) float64 {
	p := 1.0
	for range e {
		p *= 10
	}
	return p
}

// XOR control codes, after the first value's 64 raw bits: '0' same value;
// '10' XOR within the previous window; '11', 6 bits of leading zeros,
// 6 bits of (meaningful bits - 1), meaningful bits.
func appendXOR(dst []byte, rs []Reading) []byte {
	w := bitWriter{buf: dst}
	prev := math.Float64bits(rs[0].Value)
	w.write(prev, 64)
	lead, trail := uint(64), uint(0) // no window yet
	for i := 1; i < len(rs); i++ {
		cur := math.Float64bits(rs[i].Value)
		x := cur ^ prev
		prev = cur
		if x == 0 {
			w.write(0, 1)
			continue
		}
		l, t := uint(bits.LeadingZeros64(x)), uint(bits.TrailingZeros64(x))
		if l >= lead && t >= trail {
			w.write(0b10, 2)
			w.write(x>>trail, 64-lead-trail)
			continue
		}
		lead, trail = l, t
		m := 64 - l - t
		w.write(0b11, 2)
		w.write(uint64(l), 6)
		w.write(uint64(m-1), 6)
		w.write(x>>t, m)
	}
	return w.finish()
}

func decodeXOR(src []byte, pos int, rs []Reading, base int) (int, error) {
	r := bitReader{buf: src, pos: pos}
	v, ok := r.read(64)
	if !ok {
		return 0, errAt(ErrMalformed, base+r.pos, "truncated first value")
	}
	rs[0].Value = math.Float64frombits(v)
	lead, trail := uint(64), uint(0)
	for i := 1; i < len(rs); i++ {
		x, err := readXOR(&r, &lead, &trail)
		if err != "" {
			return 0, errAt(ErrMalformed, base+r.pos, fmt.Sprintf("reading %d: %s", i, err))
		}
		v ^= x
		rs[i].Value = math.Float64frombits(v)
	}
	if !r.paddingZero() {
		return 0, errAt(ErrMalformed, base+r.pos-1, "nonzero padding bits")
	}
	return r.pos, nil
}

// readXOR reads one XOR code and returns the XOR, updating the window, or
// a reason why the bits are malformed.
func readXOR(r *bitReader, lead, trail *uint) (uint64, string) {
	c, ok := r.read(1)
	if !ok {
		return 0, "truncated value"
	}
	if c == 0 {
		return 0, ""
	}
	if c, ok = r.read(1); !ok {
		return 0, "truncated value"
	}
	if c == 1 {
		l, ok1 := r.read(6)
		m, ok2 := r.read(6)
		if !ok1 || !ok2 {
			return 0, "truncated value"
		}
		if l+m+1 > 64 {
			return 0, "XOR window exceeds 64 bits"
		}
		*lead, *trail = uint(l), uint(64-l-m-1)
	} else if *lead == 64 {
		return 0, "XOR window reused before set"
	}
	x, ok := r.read(64 - *lead - *trail)
	if !ok {
		return 0, "truncated value"
	}
	return x << *trail, ""
}

func appendQualities(dst []byte, rs []Reading) []byte {
	for i := 0; i < len(rs); {
		q := rs[i].Quality
		j := i + 1
		for j < len(rs) && rs[j].Quality == q {
			j++
		}
		dst = binary.AppendUvarint(append(dst, byte(q)), uint64(j-i-1))
		i = j
	}
	return dst
}

func decodeQualities(src []byte, pos int, rs []Reading, base int) (int, error) {
	for i := 0; i < len(rs); {
		if pos >= len(src) {
			return 0, errAt(ErrMalformed, base+pos, "truncated quality runs")
		}
		q := Quality(src[pos])
		run, k := uvarint(src, pos+1)
		if k <= 0 || run >= uint64(len(rs)-i) {
			return 0, errAt(ErrMalformed, base+pos+1, "bad quality run length")
		}
		pos += 1 + k
		end := i + int(run) + 1
		for ; i < end; i++ {
			rs[i].Quality = q
		}
	}
	return pos, nil
}
