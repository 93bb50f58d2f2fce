package wire

import (
	"encoding/binary"
	"math/bits"
)

// uvarint decodes the minimally encoded uvarint at b[pos:]. It returns the
// value and the number of bytes read, or k <= 0 if the bytes are truncated,
// overlong or overflow 64 bits.
func uvarint(b []byte, pos int) (v uint64, k int) {
	if pos >= len(b) {
		return 0, 0
	}
	if c := b[pos]; c < 0x80 {
		return uint64(c), 1
	}
	v, k = binary.Uvarint(b[pos:])
	if k > 1 && b[pos+k-1] == 0 {
		return 0, -1 // overlong: a trailing zero group
	}
	return v, k
}

// uvarintLen returns the number of bytes binary.AppendUvarint uses for v.
func uvarintLen(v uint64) int {
	return (bits.Len64(v|1) + 6) / 7
}

func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// putPrefix closes the reserved bytes at dst[at:at+reserved] with the
// uvarint length of everything after them, moving those bytes as needed.
func putPrefix(dst []byte, at, reserved int) []byte {
	n := uint64(len(dst) - at - reserved)
	k := uvarintLen(n)
	switch {
	case k > reserved:
		old := len(dst)
		for range k - reserved {
			dst = append(dst, 0)
		}
		copy(dst[at+k:], dst[at+reserved:old])
	case k < reserved:
		copy(dst[at+k:], dst[at+reserved:])
		dst = dst[:len(dst)-(reserved-k)]
	}
	binary.PutUvarint(dst[at:], n)
	return dst
}

// intWriter encodes a sequence of int64 as residuals — the values
// themselves for the first, then their deltas (order 1) or their
// delta-of-deltas (order 2; the second residual is the first delta) — in
// zigzag uvarints. A run of r zero residuals is written as 0, uvarint(r-1).
// In count mode it only adds up the bytes it would write.
type intWriter struct {
	buf         []byte
	size        int  // bytes written so far
	count       bool // count only, write nothing
	order       int  // 1 or 2
	n           int  // values added
	last, delta int64
	zeros       uint64 // pending zero residuals
}

func (w *intWriter) add(x int64) {
	res := x
	if w.n > 0 {
		d := x - w.last
		res = d
		if w.order == 2 {
			res = d - w.delta
			w.delta = d
		}
	}
	w.last = x
	w.n++
	if res == 0 {
		w.zeros++
		return
	}
	w.flush()
	w.put(zigzag(res))
}

func (w *intWriter) flush() {
	if w.zeros > 0 {
		w.put(0)
		w.put(w.zeros - 1)
		w.zeros = 0
	}
}

func (w *intWriter) put(u uint64) {
	w.size += uvarintLen(u)
	if !w.count {
		w.buf = binary.AppendUvarint(w.buf, u)
	}
}

// finish flushes pending zeros and returns the buffer.
func (w *intWriter) finish() []byte {
	w.flush()
	return w.buf
}

// intReader decodes what intWriter wrote. All arithmetic wraps, so every
// int64 sequence round-trips.
type intReader struct {
	src         []byte
	pos         int
	order       int
	left        int // values not yet read
	zeros       uint64
	n           int // values read
	last, delta int64
}

// next returns the next value, or false if the bytes are truncated or
// malformed at r.pos.
func (r *intReader) next() (int64, bool) {
	res, ok := r.residual()
	if !ok {
		return 0, false
	}
	switch {
	case r.n == 0:
		r.last = res
	case r.order == 1:
		r.last += res
	default:
		r.delta += res
		r.last += r.delta
	}
	r.n++
	return r.last, true
}

func (r *intReader) residual() (int64, bool) {
	r.left--
	if r.zeros > 0 {
		r.zeros--
		return 0, true
	}
	u, k := uvarint(r.src, r.pos)
	if k <= 0 {
		return 0, false
	}
	r.pos += k
	if u != 0 {
		return unzigzag(u), true
	}
	run, k := uvarint(r.src, r.pos)
	if k <= 0 || run > uint64(r.left) {
		return 0, false
	}
	r.pos += k
	r.zeros = run
	return 0, true
}

// bitWriter appends bits, most significant first, to buf.
type bitWriter struct {
	buf []byte
	acc uint64 // pending bits in the low n bits
	n   uint   // < 8 between calls
}

// write appends the low n bits of v; n <= 64 and v has no higher bits.
func (w *bitWriter) write(v uint64, n uint) {
	if n > 32 {
		w.write(v>>32, n-32)
		v, n = v&(1<<32-1), 32
	}
	w.acc = w.acc<<n | v
	w.n += n
	for w.n >= 8 {
		w.n -= 8
		w.buf = append(w.buf, byte(w.acc>>w.n))
	}
}

// finish pads the last byte with zero bits and returns the buffer.
func (w *bitWriter) finish() []byte {
	if w.n > 0 {
		w.buf = append(w.buf, byte(w.acc<<(8-w.n)))
		w.n = 0
	}
	return w.buf
}

// bitReader reads what bitWriter wrote from buf[pos:].
type bitReader struct {
	buf []byte
	pos int    // next byte to load
	acc uint64 // loaded bits not yet read, in the low n bits
	n   uint
}

// read returns the next n bits (n <= 64), or false if the bytes run out.
func (r *bitReader) read(n uint) (uint64, bool) {
	if n > 32 {
		hi, ok := r.read(n - 32)
		lo, ok2 := r.read(32)
		return hi<<32 | lo, ok && ok2
	}
	for r.n < n {
		if r.pos >= len(r.buf) {
			return 0, false
		}
		r.acc = r.acc<<8 | uint64(r.buf[r.pos])
		r.pos++
		r.n += 8
	}
	r.n -= n
	return (r.acc >> r.n) & (1<<n - 1), true
}

// paddingZero reports whether the unread bits of the last loaded byte are
// zero, as bitWriter.finish writes them.
func (r *bitReader) paddingZero() bool { return r.acc&(1<<r.n-1) == 0 }
