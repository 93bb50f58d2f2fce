package audit

import (
	"errors"
	"fmt"
	"io"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// GenerateKey returns a new Ed25519 note key pair named name (use the log's
// origin for a log key, the witness's own name for a witness key), reading
// randomness from rand. Keep skey secret; publish vkey.
func GenerateKey(rand io.Reader, name string) (skey, vkey string, err error) {
	return note.GenerateKey(rand, name)
}

// NewSigner and NewVerifier parse the keys GenerateKey returns.
func NewSigner(skey string) (note.Signer, error) { return note.NewSigner(skey) }

// NewVerifier parses a verifier key from GenerateKey.
func NewVerifier(vkey string) (note.Verifier, error) { return note.NewVerifier(vkey) }

// Errors from checking checkpoints and proofs. Each means the material
// offered is not what the log signed: reject it and keep the last good state.
var (
	// ErrSignature: the checkpoint is not signed by the log's key, or a
	// known key's signature is invalid.
	ErrSignature = errors.New("checkpoint signature invalid")
	// ErrQuorum: fewer witnesses cosigned than required.
	ErrQuorum = errors.New("too few witness cosignatures")
	// ErrProof: an inclusion or consistency proof does not verify.
	ErrProof = errors.New("proof does not verify")
	// ErrRollback: a checkpoint is smaller than one already seen.
	ErrRollback = errors.New("checkpoint rolled back")
	// ErrFork: two checkpoints of one size with different roots, or a larger
	// checkpoint not consistent with a smaller one — proof that the log
	// rewrote its history. Keep both checkpoints as evidence.
	ErrFork = errors.New("log forked")
)

// VerifyCheckpoint opens a checkpoint note: it must carry a valid signature
// of logVerifier, whose name is the log's origin, and valid cosignatures of
// at least quorum distinct witnesses among witnessVerifiers. Signatures by
// unknown keys are ignored. It returns the checkpoint and the number of
// witnesses that cosigned.
func VerifyCheckpoint(msg []byte, logVerifier note.Verifier, witnessVerifiers []note.Verifier, quorum int) (*log.Checkpoint, int, error) {
	const op errs.Op = "audit.VerifyCheckpoint"
	for _, w := range witnessVerifiers {
		if w.Name() == logVerifier.Name() && w.KeyHash() == logVerifier.KeyHash() {
			return nil, 0, errs.E(op, errs.Invalid, "a witness key is the log key")
		}
	}
	cp, _, n, err := log.ParseCheckpoint(msg, logVerifier.Name(), logVerifier, witnessVerifiers...)
	if err != nil {
		return nil, 0, errs.E(op, errs.Integrity, fmt.Errorf("%w: %v", ErrSignature, err))
	}
	if len(cp.Hash) != rfc6962.DefaultHasher.Size() {
		return nil, 0, errs.E(op, errs.Integrity, fmt.Errorf("%w: root of %d bytes", ErrSignature, len(cp.Hash)))
	}
	seen := map[string]bool{}
	for _, s := range n.Sigs {
		for _, w := range witnessVerifiers {
			if s.Name == w.Name() && s.Hash == w.KeyHash() {
				seen[fmt.Sprintf("%s+%08x", s.Name, s.Hash)] = true
			}
		}
	}
	if len(seen) < quorum {
		return cp, len(seen), errs.E(op, errs.Integrity, fmt.Errorf("%w: %d of %d required", ErrQuorum, len(seen), quorum))
	}
	return cp, len(seen), nil
}

// VerifyInclusion checks that leaf (an encoded entry) is entry index of the
// tree of size with root.
func VerifyInclusion(leaf []byte, index, size uint64, inclusion [][]byte, root []byte) error {
	h := rfc6962.DefaultHasher
	if err := proof.VerifyInclusion(h, index, size, h.HashLeaf(leaf), inclusion, root); err != nil {
		return errs.E(errs.Op("audit.VerifyInclusion"), errs.Integrity, fmt.Errorf("%w: %v", ErrProof, err))
	}
	return nil
}

// VerifyConsistency checks that the tree (size1, root1) is a prefix of the
// tree (size2, root2).
func VerifyConsistency(size1, size2 uint64, consistency [][]byte, root1, root2 []byte) error {
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, size1, size2, consistency, root1, root2); err != nil {
		return errs.E(errs.Op("audit.VerifyConsistency"), errs.Integrity, fmt.Errorf("%w: %v", ErrProof, err))
	}
	return nil
}
