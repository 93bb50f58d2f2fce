// Package spool owns the edge agent's on-disk buffer: a crash-safe FIFO of
// records between the device sources (which Append) and the uplink (which
// Peeks and Acks). A record is an encoded batch of readings; its bytes are
// opaque here.
//
// The spool must never talk to the network, and Append must never wait for
// anything but the local disk: the agent keeps reading its devices while the
// uplink is down or slow.
//
// # Guarantees
//
// A record for which Append returned nil survives a crash of the process (and,
// with fsync honoured by the disk, of the machine) and is delivered by Peek
// until it is acknowledged. After an Ack that returned nil, the acknowledged
// records are never delivered again, even across restarts. Delivery is
// at-least-once: records acknowledged by an Ack that failed may be delivered
// again after a restart, so the uplink sends an idempotency key.
//
// With the default SyncPolicy every Append is fsynced before it returns. With
// SyncPolicy.Every > 0 concurrent appenders share one fsync (group commit):
// each Append still returns only after the fsync covering its record, but
// fsyncs happen at most once per Every. Peek only sees records whose fsync has
// completed, so an Ack can never cover data that is not yet durable.
//
// # Overflow policy
//
// When appending a record would make the unacknowledged bytes on disk exceed
// Options.MaxBytes, the oldest segments are dropped, whole, until it fits: their
// unacknowledged records are counted in Stats.Dropped and that counter is
// persisted. Recent data is worth more to a monitoring platform than old data,
// and the agent never stops reading its devices. The newest segment is never
// dropped (it holds the record Last returns), so the bound can be exceeded
// only by a record larger than SegmentBytes. A segment being read by an
// in-flight Peek may be dropped; an Ack of a position in a dropped segment is
// a no-op and the records after the dropped segment are delivered next.
//
// # Recovery
//
// Open scans the unacknowledged records and verifies every checksum. In the
// newest segment, bytes after the last valid record are truncated. They are
// not counted as corrupt when they look like an interrupted final write (an
// incomplete header, a length running past the end of the file, or a wrong
// checksum on the final record); otherwise (a complete record with a wrong
// checksum followed by more data) the lost records are counted in Dropped and
// Corrupt. In an older segment, a bad record makes Open skip the rest of that
// segment, truncate it there, and count the bad record plus every following
// record whose header is still intact in Dropped and Corrupt. Open never fails
// because of corrupt data; a corrupt state file is treated as missing (all
// records still on disk are delivered again, counters restart from what is
// found).
//
// # Files
//
// Dir holds segment files named by a zero-padded sequence number
// (00000000000000000001.seg, ...) and a small state file written atomically
// (temporary file, fsync, rename, fsync of the directory) that holds the ack
// position and the Appended/Dropped/Corrupt counters. Fully acknowledged
// segments other than the newest are deleted once the Ack is durable.
//
// # Concurrency
//
// One reader goroutine (Peek, Ack) may run concurrently with appenders. With
// the default SyncPolicy, Append calls are serialised; with group sync,
// concurrent appenders are the point. All methods are safe to call from any
// goroutine.
package spool

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"
)

// MaxRecordBytes is the largest payload Append accepts.
const MaxRecordBytes = 16 << 20

// Defaults for Options.
const (
	DefaultSegmentBytes = 4 << 20
	DefaultMaxBytes     = 256 << 20
)

var (
	// ErrTooLarge is returned by Append for a payload over MaxRecordBytes.
	// The caller should split the batch; retrying it unchanged will fail again.
	ErrTooLarge = errors.New("spool: record larger than MaxRecordBytes")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("spool: closed")
	// ErrCorrupt is returned by Peek or Ack when a record fails its checksum
	// while the spool is open (the disk changed under it). Close and Open
	// the spool again: Open skips the corrupt data and counts it.
	ErrCorrupt = errors.New("spool: corrupt record")
)

// SyncPolicy says when appended records are fsynced.
type SyncPolicy struct {
	// Every is zero to fsync on every Append (the default, SyncAlways). A
	// positive value enables group commit: fsync at most this often, with
	// each Append waiting for the fsync that covers its record, so
	// concurrent appenders share one fsync.
	Every time.Duration
}

// Options configure Open.
type Options struct {
	// Dir is the spool directory. Required; created with mode 0700 if missing.
	// Nothing else may write to it.
	Dir string
	// SegmentBytes is the size at which a segment file is rolled: a new
	// segment is started when a record would make the current one exceed it.
	// Default 4 MiB.
	SegmentBytes int64
	// MaxBytes bounds the unacknowledged bytes on disk (framing included); see
	// the overflow policy in the package doc. Default 256 MiB; must be at
	// least 2*SegmentBytes.
	MaxBytes int64
	// Sync is the fsync policy. Default: SyncAlways.
	Sync SyncPolicy
}

// Position is the position of a record in the spool: a segment and an offset
// in it. Positions are comparable and ordered (see Less).
type Position struct {
	Segment uint64
	Offset  int64
}

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool {
	return p.Segment < q.Segment || p.Segment == q.Segment && p.Offset < q.Offset
}

func (p Position) String() string { return fmt.Sprintf("%d:%d", p.Segment, p.Offset) }

func comparePos(p, q Position) int {
	if c := cmp.Compare(p.Segment, q.Segment); c != 0 {
		return c
	}
	return cmp.Compare(p.Offset, q.Offset)
}

// Record is a record returned by Peek.
type Record struct {
	Pos     Position // where the record starts; pass it to Ack
	Next    Position // just after the record
	Payload []byte   // owned by the caller
}

// Stats are counters of a spool.
type Stats struct {
	Records  int64  // unacknowledged records
	Bytes    int64  // unacknowledged bytes on disk, framing included
	Appended uint64 // records appended since the spool was created (persisted)
	Dropped  uint64 // records dropped by the overflow policy or found corrupt (persisted)
	Corrupt  uint64 // of Dropped, records found corrupt on Open (persisted)
}

// segment is the in-memory view of a segment file.
type segment struct {
	seq     uint64
	start   int64 // first unacknowledged offset: 0 except in the head segment
	size    int64 // end of the last valid record written
	records int64 // unacknowledged records in [start, size)
}

type span struct{ pos, next Position }

// Spool is an open spool directory. Create it with Open.
type Spool struct {
	dir      string
	segBytes int64
	maxBytes int64
	every    time.Duration
	notify   chan struct{}

	// Lock order: wmu, rmu, stmu, mu.

	wmu      sync.Mutex // appenders
	lastSync time.Time  // start of the last group fsync; under wmu
	wfile    *os.File   // newest segment
	wbuf     []byte

	rmu    sync.Mutex // reader: Peek, Ack
	rfile  *os.File
	rseq   uint64
	peeked []span // positions returned by the last Peek

	stmu sync.Mutex // state file writes, so the newest snapshot is written last

	mu       sync.Mutex
	cond     *sync.Cond // on mu: signalled when synced advances or syncing ends
	syncing  bool       // a group-commit leader is waiting to fsync
	closed   bool
	werr     error      // sticky write or fsync failure
	segs     []*segment // oldest first; never empty; the last one is written to
	head     Position   // first unacknowledged position
	durable  Position   // end of fsynced data, in the newest segment
	appended uint64     // records written
	synced   uint64     // records fsynced (appended at durable)
	dropped  uint64
	corrupt  uint64
	last     []byte
	hasLast  bool
}

// Open opens or creates the spool in opts.Dir and recovers it after a crash:
// see Recovery in the package doc.
func Open(opts Options) (*Spool, error) {
	if opts.Dir == "" {
		return nil, errors.New("spool: open: Options.Dir is required")
	}
	if opts.SegmentBytes == 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.SegmentBytes < 0 || opts.MaxBytes < 2*opts.SegmentBytes || opts.Sync.Every < 0 {
		return nil, fmt.Errorf("spool: open %s: invalid options (SegmentBytes %d, MaxBytes %d, Sync.Every %v)",
			opts.Dir, opts.SegmentBytes, opts.MaxBytes, opts.Sync.Every)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", opts.Dir, err)
	}
	s := &Spool{
		dir:      opts.Dir,
		segBytes: opts.SegmentBytes,
		maxBytes: opts.MaxBytes,
		every:    opts.Sync.Every,
		notify:   make(chan struct{}, 1),
	}
	s.cond = sync.NewCond(&s.mu)
	if err := s.recover(); err != nil {
		return nil, err
	}
	return s, nil
}

// recover implements Open once the options are checked.
func (s *Spool) recover() error {
	_ = os.Remove(filepath.Join(s.dir, stateTemp))
	var st state
	b, err := os.ReadFile(filepath.Join(s.dir, stateName))
	switch {
	case err == nil:
		if st, err = unmarshalState(b); err != nil {
			st = state{} // documented: a corrupt state file counts as missing
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return fmt.Errorf("spool: read state: %w", err)
	}

	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: open %s: %w", s.dir, err)
	}
	var seqs []uint64
	for _, e := range entries {
		if seq, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)

	changed := false // whether the state file must be rewritten
	var extra uint64 // records found at or after st.Mark
	var del []uint64 // segment files to delete once the state is durable
	newestEmpty := false
	if len(seqs) > 0 {
		fi, err := os.Stat(filepath.Join(s.dir, segName(seqs[len(seqs)-1])))
		newestEmpty = err == nil && fi.Size() == 0
	}
	for i, seq := range seqs {
		newest := i == len(seqs)-1
		// Keep the newest segment and, after a roll, the one before it: they
		// hold the record Last returns.
		keep := newest || newestEmpty && i == len(seqs)-2
		if seq < st.Head.Segment && !keep {
			// Fully acknowledged; the crash came before the deletion.
			if err := os.Remove(filepath.Join(s.dir, segName(seq))); err != nil {
				return fmt.Errorf("spool: remove segment %s: %w", segName(seq), err)
			}
			continue
		}
		seg, f, r, err := s.scan(seq, st, newest)
		if err != nil {
			return err
		}
		extra += uint64(r.marked)
		if r.bad {
			if !r.torn {
				s.dropped += uint64(r.skipped)
				s.corrupt += uint64(r.skipped)
				changed = true
			}
			// Cut the bad bytes off so that appends continue after the last
			// valid record and a corrupt record is counted only once.
			terr := f.Truncate(r.end)
			if terr == nil {
				terr = f.Sync()
			}
			if terr != nil {
				f.Close()
				return fmt.Errorf("spool: truncate segment %s: %w", segName(seq), terr)
			}
		}
		if newest {
			if err := f.Sync(); err != nil { // what we read may still be only in the page cache
				f.Close()
				return fmt.Errorf("spool: sync segment %s: %w", segName(seq), err)
			}
			s.wfile = f
			if r.records > 0 {
				s.last, s.hasLast = r.last, true
			}
		} else {
			f.Close()
		}
		s.segs = append(s.segs, seg)
	}
	if len(s.segs) == 0 {
		seq := max(st.Head.Segment, st.Mark.Segment, 1)
		f, err := os.OpenFile(filepath.Join(s.dir, segName(seq)), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("spool: create segment %s: %w", segName(seq), err)
		}
		if err := syncDir(s.dir); err != nil {
			f.Close()
			return err
		}
		s.wfile = f
		s.segs = []*segment{{seq: seq}}
	}
	if !s.hasLast {
		if err := s.findLast(); err != nil {
			s.wfile.Close()
			return err
		}
	}
	// Older segments with nothing left to deliver go.
	for len(s.segs) > 1 && s.segs[0].records == 0 && s.lastNonEmptyLocked() > 0 {
		del = append(del, s.segs[0].seq)
		s.segs = s.segs[1:]
		changed = true
	}
	newest := s.segs[len(s.segs)-1]
	s.head = Position{s.segs[0].seq, s.segs[0].start}
	s.durable = Position{newest.seq, newest.size}
	s.appended = st.Appended + extra
	s.synced = s.appended
	s.dropped += st.Dropped
	s.corrupt += st.Corrupt
	if s.head != st.Head {
		changed = true
	}
	if changed {
		if err := writeState(s.dir, s.stateLocked()); err != nil {
			s.wfile.Close()
			return err
		}
	}
	for _, seq := range del {
		_ = os.Remove(filepath.Join(s.dir, segName(seq))) // a leftover is deleted by the next Open
	}
	return nil
}

// scan opens segment seq and verifies its unacknowledged records. The file
// is returned open.
func (s *Spool) scan(seq uint64, st state, newest bool) (*segment, *os.File, scanResult, error) {
	name := segName(seq)
	f, err := os.OpenFile(filepath.Join(s.dir, name), os.O_RDWR, 0)
	if err != nil {
		return nil, nil, scanResult{}, fmt.Errorf("spool: open segment %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, scanResult{}, fmt.Errorf("spool: open segment %s: %w", name, err)
	}
	var start int64
	switch {
	case seq < st.Head.Segment: // only the newest segment is kept below the head
		start = fi.Size()
	case seq == st.Head.Segment:
		start = min(st.Head.Offset, fi.Size())
	}
	mark := int64(0)
	switch {
	case seq < st.Mark.Segment:
		mark = fi.Size() + 1
	case seq == st.Mark.Segment:
		mark = st.Mark.Offset
	}
	r, err := scanSegment(f, start, mark, newest)
	if err != nil {
		f.Close()
		return nil, nil, r, fmt.Errorf("spool: read segment %s: %w", name, err)
	}
	return &segment{seq: seq, start: start, size: r.end, records: r.records}, f, r, nil
}

// findLast sets s.last from the newest segment holding a record.
func (s *Spool) findLast() error {
	i := s.lastNonEmptyLocked()
	if i < 0 {
		return nil
	}
	seg := s.segs[i]
	f, err := os.Open(filepath.Join(s.dir, segName(seg.seq)))
	if err != nil {
		return fmt.Errorf("spool: open segment %s: %w", segName(seg.seq), err)
	}
	defer f.Close()
	s.last, s.hasLast = lastRecord(f, seg.size)
	return nil
}

// lastNonEmptyLocked returns the index of the newest segment holding a
// record, or -1. That segment is never deleted: it holds the record Last
// returns. s.mu must be held (or s not yet shared).
func (s *Spool) lastNonEmptyLocked() int {
	for i := len(s.segs) - 1; i >= 0; i-- {
		if s.segs[i].size > 0 {
			return i
		}
	}
	return -1
}

// lastRecord returns the payload of the record ending at end, walking the
// headers from the start of f. It reports false if there is none or it
// cannot be verified.
func lastRecord(f *os.File, end int64) ([]byte, bool) {
	var h [headerSize]byte
	for off := int64(0); off < end; {
		if _, err := f.ReadAt(h[:], off); err != nil {
			return nil, false
		}
		n, sum, ok := parseHeader(h[:])
		if !ok {
			return nil, false
		}
		if off+headerSize+n == end {
			p := make([]byte, n)
			if _, err := f.ReadAt(p, off+headerSize); err != nil || crc(p) != sum {
				return nil, false
			}
			return p, true
		}
		off += headerSize + n
	}
	return nil, false
}

// stateLocked snapshots what the state file records. s.mu must be held.
func (s *Spool) stateLocked() state {
	return state{Head: s.head, Mark: s.durable, Appended: s.synced, Dropped: s.dropped, Corrupt: s.corrupt}
}

// usable returns the error that stops appends, if any.
func (s *Spool) usable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return s.werr
}

// fail records a write or fsync failure: after it the spool refuses appends,
// since what reached the disk is unknown (reopen to recover).
func (s *Spool) fail(err error) error {
	s.mu.Lock()
	if s.werr == nil {
		s.werr = err
	}
	s.mu.Unlock()
	return err
}

func (s *Spool) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// publishLocked makes everything written so far visible to Peek. The caller
// has just fsynced the newest segment and holds s.mu.
func (s *Spool) publishLocked() {
	n := s.segs[len(s.segs)-1]
	s.durable = Position{n.seq, n.size}
	s.synced = s.appended
	s.cond.Broadcast()
}

// Append adds a record. It returns after the record is durable (see
// SyncPolicy). The payload is copied; the caller may reuse it.
func (s *Spool) Append(payload []byte) error {
	if len(payload) > MaxRecordBytes {
		return ErrTooLarge
	}
	n := int64(headerSize + len(payload))
	s.wmu.Lock()
	if err := s.usable(); err != nil {
		s.wmu.Unlock()
		return err
	}
	if err := s.makeRoom(n); err != nil {
		s.wmu.Unlock()
		return err
	}
	s.mu.Lock()
	seg := s.segs[len(s.segs)-1]
	size := seg.size
	s.mu.Unlock()
	if size > 0 && size+n > s.segBytes {
		if err := s.roll(); err != nil {
			s.wmu.Unlock()
			return err
		}
		s.mu.Lock()
		seg = s.segs[len(s.segs)-1]
		size = seg.size
		s.mu.Unlock()
	}

	s.wbuf = slices.Grow(s.wbuf[:0], int(n))[:n]
	putHeader(s.wbuf, payload)
	copy(s.wbuf[headerSize:], payload)
	if _, err := s.wfile.WriteAt(s.wbuf, size); err != nil {
		err = fmt.Errorf("spool: write segment %s: %w", segName(seg.seq), err)
		if terr := s.wfile.Truncate(size); terr != nil {
			s.fail(err)
		}
		s.wmu.Unlock()
		return err
	}
	s.mu.Lock()
	seg.size += n
	seg.records++
	s.appended++
	ticket := s.appended
	s.last = append(s.last[:0], payload...)
	s.hasLast = true
	s.mu.Unlock()

	if s.every > 0 {
		s.wmu.Unlock()
		return s.waitSync(ticket)
	}
	defer s.wmu.Unlock()
	if err := s.wfile.Sync(); err != nil {
		return s.fail(fmt.Errorf("spool: sync segment %s: %w", segName(seg.seq), err))
	}
	s.mu.Lock()
	s.publishLocked()
	s.mu.Unlock()
	s.wake()
	return nil
}

// waitSync returns once record number ticket is fsynced. The first waiter
// becomes the leader: it waits until Every has passed since the last fsync,
// then fsyncs everything written so far, covering the records of all
// appenders that wrote meanwhile (group commit). The others wait on s.cond.
func (s *Spool) waitSync(ticket uint64) error {
	s.mu.Lock()
	for {
		switch {
		case s.synced >= ticket:
			s.mu.Unlock()
			return nil
		case s.werr != nil:
			err := s.werr
			s.mu.Unlock()
			return err
		case s.closed:
			s.mu.Unlock()
			return ErrClosed
		}
		if !s.syncing {
			break
		}
		s.cond.Wait()
	}
	s.syncing = true
	s.mu.Unlock()

	s.wmu.Lock()
	d := time.Until(s.lastSync.Add(s.every))
	s.wmu.Unlock()
	if d > 0 {
		time.Sleep(d) // appenders keep writing meanwhile; this fsync covers them
	}
	s.wmu.Lock()
	err := s.usable()
	if err == nil {
		s.lastSync = time.Now() // fsyncs start at most once per Every
		if err = s.wfile.Sync(); err != nil {
			err = fmt.Errorf("spool: sync segment: %w", err)
		}
	}
	s.mu.Lock()
	if err == nil {
		s.publishLocked()
	} else if !s.closed && s.werr == nil {
		s.werr = err
	}
	s.syncing = false
	s.cond.Broadcast()
	done := s.synced >= ticket
	s.mu.Unlock()
	s.wmu.Unlock()
	if done {
		s.wake()
		return nil
	}
	return err
}

// makeRoom drops the oldest segments until n more bytes fit under MaxBytes.
// s.wmu must be held.
func (s *Spool) makeRoom(n int64) error {
	s.stmu.Lock()
	defer s.stmu.Unlock()
	s.mu.Lock()
	var drop []uint64
	for len(s.segs) > 1 && s.unackedBytesLocked()+n > s.maxBytes && s.lastNonEmptyLocked() > 0 {
		old := s.segs[0]
		s.dropped += uint64(old.records)
		drop = append(drop, old.seq)
		s.segs = s.segs[1:]
		s.head = Position{s.segs[0].seq, s.segs[0].start}
	}
	if len(drop) == 0 {
		s.mu.Unlock()
		return nil
	}
	st := s.stateLocked()
	s.mu.Unlock()
	if err := writeState(s.dir, st); err != nil {
		return err
	}
	for _, seq := range drop {
		_ = os.Remove(filepath.Join(s.dir, segName(seq))) // below the head: the next Open deletes a leftover
	}
	return nil
}

func (s *Spool) unackedBytesLocked() int64 {
	var b int64
	for _, seg := range s.segs {
		b += seg.size - seg.start
	}
	return b
}

// roll fsyncs the newest segment and starts a new one. s.wmu must be held.
func (s *Spool) roll() error {
	if err := s.wfile.Sync(); err != nil {
		return s.fail(fmt.Errorf("spool: sync segment: %w", err))
	}
	s.mu.Lock()
	seq := s.segs[len(s.segs)-1].seq + 1
	s.mu.Unlock()
	name := segName(seq)
	f, err := os.OpenFile(filepath.Join(s.dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return s.fail(fmt.Errorf("spool: create segment %s: %w", name, err))
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	s.wfile.Close()
	s.wfile = f

	s.stmu.Lock()
	defer s.stmu.Unlock()
	s.mu.Lock()
	s.publishLocked() // the old segment is fsynced
	s.segs = append(s.segs, &segment{seq: seq})
	s.durable = Position{seq, 0}
	st := s.stateLocked()
	s.mu.Unlock()
	s.wake()
	return writeState(s.dir, st)
}

// Peek returns the oldest unacknowledged records, in order, without consuming
// them: at most maxRecords records (no limit if <= 0) and at most maxBytes of
// payload (no limit if <= 0), but at least one record if there is any, even
// one bigger than maxBytes. It returns no records and a nil error when the
// spool is empty; wait on Notify then.
func (s *Spool) Peek(maxRecords int, maxBytes int) ([]Record, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	var (
		out   []Record
		total int
		pos   Position
		h     [headerSize]byte
	)
	for maxRecords <= 0 || len(out) < maxRecords {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		var limit int64
		pos, limit = s.locateLocked(pos)
		s.mu.Unlock()
		if pos.Offset >= limit {
			break
		}
		f, err := s.readFile(pos.Segment)
		if errors.Is(err, os.ErrNotExist) && s.gone(pos.Segment) {
			continue // dropped by the overflow policy meanwhile: go on from the new head
		}
		if err != nil {
			return nil, err
		}
		if _, err := f.ReadAt(h[:], pos.Offset); err != nil {
			return nil, fmt.Errorf("spool: read segment %s: %w", segName(pos.Segment), err)
		}
		n, sum, ok := parseHeader(h[:])
		end := pos.Offset + headerSize + n
		if !ok || end > limit {
			return nil, fmt.Errorf("%w at %v", ErrCorrupt, pos)
		}
		if len(out) > 0 && maxBytes > 0 && total+int(n) > maxBytes {
			break
		}
		p := make([]byte, n)
		if _, err := f.ReadAt(p, pos.Offset+headerSize); err != nil {
			return nil, fmt.Errorf("spool: read segment %s: %w", segName(pos.Segment), err)
		}
		if crc(p) != sum {
			return nil, fmt.Errorf("%w at %v", ErrCorrupt, pos)
		}
		next := Position{pos.Segment, end}
		out = append(out, Record{Pos: pos, Next: next, Payload: p})
		total += int(n)
		pos = next
	}
	s.peeked = s.peeked[:0]
	for _, r := range out {
		s.peeked = append(s.peeked, span{r.Pos, r.Next})
	}
	return out, nil
}

// locateLocked moves pos to the first readable position at or after it and
// returns it with the end of the readable data in its segment. s.mu must be held.
func (s *Spool) locateLocked(pos Position) (Position, int64) {
	if pos.Less(s.head) {
		pos = s.head
	}
	for i, seg := range s.segs {
		if seg.seq < pos.Segment {
			continue
		}
		if seg.seq > pos.Segment {
			pos = Position{seg.seq, seg.start}
		}
		if i == len(s.segs)-1 {
			return pos, s.durable.Offset
		}
		if pos.Offset < seg.size {
			return pos, seg.size
		}
		pos = Position{s.segs[i+1].seq, s.segs[i+1].start}
	}
	return pos, pos.Offset
}

// gone reports whether segment seq is no longer in the spool.
func (s *Spool) gone(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return seq < s.segs[0].seq
}

// readFile returns a read handle on segment seq. s.rmu must be held.
func (s *Spool) readFile(seq uint64) (*os.File, error) {
	if s.rfile != nil && s.rseq == seq {
		return s.rfile, nil
	}
	if s.rfile != nil {
		s.rfile.Close()
		s.rfile = nil
	}
	f, err := os.Open(filepath.Join(s.dir, segName(seq)))
	if err != nil {
		return nil, fmt.Errorf("spool: open segment %s: %w", segName(seq), err)
	}
	s.rfile, s.rseq = f, seq
	return f, nil
}

// Ack acknowledges every record up to and including the one at through (the
// Pos of the last record delivered) and returns once that is durable. Acking
// a position before the head (already acknowledged, or dropped by the
// overflow policy) is a no-op. Acking a position at or beyond the tail, or
// one that is not the start of a record, is an error.
func (s *Spool) Ack(through Position) error {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.stmu.Lock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.stmu.Unlock()
		return ErrClosed
	}
	if through.Less(s.head) {
		s.mu.Unlock()
		s.stmu.Unlock()
		return nil
	}
	st, del, err := s.ackLocked(through)
	s.mu.Unlock()
	if err == nil {
		err = writeState(s.dir, st)
	}
	s.stmu.Unlock()
	if err != nil {
		return err
	}
	for _, seq := range del {
		if s.rfile != nil && s.rseq == seq {
			s.rfile.Close()
			s.rfile = nil
		}
		_ = os.Remove(filepath.Join(s.dir, segName(seq))) // below the head: the next Open deletes a leftover
	}
	return nil
}

// ackLocked moves the head past through. s.rmu, s.stmu and s.mu must be held.
func (s *Spool) ackLocked(through Position) (state, []uint64, error) {
	if !through.Less(s.durable) {
		return state{}, nil, fmt.Errorf("spool: ack %v: beyond the tail %v", through, s.durable)
	}
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].seq >= through.Segment })
	if i == len(s.segs) || s.segs[i].seq != through.Segment || through.Offset < s.segs[i].start {
		return state{}, nil, fmt.Errorf("spool: ack %v: not a record position", through)
	}
	seg := s.segs[i]
	next, count, err := s.countThrough(seg, through)
	if err != nil {
		return state{}, nil, err
	}
	var del []uint64
	for _, old := range s.segs[:i] {
		del = append(del, old.seq)
	}
	s.segs = s.segs[i:]
	seg.start = next
	seg.records -= count
	if seg.start >= seg.size && len(s.segs) > 1 && s.lastNonEmptyLocked() > 0 {
		del = append(del, seg.seq)
		s.segs = s.segs[1:]
	}
	s.head = Position{s.segs[0].seq, s.segs[0].start}
	return s.stateLocked(), del, nil
}

// countThrough returns the end of the record at through and the number of
// records from seg.start through it. It uses the last Peek when it can and
// reads the record headers otherwise.
func (s *Spool) countThrough(seg *segment, through Position) (int64, int64, error) {
	first := Position{seg.seq, seg.start}
	if i, ok := slices.BinarySearchFunc(s.peeked, through, func(e span, p Position) int { return comparePos(e.pos, p) }); ok {
		if j, ok := slices.BinarySearchFunc(s.peeked[:i+1], first, func(e span, p Position) int { return comparePos(e.pos, p) }); ok {
			return s.peeked[i].next.Offset, int64(i - j + 1), nil
		}
	}
	f, err := s.readFile(seg.seq)
	if err != nil {
		return 0, 0, err
	}
	var h [headerSize]byte
	var count int64
	for off := seg.start; off <= through.Offset && off < seg.size; {
		if _, err := f.ReadAt(h[:], off); err != nil {
			return 0, 0, fmt.Errorf("spool: read segment %s: %w", segName(seg.seq), err)
		}
		n, _, ok := parseHeader(h[:])
		if !ok {
			return 0, 0, fmt.Errorf("%w at %v", ErrCorrupt, Position{seg.seq, off})
		}
		count++
		end := off + headerSize + n
		if off == through.Offset {
			return end, count, nil
		}
		off = end
	}
	return 0, 0, fmt.Errorf("spool: ack %v: not a record position", through)
}

// Last returns a copy of the payload of the most recently appended record,
// even if it is already acknowledged, and false if the spool never held one
// (or it was lost to corruption). The agent resumes its sources from it.
func (s *Spool) Last() ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasLast {
		return nil, false
	}
	return slices.Clone(s.last), true
}

// Stats returns the counters of the spool.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Appended: s.appended, Dropped: s.dropped, Corrupt: s.corrupt}
	for _, seg := range s.segs {
		st.Records += seg.records
		st.Bytes += seg.size - seg.start
	}
	return st
}

// Notify returns a channel that receives (capacity 1, never blocking the
// appender) after records become visible to Peek.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Close fsyncs pending records, persists the counters and releases the
// files. Appends waiting for a group fsync return nil if Close covered them.
func (s *Spool) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.stmu.Lock()
	defer s.stmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	defer s.cond.Broadcast()
	var err error
	if s.werr == nil {
		if err = s.wfile.Sync(); err == nil {
			s.publishLocked()
			err = writeState(s.dir, s.stateLocked())
		}
	}
	if cerr := s.wfile.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("spool: close: %w", cerr)
	}
	if s.rfile != nil {
		s.rfile.Close()
		s.rfile = nil
	}
	return err
}
