package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// hostile is a Source that serves whatever the test tells it to.
type hostile struct {
	cp    []byte
	proof func(size1, size2 uint64) ([][]byte, error)
}

func (h *hostile) Checkpoint(context.Context) ([]byte, error) { return h.cp, nil }
func (h *hostile) ConsistencyProof(_ context.Context, s1, s2 uint64) ([][]byte, error) {
	return h.proof(s1, s2)
}

// signCheckpoint signs an arbitrary checkpoint body with signer.
func signCheckpoint(t testing.TB, s note.Signer, origin string, size uint64, root []byte) []byte {
	t.Helper()
	b, err := note.Sign(&note.Note{Text: string(log.Checkpoint{Origin: origin, Size: size, Hash: root}.Marshal())}, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWitnessHostileServer(t *testing.T) {
	ctx := context.Background()
	logS, logV, _ := testKey(t, testOrigin, 1)
	otherS, _, _ := testKey(t, testOrigin, 9) // same name, other key
	witS, witV, _ := testKey(t, "witness.example/w1", 2)

	honest := openTestLog(t, NewMemoryStorage(), 1)
	fill(t, honest, 0, 10)
	cp10, _ := honest.Sign(ctx)
	fill(t, honest, 10, 10)
	cp20, _ := honest.Sign(ctx)
	fill(t, honest, 20, 5)
	cp25, _ := honest.Sign(ctx)
	// A fork: same key, same first 9 entries, then different ones.
	forked := openTestLog(t, NewMemoryStorage(), 1)
	fill(t, forked, 0, 9)
	fill(t, forked, 100, 16)
	fork25, _ := forked.Sign(ctx)
	fill(t, forked, 200, 5)
	fork30, _ := forked.Sign(ctx)
	c10, _, _ := VerifyCheckpoint(cp10, logV, nil, 0)
	c25, _, _ := VerifyCheckpoint(cp25, logV, nil, 0)

	realProof := func(s1, s2 uint64) ([][]byte, error) { return honest.ConsistencyProof(ctx, s1, s2) }
	forkProof := func(s1, s2 uint64) ([][]byte, error) { return forked.ConsistencyProof(ctx, s1, s2) }
	flip := func(s1, s2 uint64) ([][]byte, error) {
		p, err := honest.ConsistencyProof(ctx, s1, s2)
		if len(p) > 0 {
			p[len(p)-1] = bytes.Clone(p[len(p)-1])
			p[len(p)-1][0] ^= 1
		}
		return p, err
	}
	drop := func(s1, s2 uint64) ([][]byte, error) {
		p, err := honest.ConsistencyProof(ctx, s1, s2)
		return p[:len(p)-1], err
	}
	extra := func(s1, s2 uint64) ([][]byte, error) {
		p, err := honest.ConsistencyProof(ctx, s1, s2)
		return append(p, make([]byte, 32)), err
	}
	wrongSizes := func(s1, s2 uint64) ([][]byte, error) { return honest.ConsistencyProof(ctx, s1, s2-1) }
	// A server that answers for the tree it has, whatever was asked.
	clamped := func(s1, s2 uint64) ([][]byte, error) { return honest.ConsistencyProof(ctx, s1, min(s2, 25)) }

	tests := []struct {
		name  string
		cp    []byte
		proof func(s1, s2 uint64) ([][]byte, error)
		want  error
	}{
		{"swapped log key", signCheckpoint(t, otherS, testOrigin, c25.Size, c25.Hash), realProof, ErrSignature},
		{"unsigned", []byte(log.Checkpoint{Origin: testOrigin, Size: 25, Hash: c25.Hash}.Marshal()), realProof, ErrSignature},
		{"other origin", signCheckpoint(t, logS, "evil.example/audit", c25.Size, c25.Hash), realProof, ErrSignature},
		{"rolled back", cp10, realProof, ErrRollback},
		{"fork of same size", fork25[:], realProof, nil},
		{"fork, its own proof", fork30, forkProof, ErrProof},
		{"fork, honest proof", fork30, clamped, ErrProof},
		{"forged proof: flipped hash", cp25, flip, ErrProof},
		{"forged proof: dropped hash", cp25, drop, ErrProof},
		{"forged proof: extra hash", cp25, extra, ErrProof},
		{"proof for other sizes", cp25, wrongSizes, ErrProof},
		{"wrong tree size", signCheckpoint(t, logS, testOrigin, 40, c25.Hash), clamped, ErrProof},
		{"size below the last seen", signCheckpoint(t, logS, testOrigin, 19, c25.Hash), realProof, ErrRollback},
		{"short root", signCheckpoint(t, logS, testOrigin, 25, c25.Hash[:31]), realProof, ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "witness-state")
			src := &hostile{cp: cp20, proof: realProof}
			w, err := NewWitness(WitnessConfig{Log: logV, Signer: witS, StatePath: state, Source: src})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Update(ctx); err != nil { // trust on first use: size 20
				t.Fatal(err)
			}
			before, _ := os.ReadFile(state)
			src.cp, src.proof = tt.cp, tt.proof
			_, err = w.Update(ctx)
			want := tt.want
			if tt.name == "fork of same size" {
				// fork25 vs honest 20: not a prefix.
				want = ErrProof
			}
			if !errors.Is(err, want) {
				t.Fatalf("Update: got %v, want %v", err, want)
			}
			if after, _ := os.ReadFile(state); !bytes.Equal(before, after) {
				t.Fatal("state changed after a rejected checkpoint")
			}
			// The honest log still goes through.
			src.cp, src.proof = cp25, realProof
			cos, err := w.Update(ctx)
			if err != nil {
				t.Fatalf("honest checkpoint after attack: %v", err)
			}
			if _, n, err := VerifyCheckpoint(cos, logV, []note.Verifier{witV}, 1); err != nil || n != 1 {
				t.Fatalf("cosigned: %d %v", n, err)
			}
		})
	}

	t.Run("same size, different root", func(t *testing.T) {
		state := filepath.Join(t.TempDir(), "witness-state")
		src := &hostile{cp: cp25, proof: realProof}
		w, _ := NewWitness(WitnessConfig{Log: logV, Signer: witS, StatePath: state, Source: src})
		if _, err := w.Update(ctx); err != nil {
			t.Fatal(err)
		}
		src.cp = fork25
		if _, err := w.Update(ctx); !errors.Is(err, ErrFork) {
			t.Fatalf("got %v, want ErrFork", err)
		}
		if got, _ := w.Latest(); got.Size != 25 || !bytes.Equal(got.Hash, c25.Hash) {
			t.Fatal("state moved to the fork")
		}
		_ = c10
	})

	t.Run("state file signed by another key", func(t *testing.T) {
		state := filepath.Join(t.TempDir(), "witness-state")
		os.WriteFile(state, signCheckpoint(t, otherS, testOrigin, 1, c25.Hash), 0o600)
		if _, err := NewWitness(WitnessConfig{Log: logV, Signer: witS, StatePath: state, Source: &hostile{}}); err == nil {
			t.Fatal("tampered state accepted")
		}
	})
}

func TestQuorum(t *testing.T) {
	ctx := context.Background()
	logS, logV, _ := testKey(t, testOrigin, 1)
	l := openTestLog(t, NewMemoryStorage(), 1)
	fill(t, l, 0, 5)
	cp, _ := l.Sign(ctx)
	var ws []note.Verifier
	var cosigned [][]byte
	for i, name := range []string{"w1.example", "w2.example", "w3.example"} {
		s, v, _ := testKey(t, name, byte(10+i))
		ws = append(ws, v)
		w, err := NewWitness(WitnessConfig{Log: logV, Signer: s, StatePath: filepath.Join(t.TempDir(), "state"), Source: l})
		if err != nil {
			t.Fatal(err)
		}
		c, err := w.Update(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cosigned = append(cosigned, c)
	}
	strangerS, _, _ := testKey(t, "stranger.example", 20)
	stranger, _ := note.Sign(mustOpen(t, cp, logV), strangerS)

	two, err := MergeCosignatures(cp, logV, ws, cosigned[0], cosigned[1], cosigned[1], stranger)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := MergeCosignatures(cp, logV, ws, cosigned...)
	// A cosignature that claims to be w1's but is not.
	forgedW1 := bytes.Replace(cosigned[0], []byte("— w1.example "), []byte("— w1.example "), 1)
	i := bytes.LastIndex(forgedW1, []byte("— w1.example "))
	forgedW1 = append([]byte{}, forgedW1...)
	forgedW1[len(forgedW1)-3] ^= 1
	_ = i

	tests := []struct {
		name    string
		note    []byte
		ws      []note.Verifier
		quorum  int
		want    error
		wantWit int
	}{
		{"no witnesses needed", cp, ws, 0, nil, 0},
		{"one of two", cosigned[0], ws, 2, ErrQuorum, 1},
		{"two of two, duplicates and strangers ignored", two, ws, 2, nil, 2},
		{"two of three", two, ws, 3, ErrQuorum, 2},
		{"three of three", all, ws, 3, nil, 3},
		{"forged cosignature", forgedW1, ws, 1, ErrSignature, 0},
		{"witness list holds the log key", all, append([]note.Verifier{logV}, ws...), 1, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, n, err := VerifyCheckpoint(tt.note, logV, tt.ws, tt.quorum)
			if tt.name == "witness list holds the log key" {
				if err == nil {
					t.Fatal("log key accepted as a witness")
				}
				return
			}
			if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if err == nil && n != tt.wantWit {
				t.Fatalf("witnesses %d, want %d", n, tt.wantWit)
			}
		})
	}
	_ = logS
}

func mustOpen(t testing.TB, msg []byte, v note.Verifier) *note.Note {
	t.Helper()
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestInclusionHostile: forged inclusion proofs are rejected.
func TestInclusionHostile(t *testing.T) {
	ctx := context.Background()
	l := openTestLog(t, NewMemoryStorage(), 1)
	fill(t, l, 0, 300)
	_, v, _ := testKey(t, testOrigin, 1)
	signed, _ := l.Sign(ctx)
	cp, _, _ := VerifyCheckpoint(signed, v, nil, 0)
	const idx = 123
	leaves, _ := l.Leaves(ctx, 0, 300)
	good, _ := l.InclusionProof(ctx, idx, 300)
	if err := VerifyInclusion(leaves[idx], idx, 300, good, cp.Hash); err != nil {
		t.Fatal(err)
	}
	type forged struct {
		name  string
		leaf  []byte
		index uint64
		size  uint64
		proof [][]byte
		root  []byte
	}
	var tests []forged
	for i := range good {
		p := cloneProof(good)
		p[i][7] ^= 0x40
		tests = append(tests, forged{"flipped hash", leaves[idx], idx, 300, p, cp.Hash})
	}
	other, _ := l.InclusionProof(ctx, idx+1, 300)
	small, _ := l.InclusionProof(ctx, idx, 200)
	tests = append(tests,
		forged{"other leaf", leaves[idx+1], idx, 300, good, cp.Hash},
		forged{"other index", leaves[idx], idx + 1, 300, good, cp.Hash},
		forged{"other leaf's proof", leaves[idx], idx, 300, other, cp.Hash},
		// The size must come from the signed checkpoint, with its root.
		forged{"wrong tree size", leaves[idx], idx, 256, good, cp.Hash},
		forged{"proof for a smaller tree", leaves[idx], idx, 300, small, cp.Hash},
		forged{"dropped hash", leaves[idx], idx, 300, good[:len(good)-1], cp.Hash},
		forged{"extra hash", leaves[idx], idx, 300, append(cloneProof(good), make([]byte, 32)), cp.Hash},
		forged{"empty proof", leaves[idx], idx, 300, nil, cp.Hash},
		forged{"index beyond size", leaves[idx], 300, 300, good, cp.Hash},
		forged{"other root", leaves[idx], idx, 300, good, make([]byte, 32)},
	)
	for _, tt := range tests {
		if err := VerifyInclusion(tt.leaf, tt.index, tt.size, tt.proof, tt.root); !errors.Is(err, ErrProof) {
			t.Errorf("%s: got %v, want ErrProof", tt.name, err)
		}
	}
}

func cloneProof(p [][]byte) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = bytes.Clone(p[i])
	}
	return out
}
