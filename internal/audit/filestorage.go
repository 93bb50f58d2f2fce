package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"unsafe"

	"github.com/custos-iot/custos/internal/errs"
)

// FileStorage is a durable Storage in a directory of its own:
//
//	leaves      "custos-audit-leaves/v1\n", then one record per leaf:
//	            4-byte big-endian length, the leaf, 4-byte CRC-32C of both;
//	            then, where appends use direct I/O, preallocated zeros
//	checkpoint  the latest signed checkpoint, replaced atomically
//
// Append writes a batch with one write and fsyncs before returning. A batch
// torn by a crash can only be the last, unacknowledged one; OpenFileStorage
// cuts it off. Corruption anywhere else is reported, never repaired. After
// an fsync or write failure the storage refuses every further write (the
// kernel may have dropped the data): reopen it.
//
// Where the file system allows it (Linux, O_DIRECT), appends go around the
// page cache into space preallocated and made durable beforehand, whole
// blocks at a time: the fdatasync after each append then only flushes the
// device's cache, with no journal commit for a changed file size. That
// halves the latency of a lone durable append, and more on a busy machine
// (docs/design-notes.md). Elsewhere appends extend the file as they go.
// On Linux, StartAppend submits that write asynchronously (native AIO with
// RWF_DSYNC), so that its caller works while the device writes.
//
// It supports one writer (the Log) and any number of concurrent readers.
type FileStorage struct {
	dir string
	f   *os.File // reads, recovery, preallocation and buffered appends

	writeMu   sync.Mutex // serialises Append and guards what follows
	broken    error
	direct    *os.File      // O_DIRECT handle for appends; nil: buffered appends
	allocated int64         // file size: zeros from end up to it (direct appends)
	tail      []byte        // block-aligned; tail[:end%blockSize] is end's block
	wbuf      []byte        // block-aligned write buffer, reused
	aio       *kernelAIO    // asynchronous direct appends; nil: synchronous
	started   *pendingWrite // begun by StartAppend, not yet finished

	mu    sync.RWMutex // guards the published state below
	end   int64        // offset after the last durable record
	size  uint64
	index []int64 // index[k] is the offset of record k*indexEvery

	// Truncated is how many bytes of a torn last write OpenFileStorage cut off.
	Truncated int64
}

const (
	leavesMagic = "custos-audit-leaves/v1\n"
	indexEvery  = 256

	// blockSize aligns direct writes: a multiple of every device's logical
	// block size.
	blockSize = 4096
	// preallocChunk is how much zeroed, durable space a direct-I/O storage
	// adds at a time (about 4,000 entries).
	preallocChunk = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenFileStorage opens or creates the storage in dir (created with mode 0700).
// It fails with errs.Integrity if the leaves file is corrupt other than by a
// torn last write.
func OpenFileStorage(dir string) (*FileStorage, error) {
	const op errs.Op = "audit.OpenFileStorage"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errs.E(op, errs.Unavailable, err)
	}
	path := filepath.Join(dir, "leaves")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, errs.E(op, errs.Unavailable, err)
	}
	s := &FileStorage{dir: dir, f: f}
	if err := s.load(); err != nil {
		f.Close()
		return nil, errs.E(op, err)
	}
	if !bufferedAppends {
		if d, err := openDirect(path); err == nil {
			if err := s.useDirect(d); err != nil {
				d.Close()
				f.Close()
				return nil, errs.E(op, errs.Unavailable, err)
			}
		}
	}
	return s, nil
}

// bufferedAppends turns direct I/O off (tests of the buffered path).
var bufferedAppends = false

// useDirect switches appends to d, an O_DIRECT handle on the leaves file:
// it loads the block holding the end, so that appends can rewrite it whole.
func (s *FileStorage) useDirect(d *os.File) error {
	fi, err := s.f.Stat()
	if err != nil {
		return err
	}
	s.tail = alignedBlock(blockSize)
	start := s.end &^ (blockSize - 1)
	if _, err := s.f.ReadAt(s.tail[:s.end-start], start); err != nil {
		return err
	}
	s.direct, s.allocated = d, fi.Size()
	if a, err := newKernelAIO(); err == nil {
		s.aio = a
	}
	return nil
}

// alignedBlock returns n zero bytes at a blockSize-aligned address, as
// direct I/O requires.
func alignedBlock(n int) []byte {
	b := make([]byte, n+blockSize)
	off := (blockSize - int(uintptr(unsafe.Pointer(&b[0]))%blockSize)) % blockSize
	return b[off : off+n : off+n]
}

func (s *FileStorage) load() error {
	fi, err := s.f.Stat()
	if err != nil {
		return errs.E(errs.Unavailable, err)
	}
	flen := fi.Size()
	if flen == 0 {
		if _, err := s.f.WriteAt([]byte(leavesMagic), 0); err != nil {
			return errs.E(errs.Unavailable, err)
		}
		if err := s.f.Sync(); err != nil {
			return errs.E(errs.Unavailable, err)
		}
		if err := syncDir(s.dir); err != nil {
			return errs.E(errs.Unavailable, err)
		}
		s.end = int64(len(leavesMagic))
		return nil
	}
	r := bufio.NewReaderSize(io.NewSectionReader(s.f, 0, flen), 1<<20)
	magic := make([]byte, len(leavesMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != leavesMagic {
		return errs.E(errs.Integrity, fmt.Errorf("%s: not an audit leaves file", s.f.Name()))
	}
	off := int64(len(leavesMagic))
	buf := make([]byte, 4+MaxLeafLen+4)
	for off < flen {
		if flen-off >= 4 {
			if _, err := io.ReadFull(r, buf[:4]); err != nil {
				return errs.E(errs.Unavailable, err)
			}
			n := int64(binary.BigEndian.Uint32(buf))
			if n > 0 && n <= MaxLeafLen && off+4+n+4 <= flen {
				if _, err := io.ReadFull(r, buf[4:4+n+4]); err != nil {
					return errs.E(errs.Unavailable, err)
				}
				if crc32.Checksum(buf[:4+n], castagnoli) == binary.BigEndian.Uint32(buf[4+n:]) {
					if s.size%indexEvery == 0 {
						s.index = append(s.index, off)
					}
					s.size++
					off += 4 + n + 4
					continue
				}
			}
		}
		// No whole record at off: either the end (zeros after it, where
		// appends preallocate), or a torn last write — never acknowledged —
		// or damage to the log.
		tornTo, err := s.tornAt(off, flen)
		if err != nil {
			return err
		}
		if tornTo > off {
			// Cut the torn write off, and the zeros after it: direct
			// appends preallocate again.
			if err := s.f.Truncate(off); err != nil {
				return errs.E(errs.Unavailable, err)
			}
			if err := s.f.Sync(); err != nil {
				return errs.E(errs.Unavailable, err)
			}
			s.Truncated = tornTo - off
		}
		break
	}
	s.end = off
	return nil
}

// tornAt judges what follows the last whole record, at off: it returns off
// if only zeros follow, the end of the torn record if a last record is
// torn (cut short by the end of the file, or with a length or checksum
// that fails and only zeros after it), and errs.Integrity otherwise.
func (s *FileStorage) tornAt(off, flen int64) (int64, error) {
	var hdr [4]byte
	if flen-off < 4 {
		if zero, err := allZero(s.f, off, flen); err != nil || zero {
			return off, err
		}
		return flen, nil
	}
	if _, err := s.f.ReadAt(hdr[:], off); err != nil {
		return 0, errs.E(errs.Unavailable, err)
	}
	n := int64(binary.BigEndian.Uint32(hdr[:]))
	after := off + 4 + n + 4
	switch {
	case n == 0:
		if zero, err := allZero(s.f, off, flen); err != nil || zero {
			return off, err
		}
	case n > MaxLeafLen: // a torn length, if only zeros follow
		if zero, err := allZero(s.f, off+4, flen); err != nil || zero {
			return off + 4, err
		}
	case after > flen:
		return flen, nil
	default: // the checksum failed
		if zero, err := allZero(s.f, after, flen); err != nil || zero {
			return after, err
		}
	}
	return 0, errs.E(errs.Integrity, fmt.Errorf("%s: record %d at offset %d is damaged and more follows it", s.f.Name(), s.size, off))
}

func allZero(f *os.File, off, end int64) (bool, error) {
	buf := make([]byte, 64<<10)
	for off < end {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
		if n == 0 && err != nil {
			return false, err
		}
		for _, c := range buf[:n] {
			if c != 0 {
				return false, nil
			}
		}
		off += int64(n)
	}
	return true, nil
}

// Append implements Storage: one write, then fsync, then the leaves become
// visible.
func (s *FileStorage) Append(ctx context.Context, leaves [][]byte) (uint64, error) {
	const op errs.Op = "audit.FileStorage.Append"
	if err := ctx.Err(); err != nil {
		return 0, errs.E(op, errs.Unavailable, err)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	w, err := s.prepare(leaves)
	if err != nil {
		return 0, errs.E(op, err)
	}
	if err := s.write(w); err != nil {
		return 0, errs.E(op, errs.Unavailable, err)
	}
	s.publish(w)
	return w.first, nil
}

// StartAppend implements AsyncStorage: it places leaves after the existing
// ones and starts writing them without waiting for the device, through
// Linux's asynchronous direct I/O; elsewhere it fails with
// errors.ErrUnsupported. FinishAppend must follow before the next append.
func (s *FileStorage) StartAppend(leaves [][]byte) (uint64, error) {
	const op errs.Op = "audit.FileStorage.StartAppend"
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.aio == nil || s.direct == nil {
		return 0, errors.ErrUnsupported
	}
	w, err := s.prepare(leaves)
	if err != nil {
		return 0, errs.E(op, err)
	}
	if err := s.aio.start(int(s.direct.Fd()), w.buf, w.start); err != nil {
		// Nothing was submitted (an old kernel refuses RWF_DSYNC): write
		// synchronously from now on.
		s.aio.close()
		s.aio = nil
		return 0, errors.ErrUnsupported
	}
	s.started = w
	return w.first, nil
}

// FinishAppend implements AsyncStorage: it waits for the append
// StartAppend began to be durable. If it fails nothing of the batch was
// acknowledged and the storage refuses further writes: reopen it.
func (s *FileStorage) FinishAppend() error {
	const op errs.Op = "audit.FileStorage.FinishAppend"
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	w := s.started
	if w == nil {
		return errs.E(op, errs.Other, "no append was started")
	}
	s.started = nil
	n, err := s.aio.wait()
	if err == nil && n != len(w.buf) {
		err = fmt.Errorf("short direct write: %d of %d bytes", n, len(w.buf))
	}
	if errors.Is(err, syscall.EINVAL) && s.firstWrite(w) {
		// The file system takes O_DIRECT opens but not the writes (the
		// error comes with the completion): nothing was written, go on
		// buffered.
		s.aio.close()
		s.aio = nil
		err = s.write(w)
	} else if err != nil {
		// The blocks may hold part of the batch: only a reopen, which
		// cuts torn writes off, may append again.
		s.broken = err
	}
	if err != nil {
		return errs.E(op, errs.Unavailable, err)
	}
	s.publish(w)
	return nil
}

// pendingWrite is a batch placed at the end of the leaves, encoded and
// ready to write.
type pendingWrite struct {
	first uint64
	end   int64 // where its records start
	n     int   // their length
	offs  []int64
	start int64  // direct I/O: the block-aligned offset buf is written at
	buf   []byte // direct I/O: whole blocks, starting with end's block
}

// prepare checks leaves and encodes them for the end of the file; writeMu
// held.
func (s *FileStorage) prepare(leaves [][]byte) (*pendingWrite, error) {
	if s.broken != nil {
		return nil, errs.E(errs.Unavailable, fmt.Errorf("storage failed earlier, reopen it: %w", s.broken))
	}
	if s.started != nil {
		return nil, errs.E(errs.Other, "an append is still in flight")
	}
	s.mu.RLock()
	w := &pendingWrite{end: s.end, first: s.size}
	s.mu.RUnlock()
	for _, l := range leaves {
		if len(l) == 0 || len(l) > MaxLeafLen {
			return nil, errs.E(errs.Invalid, fmt.Errorf("leaf of %d bytes", len(l)))
		}
		w.n += 8 + len(l)
	}
	if s.direct == nil {
		w.buf = make([]byte, w.n)
		w.offs = encodeRecords(w.buf, leaves, w.end)
		return w, nil
	}
	// Direct I/O rewrites the block holding end with the records after
	// it, padded with zeros to whole blocks, into preallocated space. The
	// bytes before end are rewritten unchanged, so a torn write can only
	// lose the new records.
	w.start = w.end &^ (blockSize - 1)
	head := int(w.end - w.start)
	wlen := (head + w.n + blockSize - 1) &^ (blockSize - 1)
	if w.start+int64(wlen) > s.allocated {
		if err := s.grow(w.start + int64(wlen)); err != nil {
			return nil, errs.E(errs.Unavailable, err)
		}
	}
	if len(s.wbuf) < wlen {
		s.wbuf = alignedBlock(max(wlen, 64<<10))
	}
	w.buf = s.wbuf[:wlen]
	copy(w.buf, s.tail[:head])
	w.offs = encodeRecords(w.buf[head:], leaves, w.end)
	clear(w.buf[head+w.n:])
	return w, nil
}

// write makes w durable synchronously; writeMu held.
func (s *FileStorage) write(w *pendingWrite) error {
	if s.direct == nil {
		if _, err := s.f.WriteAt(w.buf, w.end); err != nil {
			// Nothing was acknowledged; take the partial write back.
			if terr := s.f.Truncate(w.end); terr != nil {
				s.broken = terr
			}
			return err
		}
		if err := fdatasync(s.f); err != nil {
			// After a failed fsync the page cache cannot be trusted.
			s.broken = err
			return err
		}
		return nil
	}
	if _, err := s.direct.WriteAt(w.buf, w.start); err != nil {
		if errors.Is(err, syscall.EINVAL) && s.firstWrite(w) {
			// The file system takes O_DIRECT opens but not the writes:
			// nothing was written, go on buffered.
			return s.write(w)
		}
		// The blocks may hold part of the batch: only a reopen, which
		// cuts torn writes off, may append again.
		s.broken = err
		return err
	}
	if err := fdatasync(s.direct); err != nil {
		s.broken = err
		return err
	}
	return nil
}

// firstWrite reports whether w is the first direct write to an empty log,
// and if so switches to buffered appends and makes w one: a file system
// that refuses direct writes refuses the first.
func (s *FileStorage) firstWrite(w *pendingWrite) bool {
	if s.size != 0 || w.end != int64(len(leavesMagic)) {
		return false
	}
	s.direct.Close()
	s.direct = nil
	w.buf = w.buf[w.end-w.start : w.end-w.start+int64(w.n)]
	return true
}

// publish makes a durable batch visible; writeMu held.
func (s *FileStorage) publish(w *pendingWrite) {
	if s.direct != nil {
		tail := (w.end + int64(w.n)) &^ (blockSize - 1)
		copy(s.tail, w.buf[tail-w.start:w.end-w.start+int64(w.n)])
	}
	s.mu.Lock()
	for i, o := range w.offs {
		if (w.first+uint64(i))%indexEvery == 0 {
			s.index = append(s.index, o)
		}
	}
	s.end = w.end + int64(w.n)
	s.size = w.first + uint64(len(w.offs))
	s.mu.Unlock()
}

// encodeRecords writes the records of leaves into buf, the first at file
// offset at, and returns their offsets.
func encodeRecords(buf []byte, leaves [][]byte, at int64) []int64 {
	offs := make([]int64, 0, len(leaves))
	i := 0
	for _, l := range leaves {
		offs = append(offs, at+int64(i))
		binary.BigEndian.PutUint32(buf[i:], uint32(len(l)))
		copy(buf[i+4:], l)
		binary.BigEndian.PutUint32(buf[i+4+len(l):], crc32.Checksum(buf[i:i+4+len(l)], castagnoli))
		i += 8 + len(l)
	}
	return offs
}

// grow preallocates zeroed space up to at least need and makes it, and
// the new file size, durable; writeMu held.
func (s *FileStorage) grow(need int64) error {
	size := (need + preallocChunk - 1) &^ (preallocChunk - 1)
	zeros := make([]byte, 64<<10)
	for off := s.allocated; off < size; {
		k, err := s.f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off)
		if err != nil {
			return err // zeros past end: harmless
		}
		off += int64(k)
	}
	if err := fdatasync(s.f); err != nil {
		s.broken = err
		return err
	}
	s.allocated = size
	return nil
}

// Leaves implements Storage. It checks each record's checksum and fails with
// errs.Integrity on a mismatch.
func (s *FileStorage) Leaves(ctx context.Context, from, to uint64) ([][]byte, error) {
	const op errs.Op = "audit.FileStorage.Leaves"
	s.mu.RLock()
	size, end := s.size, s.end
	var start int64
	if from < size {
		start = s.index[from/indexEvery]
	}
	s.mu.RUnlock()
	if from > to || to > size {
		return nil, errs.E(op, errs.Invalid, fmt.Errorf("%w: [%d, %d) of %d", errRange, from, to, size))
	}
	if from == to {
		return [][]byte{}, nil
	}
	r := bufio.NewReaderSize(io.NewSectionReader(s.f, start, end-start), int(min(end-start, 64<<10)))
	out := make([][]byte, 0, to-from)
	var hdr [4]byte
	for i := from - from%indexEvery; i < to; i++ {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, errs.E(op, errs.Unavailable, err)
			}
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, errs.E(op, errs.Integrity, fmt.Errorf("record %d: %w", i, err))
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > MaxLeafLen {
			return nil, errs.E(op, errs.Integrity, fmt.Errorf("record %d has length %d", i, n))
		}
		rec := make([]byte, n+4)
		if _, err := io.ReadFull(r, rec); err != nil {
			return nil, errs.E(op, errs.Integrity, fmt.Errorf("record %d: %w", i, err))
		}
		crc := crc32.Update(crc32.Checksum(hdr[:], castagnoli), castagnoli, rec[:n])
		if crc != binary.BigEndian.Uint32(rec[n:]) {
			return nil, errs.E(op, errs.Integrity, fmt.Errorf("record %d fails its checksum", i))
		}
		if i >= from {
			out = append(out, rec[:n:n])
		}
	}
	return out, nil
}

// Size implements Storage.
func (s *FileStorage) Size(context.Context) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.size, nil
}

// StoreCheckpoint implements Storage: write a temporary file, fsync it,
// rename it over the old one, fsync the directory.
func (s *FileStorage) StoreCheckpoint(_ context.Context, note []byte) error {
	if err := writeFileAtomic(filepath.Join(s.dir, "checkpoint"), note); err != nil {
		return errs.E(errs.Op("audit.FileStorage.StoreCheckpoint"), errs.Unavailable, err)
	}
	return nil
}

// LatestCheckpoint implements Storage.
func (s *FileStorage) LatestCheckpoint(context.Context) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "checkpoint"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errs.E(errs.Op("audit.FileStorage.LatestCheckpoint"), errs.Unavailable, err)
	}
	return b, nil
}

// Close closes the leaves file, after waiting for an append in flight.
func (s *FileStorage) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.started != nil {
		s.aio.wait()
		s.started = nil
	}
	if s.aio != nil {
		s.aio.close()
	}
	if s.direct != nil {
		s.direct.Close()
	}
	return s.f.Close()
}

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new content, both durable.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
