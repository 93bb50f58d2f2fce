package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// Source is where a witness fetches a log's state from: the hub's API, or a
// *Log in process. It is untrusted: everything it returns is verified.
type Source interface {
	// Checkpoint returns the log's latest signed checkpoint note.
	Checkpoint(ctx context.Context) ([]byte, error)
	// ConsistencyProof returns the proof that the tree of size1 is a prefix
	// of the tree of size2.
	ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error)
}

// WitnessConfig configures a [Witness].
type WitnessConfig struct {
	// Log verifies the log's checkpoint signatures; its name is the log's
	// origin. Must be non-nil.
	Log note.Verifier
	// Signer is the witness's own key, which cosigns. Must be non-nil.
	Signer note.Signer
	// StatePath is the file holding the last checkpoint this witness
	// accepted. Must be non-empty. If it does not exist, the first
	// checkpoint fetched is trusted (trust on first use).
	StatePath string
	// Source is where checkpoints and proofs come from. Must be non-nil.
	Source Source
}

// Witness checks that a log only ever grows — each checkpoint it accepts is
// consistent with the last — and cosigns what it accepted. It refuses
// rollbacks, forks, checkpoints not signed by the log's key and unprovable
// growth, and then keeps its state unchanged.
type Witness struct {
	cfg WitnessConfig
	mu  sync.Mutex
}

// NewWitness checks cfg and the state file.
func NewWitness(cfg WitnessConfig) (*Witness, error) {
	const op errs.Op = "audit.NewWitness"
	if cfg.Log == nil || cfg.Signer == nil || cfg.StatePath == "" || cfg.Source == nil {
		return nil, errs.E(op, errs.Invalid, "Log, Signer, StatePath and Source are required")
	}
	if cfg.Signer.Name() == cfg.Log.Name() && cfg.Signer.KeyHash() == cfg.Log.KeyHash() {
		return nil, errs.E(op, errs.Invalid, "the witness key is the log key")
	}
	w := &Witness{cfg: cfg}
	if _, err := w.last(); err != nil {
		return nil, errs.E(op, err)
	}
	return w, nil
}

// last returns the checkpoint the witness last accepted, or nil.
func (w *Witness) last() (*log.Checkpoint, error) {
	b, err := os.ReadFile(w.cfg.StatePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errs.E(errs.Unavailable, err)
	}
	cp, _, _, err := log.ParseCheckpoint(b, w.cfg.Log.Name(), w.cfg.Log)
	if err != nil {
		return nil, errs.E(errs.Integrity, fmt.Errorf("witness state %s: %v", w.cfg.StatePath, err))
	}
	return cp, nil
}

// Latest returns the checkpoint the witness last accepted, or nil.
func (w *Witness) Latest() (*log.Checkpoint, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last()
}

// Update fetches the latest checkpoint, checks it against the last one
// accepted, records it durably and returns it cosigned: the note with the
// witness's signature added. The hub gathers cosigned notes with
// [MergeCosignatures]. On any error the state is unchanged.
func (w *Witness) Update(ctx context.Context) ([]byte, error) {
	const op errs.Op = "audit.Witness.Update"
	w.mu.Lock()
	defer w.mu.Unlock()
	last, err := w.last()
	if err != nil {
		return nil, errs.E(op, err)
	}
	raw, err := w.cfg.Source.Checkpoint(ctx)
	if err != nil {
		return nil, errs.E(op, errs.Unavailable, err)
	}
	cp, _, n, err := log.ParseCheckpoint(raw, w.cfg.Log.Name(), w.cfg.Log)
	if err != nil {
		return nil, errs.E(op, errs.Integrity, fmt.Errorf("%w: %v", ErrSignature, err))
	}
	if len(cp.Hash) != 32 {
		return nil, errs.E(op, errs.Integrity, fmt.Errorf("%w: root of %d bytes", ErrSignature, len(cp.Hash)))
	}
	if last != nil {
		switch {
		case cp.Size < last.Size:
			return nil, errs.E(op, errs.Integrity, fmt.Errorf("%w: size %d after %d", ErrRollback, cp.Size, last.Size))
		case cp.Size == last.Size:
			if string(cp.Hash) != string(last.Hash) {
				return nil, errs.E(op, errs.Integrity, fmt.Errorf("%w: two roots for size %d", ErrFork, cp.Size))
			}
		default:
			p, err := w.cfg.Source.ConsistencyProof(ctx, last.Size, cp.Size)
			if err != nil {
				return nil, errs.E(op, errs.Unavailable, err)
			}
			if err := VerifyConsistency(last.Size, cp.Size, p, last.Hash, cp.Hash); err != nil {
				return nil, errs.E(op, errs.Integrity, fmt.Errorf("size %d is not shown consistent with %d: %w", cp.Size, last.Size, err))
			}
		}
	}
	// Record before cosigning, so that a crash can never let this witness
	// cosign a fork of something it already vouched for.
	if last == nil || cp.Size != last.Size {
		if err := writeFileAtomic(w.cfg.StatePath, raw); err != nil {
			return nil, errs.E(op, errs.Unavailable, err)
		}
	}
	out, err := note.Sign(n, w.cfg.Signer)
	if err != nil {
		return nil, errs.E(op, err)
	}
	return out, nil
}

// MergeCosignatures returns checkpoint with the signatures of the witnesses
// in witnessVerifiers gathered from the cosigned copies (each a witness's
// Update result). Copies of a different checkpoint, or carrying an invalid
// signature by a known key, are rejected.
func MergeCosignatures(checkpoint []byte, logVerifier note.Verifier, witnessVerifiers []note.Verifier, cosigned ...[]byte) ([]byte, error) {
	const op errs.Op = "audit.MergeCosignatures"
	known := note.VerifierList(append([]note.Verifier{logVerifier}, witnessVerifiers...)...)
	base, err := note.Open(checkpoint, known)
	if err != nil {
		return nil, errs.E(op, errs.Integrity, fmt.Errorf("%w: %v", ErrSignature, err))
	}
	have := map[note.Signature]bool{}
	for _, s := range base.Sigs {
		have[note.Signature{Name: s.Name, Hash: s.Hash}] = true
	}
	for i, c := range cosigned {
		n, err := note.Open(c, known)
		if err != nil {
			return nil, errs.E(op, errs.Integrity, fmt.Errorf("cosigned copy %d: %w: %v", i, ErrSignature, err))
		}
		if n.Text != base.Text {
			return nil, errs.E(op, errs.Integrity, fmt.Errorf("cosigned copy %d is of another checkpoint", i))
		}
		for _, s := range n.Sigs {
			k := note.Signature{Name: s.Name, Hash: s.Hash}
			if !have[k] {
				have[k] = true
				base.Sigs = append(base.Sigs, s)
			}
		}
	}
	base.UnverifiedSigs = nil
	out, err := note.Sign(base)
	if err != nil {
		return nil, errs.E(op, err)
	}
	return out, nil
}
