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

	"github.com/custos-iot/custos/internal/errs"
)

// FileStorage is a durable Storage in a directory of its own:
//
//	leaves      "custos-audit-leaves/v1\n", then one record per leaf:
//	            4-byte big-endian length, the leaf, 4-byte CRC-32C of both
//	checkpoint  the latest signed checkpoint, replaced atomically
//
// Append writes a batch with one write and fsyncs before returning. A batch
// torn by a crash can only be the last, unacknowledged one; OpenFileStorage
// cuts it off. Corruption anywhere else is reported, never repaired. After
// an fsync failure the storage refuses every further write (the kernel may
// have dropped the data): reopen it.
//
// It supports one writer (the Log) and any number of concurrent readers.
type FileStorage struct {
	dir string
	f   *os.File

	writeMu sync.Mutex // serialises Append
	broken  error      // set under writeMu

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
	return s, nil
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
		torn, bad := false, ""
		if flen-off < 4 {
			torn = true
		} else {
			if _, err := io.ReadFull(r, buf[:4]); err != nil {
				return errs.E(errs.Unavailable, err)
			}
			n := int64(binary.BigEndian.Uint32(buf))
			switch {
			case n == 0 || n > MaxLeafLen:
				bad = fmt.Sprintf("record at offset %d has length %d", off, n)
			case off+4+n+4 > flen:
				torn = true
			default:
				if _, err := io.ReadFull(r, buf[4:4+n+4]); err != nil {
					return errs.E(errs.Unavailable, err)
				}
				if crc32.Checksum(buf[:4+n], castagnoli) != binary.BigEndian.Uint32(buf[4+n:]) {
					if off+4+n+4 == flen {
						torn = true
					} else {
						bad = fmt.Sprintf("record %d at offset %d fails its checksum", s.size, off)
					}
				}
			}
			if !torn && bad == "" {
				if s.size%indexEvery == 0 {
					s.index = append(s.index, off)
				}
				s.size++
				off += 4 + n + 4
				continue
			}
		}
		if bad != "" {
			zero, err := allZero(s.f, off, flen)
			if err != nil {
				return errs.E(errs.Unavailable, err)
			}
			if !zero {
				return errs.E(errs.Integrity, fmt.Errorf("%s: %s", s.f.Name(), bad))
			}
		}
		// A torn last write: it was never acknowledged. Cut it off.
		if err := s.f.Truncate(off); err != nil {
			return errs.E(errs.Unavailable, err)
		}
		if err := s.f.Sync(); err != nil {
			return errs.E(errs.Unavailable, err)
		}
		s.Truncated = flen - off
		break
	}
	s.end = off
	return nil
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
	if s.broken != nil {
		return 0, errs.E(op, errs.Unavailable, fmt.Errorf("storage failed earlier, reopen it: %w", s.broken))
	}
	s.mu.RLock()
	end, first := s.end, s.size
	s.mu.RUnlock()

	n := 0
	for _, l := range leaves {
		if len(l) == 0 || len(l) > MaxLeafLen {
			return 0, errs.E(op, errs.Invalid, fmt.Errorf("leaf of %d bytes", len(l)))
		}
		n += 8 + len(l)
	}
	buf := make([]byte, 0, n)
	offs := make([]int64, 0, len(leaves))
	for _, l := range leaves {
		offs = append(offs, end+int64(len(buf)))
		rec := len(buf)
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(l)))
		buf = append(buf, l...)
		buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf[rec:], castagnoli))
	}
	if _, err := s.f.WriteAt(buf, end); err != nil {
		// Nothing was acknowledged; take the partial write back.
		if terr := s.f.Truncate(end); terr != nil {
			s.broken = terr
		}
		return 0, errs.E(op, errs.Unavailable, err)
	}
	if err := fdatasync(s.f); err != nil {
		// After a failed fsync the page cache cannot be trusted.
		s.broken = err
		return 0, errs.E(op, errs.Unavailable, err)
	}
	s.mu.Lock()
	for i, o := range offs {
		if (first+uint64(i))%indexEvery == 0 {
			s.index = append(s.index, o)
		}
	}
	s.end = end + int64(len(buf))
	s.size = first + uint64(len(leaves))
	s.mu.Unlock()
	return first, nil
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

// Close closes the leaves file.
func (s *FileStorage) Close() error { return s.f.Close() }

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
