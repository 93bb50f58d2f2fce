package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/transparency-dev/merkle/rfc6962"
)

// An export bundle is self-contained: the entries of a range [from, to) of
// the log, the signed checkpoint (size S) they are checked against, and the
// compact ranges of [0, from) and [to, S), so that the verifier can rebuild
// the root of size S without the rest of the log. Encoding, version 1, all
// integers big-endian:
//
//	magic       "custos-audit-bundle/v1\n"
//	from, to    8 bytes each
//	checkpoint  4-byte length (at most 64 KiB), the signed checkpoint note
//	prefix      1-byte count, then that many 32-byte hashes: compact range [0, from)
//	suffix      1-byte count, then that many 32-byte hashes: compact range [to, S)
//	records     per entry: 4-byte length (1..MaxLeafLen), the leaf, its 32-byte
//	            RFC 6962 leaf hash as the log recorded it
//	end         4 bytes 0xFFFFFFFF, then the 8-byte number of records
//
// Nothing may follow. The recorded leaf hashes let the verifier name the
// exact entry that was edited after export; the Merkle root over them is what
// the signature covers.
const bundleMagic = "custos-audit-bundle/v1\n"

const (
	maxCheckpointLen = 64 << 10
	endMarker        = 0xFFFFFFFF
	hashLen          = 32
)

var (
	errBundleTruncated = errors.New("bundle truncated")
	errBundleMalformed = errors.New("bundle malformed")
)

// Bundle is a parsed export bundle, held in memory. [Verify] streams instead;
// Bundle exists for tools and tests that inspect or build small bundles.
type Bundle struct {
	From, To   uint64
	Checkpoint []byte
	Prefix     [][]byte // compact range [0, From)
	Suffix     [][]byte // compact range [To, checkpoint size)
	Leaves     [][]byte
	Hashes     [][]byte // recorded leaf hashes, one per leaf
}

type bundleHeader struct {
	from, to       uint64
	checkpoint     []byte
	prefix, suffix [][]byte
}

func appendHeader(b []byte, h *bundleHeader) []byte {
	b = append(b, bundleMagic...)
	b = binary.BigEndian.AppendUint64(b, h.from)
	b = binary.BigEndian.AppendUint64(b, h.to)
	b = binary.BigEndian.AppendUint32(b, uint32(len(h.checkpoint)))
	b = append(b, h.checkpoint...)
	for _, hs := range [][][]byte{h.prefix, h.suffix} {
		b = append(b, byte(len(hs)))
		for _, x := range hs {
			b = append(b, x...)
		}
	}
	return b
}

func appendRecord(b, leaf, hash []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(leaf)))
	b = append(b, leaf...)
	return append(b, hash...)
}

func appendEnd(b []byte, n uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, endMarker)
	return binary.BigEndian.AppendUint64(b, n)
}

// MarshalBinary encodes b. It fails if b could not be read back.
func (b *Bundle) MarshalBinary() ([]byte, error) {
	h := bundleHeader{b.From, b.To, b.Checkpoint, b.Prefix, b.Suffix}
	if err := h.check(); err != nil {
		return nil, err
	}
	if len(b.Leaves) != len(b.Hashes) {
		return nil, fmt.Errorf("%w: %d leaves, %d hashes", errBundleMalformed, len(b.Leaves), len(b.Hashes))
	}
	out := appendHeader(nil, &h)
	for i, l := range b.Leaves {
		if len(l) == 0 || len(l) > MaxLeafLen || len(b.Hashes[i]) != hashLen {
			return nil, fmt.Errorf("%w: record %d", errBundleMalformed, i)
		}
		out = appendRecord(out, l, b.Hashes[i])
	}
	return appendEnd(out, uint64(len(b.Leaves))), nil
}

func (h *bundleHeader) check() error {
	if len(h.checkpoint) > maxCheckpointLen {
		return fmt.Errorf("%w: checkpoint of %d bytes", errBundleMalformed, len(h.checkpoint))
	}
	for _, hs := range [][][]byte{h.prefix, h.suffix} {
		if len(hs) > 64 {
			return fmt.Errorf("%w: %d range hashes", errBundleMalformed, len(hs))
		}
		for _, x := range hs {
			if len(x) != hashLen {
				return fmt.Errorf("%w: range hash of %d bytes", errBundleMalformed, len(x))
			}
		}
	}
	return nil
}

// ReadBundle parses a whole bundle from r. It checks the encoding only, not
// signatures or hashes: that is [Verify]'s job.
func ReadBundle(r io.Reader) (*Bundle, error) {
	br, err := newBundleReader(r)
	if err != nil {
		return nil, err
	}
	b := &Bundle{From: br.hdr.from, To: br.hdr.to, Checkpoint: br.hdr.checkpoint, Prefix: br.hdr.prefix, Suffix: br.hdr.suffix}
	for {
		leaf, hash, err := br.next()
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
		b.Leaves = append(b.Leaves, bytes.Clone(leaf))
		b.Hashes = append(b.Hashes, hash)
	}
}

// bundleReader streams a bundle: the header first, then one record per next.
type bundleReader struct {
	r     *bufio.Reader
	hdr   bundleHeader
	buf   []byte
	count uint64 // records read
	done  bool
}

func newBundleReader(r io.Reader) (*bundleReader, error) {
	br := &bundleReader{r: bufio.NewReaderSize(r, 64<<10)}
	magic := make([]byte, len(bundleMagic))
	if err := br.read(magic); err != nil {
		return nil, err
	}
	if string(magic) != bundleMagic {
		return nil, fmt.Errorf("%w: not an audit bundle (v1)", errBundleMalformed)
	}
	var fixed [20]byte
	if err := br.read(fixed[:]); err != nil {
		return nil, err
	}
	br.hdr.from = binary.BigEndian.Uint64(fixed[0:])
	br.hdr.to = binary.BigEndian.Uint64(fixed[8:])
	n := binary.BigEndian.Uint32(fixed[16:])
	if n > maxCheckpointLen {
		return nil, fmt.Errorf("%w: checkpoint of %d bytes", errBundleMalformed, n)
	}
	br.hdr.checkpoint = make([]byte, n)
	if err := br.read(br.hdr.checkpoint); err != nil {
		return nil, err
	}
	for _, dst := range []*[][]byte{&br.hdr.prefix, &br.hdr.suffix} {
		var c [1]byte
		if err := br.read(c[:]); err != nil {
			return nil, err
		}
		if c[0] > 64 {
			return nil, fmt.Errorf("%w: %d range hashes", errBundleMalformed, c[0])
		}
		*dst = make([][]byte, c[0])
		for i := range *dst {
			(*dst)[i] = make([]byte, hashLen)
			if err := br.read((*dst)[i]); err != nil {
				return nil, err
			}
		}
	}
	return br, nil
}

func (br *bundleReader) read(p []byte) error {
	if _, err := io.ReadFull(br.r, p); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return errBundleTruncated
		}
		return err
	}
	return nil
}

// next returns the next record's leaf (valid until the next call) and a
// fresh copy of its recorded hash, or io.EOF after a valid end.
func (br *bundleReader) next() (leaf, hash []byte, err error) {
	if br.done {
		return nil, nil, io.EOF
	}
	var l [4]byte
	if err := br.read(l[:]); err != nil {
		return nil, nil, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n == endMarker {
		var c [8]byte
		if err := br.read(c[:]); err != nil {
			return nil, nil, err
		}
		if got := binary.BigEndian.Uint64(c[:]); got != br.count {
			return nil, nil, fmt.Errorf("%w: end says %d records, %d were read", errBundleMalformed, got, br.count)
		}
		if _, err := br.r.ReadByte(); err != io.EOF {
			if err == nil {
				return nil, nil, fmt.Errorf("%w: data after the end", errBundleMalformed)
			}
			return nil, nil, err
		}
		br.done = true
		return nil, nil, io.EOF
	}
	if n == 0 || n > MaxLeafLen {
		return nil, nil, fmt.Errorf("%w: record %d has length %d", errBundleMalformed, br.count, n)
	}
	if cap(br.buf) < int(n) {
		br.buf = make([]byte, max(int(n), 512))
	}
	leaf = br.buf[:n]
	if err := br.read(leaf); err != nil {
		return nil, nil, err
	}
	hash = make([]byte, hashLen)
	if err := br.read(hash); err != nil {
		return nil, nil, err
	}
	br.count++
	return leaf, hash, nil
}

// Export writes a bundle of entries [from, to) checked against the log's
// latest checkpoint; to must not exceed that checkpoint's size (call
// [Log.Sign] first to cover the newest entries).
func Export(ctx context.Context, w io.Writer, l *Log, from, to uint64) error {
	cp, err := l.Checkpoint(ctx)
	if err != nil {
		return err
	}
	return ExportAt(ctx, w, l, cp, from, to)
}

// ExportAt is Export against a given checkpoint of this log, e.g. one that
// witnesses cosigned.
func ExportAt(ctx context.Context, w io.Writer, l *Log, checkpoint []byte, from, to uint64) error {
	const op errs.Op = "audit.Export"
	cp, _, err := VerifyCheckpoint(checkpoint, l.cfg.Verifier, nil, 0)
	if err != nil {
		return errs.E(op, err)
	}
	if from > to || to > cp.Size || cp.Size > l.Size() {
		return errs.E(op, errs.Invalid, fmt.Errorf("%w: range [%d, %d) of checkpoint %d", ErrTooLarge, from, to, cp.Size))
	}
	prefix, err := l.rangeHashes(ctx, 0, from)
	if err != nil {
		return errs.E(op, err)
	}
	suffix, err := l.rangeHashes(ctx, to, cp.Size)
	if err != nil {
		return errs.E(op, err)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	buf := appendHeader(nil, &bundleHeader{from, to, checkpoint, prefix, suffix})
	const chunk = 4096
	for i := from; i < to; i += chunk {
		leaves, err := l.Leaves(ctx, i, min(i+chunk, to))
		if err != nil {
			return errs.E(op, err)
		}
		for _, leaf := range leaves {
			buf = appendRecord(buf, leaf, rfc6962.DefaultHasher.HashLeaf(leaf))
		}
		if _, err := bw.Write(buf); err != nil {
			return errs.E(op, errs.Unavailable, err)
		}
		buf = buf[:0]
	}
	if _, err := bw.Write(appendEnd(buf, to-from)); err != nil {
		return errs.E(op, errs.Unavailable, err)
	}
	if err := bw.Flush(); err != nil {
		return errs.E(op, errs.Unavailable, err)
	}
	return nil
}
