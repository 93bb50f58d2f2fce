package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// rootOf computes the root of leaves independently of the Log.
func rootOf(t testing.TB, leaves [][]byte) []byte {
	t.Helper()
	r := factory.NewEmptyRange(0)
	for _, l := range leaves {
		if err := r.Append(rfc6962.DefaultHasher.HashLeaf(l), nil); err != nil {
			t.Fatal(err)
		}
	}
	root, err := rootHash(r)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestProofs checks every inclusion proof and every consistency proof of a
// log that crosses the cached level (so both the in-memory node hashes and
// the rehash from stored leaves are exercised).
func TestProofs(t *testing.T) {
	ctx := context.Background()
	l := openTestLog(t, NewMemoryStorage(), 1)
	const n = 4<<cachedLevel + 1<<8 + 37 // crosses the cached level and 2^8
	fill(t, l, 0, n)
	leaves, err := l.Leaves(ctx, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	roots := make([][]byte, n+1)
	for s := 0; s <= n; s++ {
		roots[s] = rootOf(t, leaves[:s])
	}
	for _, size := range []uint64{1, 2, 3, 7, 8, 255, 256, 257, 511, 512, 513, n} {
		for i := uint64(0); i < size; i++ {
			p, err := l.InclusionProof(ctx, i, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyInclusion(leaves[i], i, size, p, roots[size]); err != nil {
				t.Fatalf("inclusion %d in %d: %v", i, size, err)
			}
		}
	}
	for _, s1 := range []uint64{0, 1, 2, 5, 8, 100, 256, 300, 512, n} {
		for s2 := s1; s2 <= n; s2 += 37 {
			p, err := l.ConsistencyProof(ctx, s1, s2)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyConsistency(s1, s2, p, roots[s1], roots[s2]); err != nil {
				t.Fatalf("consistency %d -> %d: %v", s1, s2, err)
			}
		}
	}
	if _, err := l.InclusionProof(ctx, 0, n+1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("proof beyond the tree: got %v", err)
	}
	if _, err := l.InclusionProof(ctx, 5, 5); err == nil {
		t.Error("index == size accepted")
	}
	if _, err := l.ConsistencyProof(ctx, 5, 4); err == nil {
		t.Error("size1 > size2 accepted")
	}
}

func TestCheckpoint(t *testing.T) {
	ctx := context.Background()
	l := openTestLog(t, NewMemoryStorage(), 1)
	_, v, _ := testKey(t, testOrigin, 1)
	empty, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := VerifyCheckpoint(empty, v, nil, 0)
	if err != nil || cp.Size != 0 {
		t.Fatalf("empty log checkpoint: %v %v", cp, err)
	}
	fill(t, l, 0, 10)
	if again, _ := l.Checkpoint(ctx); string(again) != string(empty) {
		t.Error("Checkpoint signed without being asked")
	}
	signed, err := l.Sign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err = VerifyCheckpoint(signed, v, nil, 0)
	if err != nil || cp.Size != 10 || cp.Origin != testOrigin {
		t.Fatalf("checkpoint: %+v %v", cp, err)
	}
	leaves, _ := l.Leaves(ctx, 0, 10)
	if string(cp.Hash) != string(rootOf(t, leaves)) {
		t.Error("checkpoint root differs from the leaves' root")
	}
	if again, _ := l.Sign(ctx); string(again) != string(signed) {
		t.Error("re-signed an unchanged tree")
	}
}

func TestAppendStampsMonotonicTime(t *testing.T) {
	ctx := context.Background()
	l := openTestLog(t, NewMemoryStorage(), 1)
	e := testEntry(0)
	e.When = 1 << 50
	if _, err := l.Append(ctx, e); err != nil {
		t.Fatal(err)
	}
	fill(t, l, 1, 5)
	es, _ := l.Entries(ctx, 0, 6)
	for i := 1; i < len(es); i++ {
		if es[i].When < es[i-1].When {
			t.Fatalf("time decreases at %d", i)
		}
	}
	if es[0].When == 1<<50 {
		t.Error("caller's When kept")
	}
}

// faultyStorage fails Append on demand.
type faultyStorage struct {
	*MemoryStorage
	mu   sync.Mutex
	fail bool
}

func (f *faultyStorage) Append(ctx context.Context, leaves [][]byte) (uint64, error) {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return 0, errors.New("disk on fire")
	}
	return f.MemoryStorage.Append(ctx, leaves)
}

// TestFailClosed: when storage fails, Append fails, nothing is
// acknowledged, the tree does not move, and the log works again after.
func TestFailClosed(t *testing.T) {
	ctx := context.Background()
	st := &faultyStorage{MemoryStorage: NewMemoryStorage()}
	l := openTestLog(t, st, 1)
	fill(t, l, 0, 3)
	before, _ := l.Sign(ctx)
	st.fail = true
	for i := range 5 {
		if _, err := l.Append(ctx, testEntry(3+i)); err == nil {
			t.Fatal("Append succeeded while storage fails")
		} else if errs.KindOf(err) != errs.Other && errs.KindOf(err) != errs.Unavailable {
			t.Logf("kind %v", errs.KindOf(err))
		}
	}
	if l.Size() != 3 {
		t.Fatalf("size %d after failed appends", l.Size())
	}
	if after, _ := l.Sign(ctx); string(after) != string(before) {
		t.Fatal("checkpoint moved after failed appends")
	}
	st.fail = false
	if i, err := l.Append(ctx, testEntry(9)); err != nil || i != 3 {
		t.Fatalf("after recovery: %d %v", i, err)
	}
}

func TestAppendRejects(t *testing.T) {
	ctx := context.Background()
	l := openTestLog(t, NewMemoryStorage(), 1)
	bad := testEntry(0)
	bad.Principal = ""
	if _, err := l.Append(ctx, bad); !errs.Is(errs.Invalid, err) {
		t.Errorf("invalid entry: %v", err)
	}
	l.Close()
	if _, err := l.Append(ctx, testEntry(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// TestConcurrentAppends: indexes are unique and dense, each goroutine's
// entries land where Append said.
func TestConcurrentAppends(t *testing.T) {
	ctx := context.Background()
	l := openTestLog(t, NewMemoryStorage(), 1)
	const workers, per = 16, 200
	idx := make([][]uint64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				n, err := l.Append(ctx, testEntry(w*per+i))
				if err != nil {
					t.Error(err)
					return
				}
				idx[w] = append(idx[w], n)
			}
		})
	}
	wg.Wait()
	es, err := l.Entries(ctx, 0, workers*per)
	if err != nil {
		t.Fatal(err)
	}
	for w := range workers {
		for i, n := range idx[w] {
			if want := testEntry(w*per + i).Request; es[n].Request != want {
				t.Fatalf("index %d holds %s, want %s", n, es[n].Request, want)
			}
		}
	}
}

// TestOpenDetectsTampering: a log reopened over storage that lost or
// rewrote checkpointed entries refuses to start.
func TestOpenDetectsTampering(t *testing.T) {
	ctx := context.Background()
	s, v, _ := testKey(t, testOrigin, 1)
	cfg := func(st Storage) Config {
		return Config{Storage: st, Origin: testOrigin, Signer: s, Verifier: v, Now: stepClock(), CheckpointInterval: -1}
	}
	src := NewMemoryStorage()
	l, err := Open(ctx, cfg(src))
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l, 0, 20)
	cp, _ := l.Sign(ctx)
	l.Close()
	leaves, _ := src.Leaves(ctx, 0, 20)

	rewritten := NewMemoryStorage()
	other, _ := testEntry(99).MarshalBinary()
	rewritten.Append(ctx, append(append(append([][]byte{}, leaves[:7]...), other), leaves[8:]...))
	rewritten.StoreCheckpoint(ctx, cp)
	lost := NewMemoryStorage()
	lost.Append(ctx, leaves[:19])
	lost.StoreCheckpoint(ctx, cp)
	good := NewMemoryStorage()
	good.Append(ctx, leaves)
	good.StoreCheckpoint(ctx, cp)

	for name, st := range map[string]Storage{"rewritten": rewritten, "lost": lost} {
		if _, err := Open(ctx, cfg(st)); !errs.Is(errs.Integrity, err) {
			t.Errorf("%s: Open: %v, want an integrity error", name, err)
		}
	}
	l2, err := Open(ctx, cfg(good))
	if err != nil {
		t.Fatalf("intact storage: %v", err)
	}
	l2.Close()
	_ = compact.RangeSize
}

// TestBeginWait: Begin queues, Wait gives the verdict (the same on a second
// call); a Pending from nowhere fails closed; a closed log refuses.
func TestBeginWait(t *testing.T) {
	ctx := context.Background()
	l := openTestLog(t, NewMemoryStorage(), 1)
	p, err := l.Begin(ctx, testEntry(0), testEntry(1))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if i, err := p.Wait(); err != nil || i != 0 {
			t.Fatalf("Wait: %d %v", i, err)
		}
	}
	if l.Size() != 2 {
		t.Fatalf("size %d", l.Size())
	}
	if _, err := (Pending{}).Wait(); !errs.Is(errs.Unavailable, err) {
		t.Fatalf("zero Pending: %v, want unavailable", err)
	}
	if _, err := l.Begin(ctx); !errs.Is(errs.Invalid, err) {
		t.Fatalf("empty Begin: %v", err)
	}
	l.Close()
	if _, err := l.Begin(ctx, testEntry(2)); !errs.Is(errs.Unavailable, err) {
		t.Fatalf("Begin on a closed log: %v", err)
	}
	if _, err := Discarded().Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestLogStartedAppends mixes appends Begin starts itself (one caller,
// nothing else under way) with sequenced ones from concurrent callers, on
// a FileStorage: every acknowledged index holds its entry, a Pending never
// waited for is still committed, and the log verifies after a reopen.
func TestLogStartedAppends(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openFile(t, dir)
	l := openTestLog(t, st, 1)
	acked := map[uint64]RequestID{}
	var mu sync.Mutex
	ack := func(i uint64, e Entry) {
		mu.Lock()
		acked[i] = e.Request
		mu.Unlock()
	}
	// Alone: Begin starts the write, the caller works, Wait finishes it.
	for i := range 50 {
		e := testEntry(i)
		e.Request = RequestID(fmt.Sprintf("lone-%d", i))
		p, err := l.Begin(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if p.l == nil && st.aio != nil {
			t.Fatal("a lone Begin left its append to the sequencer")
		}
		if i%10 == 3 {
			continue // never waited for: the next append finishes it
		}
		n, err := p.Wait()
		if err != nil {
			t.Fatal(err)
		}
		ack(n, e)
	}
	// Together.
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for i := range 80 {
				e := testEntry(i)
				e.Request = RequestID(fmt.Sprintf("g%d-%d", g, i))
				p, err := l.Begin(ctx, e)
				if err != nil {
					t.Error(err)
					return
				}
				n, err := p.Wait()
				if err != nil {
					t.Error(err)
					return
				}
				ack(n, e)
			}
		})
	}
	wg.Wait()
	if want := uint64(50 + 6*80); l.Size() != want {
		t.Fatalf("log has %d entries, want %d", l.Size(), want)
	}
	if _, err := l.Sign(ctx); err != nil {
		t.Fatal(err)
	}
	l.Close()
	st.Close()

	st = openFile(t, dir)
	l = openTestLog(t, st, 1) // fails if the checkpoint and leaves disagree
	es, err := l.Entries(ctx, 0, l.Size())
	if err != nil {
		t.Fatal(err)
	}
	for i, req := range acked {
		if es[i].Request != req {
			t.Fatalf("entry %d is %s, acknowledged as %s", i, es[i].Request, req)
		}
	}
	for i := 1; i < len(es); i++ {
		if es[i].When < es[i-1].When {
			t.Fatalf("entry %d is older than entry %d", i, i-1)
		}
	}
	var b bytes.Buffer
	if err := Export(ctx, &b, l, 0, l.Size()); err != nil {
		t.Fatal(err)
	}
	_, _, vkey := testKey(t, testOrigin, 1)
	if _, err := Verify(&b, nil, vkey, nil, 0); err != nil {
		t.Fatal(err)
	}
}
