package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// On-disk formats.
//
// A segment file is a sequence of records and nothing else:
//
//	[u32 LE payload length][u32 LE CRC-32C(payload)][u32 LE CRC-32C(first 8 bytes)][payload]
//
// The third word (the header CRC) protects the length: a corrupted length is
// detected before it is used, so Open never tries to read a bogus huge record.
// A header of all zero bytes (what a crash can leave behind when the file size
// reached the disk but the data did not) fails the header CRC.
//
// The state file holds the ack position and the persisted counters, see state.

const (
	headerSize = 12
	segSuffix  = ".seg"
	stateName  = "state"
	stateTemp  = "state.tmp"
	stateMagic = "CSTSPOOL"
	stateVer   = 1
	stateSize  = 8 + 4 + 8*7 + 4
)

// crc is CRC-32C (Castagnoli). MakeTable returns a table built once by the
// standard library, so this allocates nothing.
func crc(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// putHeader encodes the header of a record with the given payload into h.
func putHeader(h []byte, payload []byte) {
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:8], crc(payload))
	binary.LittleEndian.PutUint32(h[8:12], crc(h[0:8]))
}

// parseHeader checks the header CRC and the length bound and returns the
// payload length and payload CRC.
func parseHeader(h []byte) (n int64, sum uint32, ok bool) {
	if binary.LittleEndian.Uint32(h[8:12]) != crc(h[0:8]) {
		return 0, 0, false
	}
	n = int64(binary.LittleEndian.Uint32(h[0:4]))
	if n > MaxRecordBytes {
		return 0, 0, false
	}
	return n, binary.LittleEndian.Uint32(h[4:8]), true
}

func segName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, segSuffix) }

// parseSegName returns the sequence number of a segment file name.
func parseSegName(name string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(base) != 20 {
		return 0, false
	}
	seq, err := strconv.ParseUint(base, 10, 64)
	if err != nil || seq == 0 {
		return 0, false
	}
	return seq, true
}

// state is what the state file persists.
//
// Head is the first unacknowledged position. Appended counts the records
// stored before Mark; after a crash, Open adds the records it finds at or
// after Mark. Mark is always a position that was durable when the file was
// written, and Head <= Mark.
type state struct {
	Head     Position
	Mark     Position
	Appended uint64
	Dropped  uint64
	Corrupt  uint64
}

func (st state) marshal() []byte {
	b := make([]byte, stateSize)
	copy(b, stateMagic)
	le := binary.LittleEndian
	le.PutUint32(b[8:], stateVer)
	le.PutUint64(b[12:], st.Head.Segment)
	le.PutUint64(b[20:], uint64(st.Head.Offset))
	le.PutUint64(b[28:], st.Mark.Segment)
	le.PutUint64(b[36:], uint64(st.Mark.Offset))
	le.PutUint64(b[44:], st.Appended)
	le.PutUint64(b[52:], st.Dropped)
	le.PutUint64(b[60:], st.Corrupt)
	le.PutUint32(b[68:], crc(b[:68]))
	return b
}

var errBadState = errors.New("spool: state file is corrupt")

func unmarshalState(b []byte) (state, error) {
	le := binary.LittleEndian
	if len(b) != stateSize || string(b[:8]) != stateMagic || le.Uint32(b[8:]) != stateVer ||
		le.Uint32(b[68:]) != crc(b[:68]) {
		return state{}, errBadState
	}
	st := state{
		Head:     Position{le.Uint64(b[12:]), int64(le.Uint64(b[20:]))},
		Mark:     Position{le.Uint64(b[28:]), int64(le.Uint64(b[36:]))},
		Appended: le.Uint64(b[44:]),
		Dropped:  le.Uint64(b[52:]),
		Corrupt:  le.Uint64(b[60:]),
	}
	if st.Head.Offset < 0 || st.Mark.Offset < 0 || st.Mark.Less(st.Head) {
		return state{}, errBadState
	}
	return st, nil
}

// writeState replaces the state file atomically: write a temporary file,
// fsync it, rename it over the old one, fsync the directory.
func writeState(dir string, st state) error {
	tmp := filepath.Join(dir, stateTemp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spool: write state: %w", err)
	}
	if _, err := f.Write(st.marshal()); err != nil {
		f.Close()
		return fmt.Errorf("spool: write state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("spool: sync state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("spool: close state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateName)); err != nil {
		return fmt.Errorf("spool: rename state: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: open dir %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool: sync dir %s: %w", dir, err)
	}
	return nil
}

// scanResult describes a scan of one segment.
type scanResult struct {
	end     int64 // offset just after the last valid record
	records int64 // valid records in [start, end)
	marked  int64 // of records, those at or after the mark
	last    []byte
	// bad is set when scanning stopped before the end of the file.
	bad bool
	// torn reports that the bad bytes look like an interrupted final write:
	// an incomplete header, a length running past the end of the file, or a
	// complete last record with a wrong payload CRC and nothing after it.
	torn bool
	// skipped estimates the records lost at end: the bad one plus every
	// following record whose header is still valid.
	skipped int64
}

// scanSegment reads the records of f from start to the end of the file,
// verifying every checksum. mark is the offset from which records are
// counted in marked (use 0 to count all, a value past the end to count none).
// keepLast asks for a copy of the last valid payload.
func scanSegment(f *os.File, start, mark int64, keepLast bool) (scanResult, error) {
	fi, err := f.Stat()
	if err != nil {
		return scanResult{}, err
	}
	size := fi.Size()
	r := scanResult{end: start}
	if start >= size {
		return r, nil
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return r, err
	}
	br := newReader(f, size-start)
	var h [headerSize]byte
	var buf []byte
	off := start
	for off < size {
		if size-off < headerSize {
			r.bad, r.torn = true, true
			break
		}
		if err := br.full(h[:]); err != nil {
			return r, err
		}
		n, sum, ok := parseHeader(h[:])
		if !ok {
			r.bad = true
			break
		}
		if off+headerSize+n > size {
			r.bad, r.torn = true, true
			break
		}
		if int64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if err := br.full(buf); err != nil {
			return r, err
		}
		if crc(buf) != sum {
			r.bad = true
			r.torn = off+headerSize+n == size
			break
		}
		if keepLast {
			r.last = append(r.last[:0], buf...)
		}
		if off >= mark {
			r.marked++
		}
		r.records++
		off += headerSize + n
		r.end = off
	}
	if r.bad && !r.torn {
		r.skipped = countHeaders(f, r.end, size)
	}
	return r, nil
}

// countHeaders counts the chain of records with valid headers starting at
// off, including an invalid first one: at least 1.
func countHeaders(f *os.File, off, size int64) int64 {
	var h [headerSize]byte
	var n int64
	for off+headerSize <= size {
		if _, err := f.ReadAt(h[:], off); err != nil {
			break
		}
		l, _, ok := parseHeader(h[:])
		if !ok || off+headerSize+l > size {
			break
		}
		n++
		off += headerSize + l
	}
	return max(n, 1)
}

// reader is a minimal buffered reader bounded to a known length.
type reader struct {
	f   io.Reader
	buf []byte
	r   int
	w   int
}

func newReader(f io.Reader, limit int64) *reader {
	return &reader{f: io.LimitReader(f, limit), buf: make([]byte, min(limit, 256<<10))}
}

func (b *reader) full(p []byte) error {
	for len(p) > 0 {
		if b.r == b.w {
			if len(p) >= len(b.buf) {
				_, err := io.ReadFull(b.f, p)
				return err
			}
			n, err := io.ReadAtLeast(b.f, b.buf, 1)
			if err != nil {
				return err
			}
			b.r, b.w = 0, n
		}
		c := copy(p, b.buf[b.r:b.w])
		b.r += c
		p = p[c:]
	}
	return nil
}
