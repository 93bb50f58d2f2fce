package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Fault is what [Verify] found wrong. Lower values are graver: Verify's
// error is the gravest problem found.
type Fault uint8

// The faults.
const (
	// Fork: two checkpoints signed by the log for one size with different
	// roots — the log showed different histories to different parties.
	Fork Fault = iota + 1
	// BadSignature: a checkpoint is not validly signed by the log's key.
	BadSignature
	// NoQuorum: the checkpoint has fewer witness cosignatures than required.
	NoQuorum
	// Malformed: the bundle is not a well-formed bundle.
	Malformed
	// Truncated: the bundle ends early, or the log it holds is shorter
	// than the checkpoint it is checked against.
	Truncated
	// EntryModified: an entry's bytes do not match its recorded leaf hash.
	EntryModified
	// OutOfOrder: an entry's time is before its predecessor's (entries
	// reordered).
	OutOfOrder
	// EntryMalformed: an entry matches its hash but is not a valid entry.
	EntryMalformed
	// Missing: fewer entries than the bundle's range declares (deleted).
	Missing
	// Extra: more entries than the bundle's range declares (inserted).
	Extra
	// OutOfRange: the checkpoint's size lies outside what the bundle can
	// check (a range export that does not reach it).
	OutOfRange
	// RootMismatch: the entries do not produce the checkpoint's root.
	RootMismatch
)

var faultNames = map[Fault]string{
	Fork: "fork", BadSignature: "bad signature", NoQuorum: "no quorum", Malformed: "malformed bundle",
	Truncated: "truncated", EntryModified: "entry modified", OutOfOrder: "out of order",
	EntryMalformed: "entry malformed", Missing: "entries missing", Extra: "extra entries",
	OutOfRange: "out of range", RootMismatch: "root mismatch",
}

func (f Fault) String() string {
	if s, ok := faultNames[f]; ok {
		return s
	}
	return fmt.Sprintf("fault(%d)", uint8(f))
}

// Problem is one thing wrong with a bundle.
type Problem struct {
	Fault Fault
	// Index is the entry concerned, if HasIndex.
	Index    uint64
	HasIndex bool
	Detail   string
}

func (p *Problem) Error() string {
	if p.HasIndex {
		return fmt.Sprintf("%s at entry %d: %s", p.Fault, p.Index, p.Detail)
	}
	return fmt.Sprintf("%s: %s", p.Fault, p.Detail)
}

// Report is what [Verify] checked and found.
type Report struct {
	Origin   string
	From, To uint64 // the range of entries in the bundle
	Size     uint64 // the tree size of the bundle's checkpoint
	Root     []byte // its root
	Checked  uint64 // the size of the checkpoint the entries were checked against
	Entries  uint64 // entries read
	// Witnesses is how many distinct witnesses cosigned the checked checkpoint.
	Witnesses int
	Problems  []*Problem // at most maxProblems, in the order found
}

// OK reports whether nothing is wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

const maxProblems = 100

func (r *Report) add(f Fault, index uint64, hasIndex bool, format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, &Problem{Fault: f, Index: index, HasIndex: hasIndex, Detail: fmt.Sprintf(format, args...)})
	}
}

func (r *Report) err() error {
	if len(r.Problems) == 0 {
		return nil
	}
	worst := r.Problems[0]
	for _, p := range r.Problems[1:] {
		if p.Fault < worst.Fault {
			worst = p
		}
	}
	return errs.E(errs.Op("audit.Verify"), errs.Integrity, worst)
}

// Verify checks an export bundle read from r with no network: the bundle's
// checkpoint must be signed with logKey; the entries must rebuild its root;
// and they must also rebuild the root of checkpointNote — the checkpoint the
// auditor saved earlier, which needs quorum cosignatures from witnessKeys —
// or of the bundle's own checkpoint if checkpointNote is nil. Entry times
// must not decrease.
//
// The Report lists every problem found (up to 100); the error is nil if
// there is none, an error wrapping the gravest *Problem otherwise, or an
// errs.Invalid error for bad keys.
func Verify(r io.Reader, checkpointNote []byte, logKey string, witnessKeys []string, quorum int) (Report, error) {
	const op errs.Op = "audit.Verify"
	var rep Report
	logV, err := note.NewVerifier(logKey)
	if err != nil {
		return rep, errs.E(op, errs.Invalid, fmt.Errorf("log key: %v", err))
	}
	var ws []note.Verifier
	for i, k := range witnessKeys {
		v, err := note.NewVerifier(k)
		if err != nil {
			return rep, errs.E(op, errs.Invalid, fmt.Errorf("witness key %d: %v", i, err))
		}
		ws = append(ws, v)
	}
	rep.Origin = logV.Name()

	var ref *log.Checkpoint
	if checkpointNote != nil {
		cp, n, err := VerifyCheckpoint(checkpointNote, logV, ws, quorum)
		rep.Witnesses = n
		switch {
		case errors.Is(err, ErrQuorum):
			rep.add(NoQuorum, 0, false, "the given checkpoint: %v", err)
		case err != nil:
			rep.add(BadSignature, 0, false, "the given checkpoint: %v", err)
			return rep, rep.err()
		}
		ref = cp
	}

	br, err := newBundleReader(r)
	if err != nil {
		rep.add(readFault(err), 0, false, "header: %v", err)
		return rep, rep.err()
	}
	h := &br.hdr
	rep.From, rep.To = h.from, h.to
	emb, n, err := VerifyCheckpoint(h.checkpoint, logV, ws, 0)
	if err != nil {
		rep.add(BadSignature, 0, false, "the bundle's checkpoint: %v", err)
		return rep, rep.err()
	}
	rep.Size, rep.Root = emb.Size, emb.Hash
	if ref == nil {
		ref, rep.Witnesses = emb, n
		if n < quorum {
			rep.add(NoQuorum, 0, false, "the bundle's checkpoint: %d of %d witness cosignatures", n, quorum)
		}
	}
	rep.Checked = ref.Size
	if ref.Size == emb.Size && !bytes.Equal(ref.Hash, emb.Hash) {
		rep.add(Fork, 0, false, "two checkpoints of size %d signed by the log with different roots", ref.Size)
		return rep, rep.err()
	}
	if h.from > h.to || h.to > emb.Size {
		rep.add(Malformed, 0, false, "range [%d, %d) does not fit checkpoint size %d", h.from, h.to, emb.Size)
		return rep, rep.err()
	}
	if len(h.prefix) != compact.RangeSize(0, h.from) || len(h.suffix) != compact.RangeSize(h.to, emb.Size) {
		rep.add(Malformed, 0, false, "range hashes do not match range [%d, %d) of %d", h.from, h.to, emb.Size)
		return rep, rep.err()
	}
	rng, err := factory.NewRange(0, h.from, h.prefix)
	if err != nil {
		rep.add(Malformed, 0, false, "prefix range: %v", err)
		return rep, rep.err()
	}
	var refRoot []byte
	if ref.Size == h.from {
		refRoot, _ = rootHash(rng)
	}

	hasher := rfc6962.DefaultHasher
	idx, extra := h.from, uint64(0)
	var prevWhen int64 = -1
	var readErr error
	for {
		leaf, hash, err := br.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		rep.Entries++
		if idx >= h.to {
			extra++
			continue
		}
		if !bytes.Equal(hasher.HashLeaf(leaf), hash) {
			rep.add(EntryModified, idx, true, "its bytes do not match the leaf hash the log recorded")
		} else if err := parseLeaf(leaf, nil); err != nil {
			rep.add(EntryMalformed, idx, true, "%v", err)
		} else {
			when := leafTime(leaf)
			if when < prevWhen {
				rep.add(OutOfOrder, idx, true, "time %d ms is before its predecessor's %d ms", when, prevWhen)
			}
			prevWhen = when
		}
		_ = rng.Append(hash, nil) // cannot fail on a range grown by Append
		idx++
		if idx == ref.Size {
			refRoot, _ = rootHash(rng)
		}
	}
	got := idx - h.from
	if readErr != nil {
		rep.add(readFault(readErr), idx, true, "the bundle ends after %d of %d entries: %v", got, h.to-h.from, readErr)
		return rep, rep.err()
	}
	if extra > 0 {
		rep.add(Extra, h.to, true, "%d entries beyond the declared range [%d, %d)", extra, h.from, h.to)
	}
	if got < h.to-h.from {
		rep.add(Missing, idx, true, "the range [%d, %d) holds only %d entries", h.from, h.to, got)
		return rep, rep.err()
	}
	suffix, err := factory.NewRange(h.to, emb.Size, h.suffix)
	if err == nil {
		err = rng.AppendRange(suffix, nil)
	}
	if err != nil {
		rep.add(Malformed, 0, false, "suffix range: %v", err)
		return rep, rep.err()
	}
	root, _ := rootHash(rng)
	if !bytes.Equal(root, emb.Hash) {
		rep.add(RootMismatch, 0, false, "the entries do not rebuild the root of the bundle's checkpoint (size %d)", emb.Size)
	}
	switch {
	case ref.Size == emb.Size:
		// Checked above: same root as the bundle's checkpoint.
	case ref.Size > emb.Size:
		rep.add(Truncated, emb.Size, true, "the log ends at size %d but the checkpoint has size %d", emb.Size, ref.Size)
	case ref.Size < h.from || ref.Size > h.to:
		rep.add(OutOfRange, 0, false, "checkpoint size %d is outside the exported range [%d, %d]", ref.Size, h.from, h.to)
	case !bytes.Equal(refRoot, ref.Hash) && bytes.Equal(root, emb.Hash):
		rep.add(Fork, 0, false, "the log signed size %d, which is not a prefix of the size %d it also signed", ref.Size, emb.Size)
	case !bytes.Equal(refRoot, ref.Hash):
		rep.add(RootMismatch, 0, false, "the entries do not rebuild the root of the checkpoint of size %d", ref.Size)
	}
	return rep, rep.err()
}

func readFault(err error) Fault {
	if errors.Is(err, errBundleTruncated) {
		return Truncated
	}
	return Malformed
}
