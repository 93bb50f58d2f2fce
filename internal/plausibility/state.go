package plausibility

import (
	"encoding/binary"
	"errors"
	"math"
	"math/bits"

	"github.com/custos-iot/custos/internal/registry"
)

// ErrState means persisted state bytes are not a valid stream state. The
// caller should drop them and let the stream learn afresh (its readings are
// still checked by every rule that needs no history); it must not retry.
var ErrState = errors.New("plausibility: invalid stream state")

const (
	stateMagic   = "CPS"
	stateVersion = 2 // 2 adds the meter replacement seen; 1 is still read
)

// AppendStreamState appends the serialised state of stream id to dst. ok is
// false if the detector has no state for it. The encoding is versioned and
// canonical: RestoreStreamState of it followed by AppendStreamState gives
// the same bytes.
func (d *Detector) AppendStreamState(dst []byte, id registry.StreamID) (_ []byte, ok bool) {
	d.mu.RLock()
	st := d.streams[id]
	d.mu.RUnlock()
	if st == nil {
		return dst, false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.appendState(dst), true
}

// RestoreStreamState replaces the state of stream id by the decoded data,
// which may come from untrusted storage. The error wraps ErrState; on error
// the detector is unchanged.
func (d *Detector) RestoreStreamState(id registry.StreamID, data []byte) error {
	st := &stream{}
	if err := st.decodeState(data); err != nil {
		return err
	}
	d.mu.Lock()
	d.streams[id] = st
	d.mu.Unlock()
	return nil
}

// Streams returns the IDs of the streams the detector holds state for.
func (d *Detector) Streams() []registry.StreamID {
	d.mu.RLock()
	defer d.mu.RUnlock()
	ids := make([]registry.StreamID, 0, len(d.streams))
	for id := range d.streams {
		ids = append(ids, id)
	}
	return ids
}

func (s *stream) appendState(b []byte) []byte {
	le := binary.LittleEndian
	f64 := func(b []byte, v float64) []byte { return le.AppendUint64(b, math.Float64bits(v)) }
	b = append(b, stateMagic...)
	b = append(b, stateVersion, byte(s.kind))
	var flags byte
	if s.has {
		flags |= 1
	}
	if s.hasLag {
		flags |= 2
	}
	if s.replaying {
		flags |= 4
	}
	if s.replayHit {
		flags |= 8
	}
	b = append(b, flags)
	b = le.AppendUint64(b, uint64(s.lastT))
	b = f64(b, s.lastV)
	b = le.AppendUint64(b, uint64(s.step))
	b = f64(b, s.frozenV)
	b = le.AppendUint32(b, s.frozenRun)
	b = le.AppendUint64(b, uint64(s.lagRef))
	b = le.AppendUint64(b, uint64(s.prevRecv))
	b = le.AppendUint64(b, uint64(s.replaced))
	b = append(b, s.wn)
	for _, w := range s.win[:s.wn] {
		b = le.AppendUint64(b, w)
	}
	b = f64(b, s.cusumUp)
	b = f64(b, s.cusumDown)
	b = append(b, byte(len(s.base)))
	for _, k := range s.base {
		b = f64(b, k.m)
		b = f64(b, k.d)
		b = le.AppendUint32(b, k.n)
	}
	if len(s.fp.tab[0]) == 0 {
		return append(b, 0)
	}
	b = append(b, byte(bits.TrailingZeros(uint(len(s.fp.tab[0])))), s.fp.cur)
	b = le.AppendUint32(b, s.fp.count[0])
	b = le.AppendUint32(b, s.fp.count[1])
	for _, t := range s.fp.tab {
		for _, x := range t {
			b = le.AppendUint32(b, x)
		}
	}
	return b
}

// stateReader reads little-endian fields and remembers the first error.
type stateReader struct {
	b   []byte
	err bool
}

func (r *stateReader) take(n int) []byte {
	if r.err || len(r.b) < n {
		r.err = true
		return make([]byte, n)
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}
func (r *stateReader) u8() byte    { return r.take(1)[0] }
func (r *stateReader) u32() uint32 { return binary.LittleEndian.Uint32(r.take(4)) }
func (r *stateReader) u64() uint64 { return binary.LittleEndian.Uint64(r.take(8)) }
func (r *stateReader) f64(finite bool) float64 {
	v := math.Float64frombits(r.u64())
	if finite && (math.IsNaN(v) || math.IsInf(v, 0)) {
		r.err = true
	}
	return v
}

func (s *stream) decodeState(data []byte) error {
	bad := func(why string) error { return errors.Join(ErrState, errors.New(why)) }
	r := &stateReader{b: data}
	if string(r.take(len(stateMagic))) != stateMagic || r.err {
		return bad("bad magic")
	}
	version := r.u8()
	if version != 1 && version != stateVersion {
		return bad("unknown version")
	}
	s.kind = Kind(r.u8())
	if !s.kind.valid() {
		return bad("unknown kind")
	}
	flags := r.u8()
	if flags&^15 != 0 {
		return bad("unknown flags")
	}
	s.has, s.hasLag, s.replaying, s.replayHit = flags&1 != 0, flags&2 != 0, flags&4 != 0, flags&8 != 0
	s.lastT = int64(r.u64())
	s.lastV = r.f64(true)
	s.step = int64(r.u64())
	s.frozenV = r.f64(true)
	s.frozenRun = r.u32()
	s.lagRef = int64(r.u64())
	s.prevRecv = int64(r.u64())
	if version >= 2 {
		s.replaced = int64(r.u64())
	}
	if s.wn = r.u8(); int(s.wn) > len(s.win) {
		return bad("value window too long")
	}
	for i := range s.win[:s.wn] {
		s.win[i] = r.u64()
	}
	s.cusumUp, s.cusumDown = r.f64(true), r.f64(true)
	if r.err {
		return bad("truncated")
	}
	if s.step < 0 || s.cusumUp < 0 || s.cusumDown < 0 {
		return bad("negative interval or CUSUM")
	}
	switch nb := r.u8(); nb {
	case 0:
	case buckets:
		s.base = make([]bucket, buckets)
		for i := range s.base {
			k := &s.base[i]
			k.m, k.d, k.n = r.f64(true), r.f64(true), r.u32()
			if k.d < 0 {
				return bad("negative deviation")
			}
		}
	default:
		return bad("wrong bucket count")
	}
	if lg := r.u8(); lg != 0 {
		if lg < 4 || lg > 16 {
			return bad("fingerprint table size out of range")
		}
		slots := 1 << lg
		s.fp.cur = r.u8()
		s.fp.count = [2]uint32{r.u32(), r.u32()}
		if r.err || s.fp.cur > 1 || len(r.b) < 2*4*slots {
			return bad("truncated fingerprints")
		}
		for g := range s.fp.tab {
			t := make([]uint32, slots)
			used := uint32(0)
			for i := range t {
				if t[i] = r.u32(); t[i] != 0 {
					used++
				}
			}
			// The counts must be exact and leave a free slot in each
			// table, or a lookup would never end.
			if used != s.fp.count[g] || int(used) > slots/2 || (g == int(s.fp.cur) && int(used) >= slots/2) {
				return bad("fingerprint counts do not match")
			}
			s.fp.tab[g] = t
		}
	}
	if r.err {
		return bad("truncated")
	}
	if len(r.b) != 0 {
		return bad("trailing bytes")
	}
	return nil
}
