package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/errs"
)

func openFile(t testing.TB, dir string) *FileStorage {
	t.Helper()
	s, err := OpenFileStorage(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestStorageBackends runs the same contract over every Storage.
func TestStorageBackends(t *testing.T) {
	ctx := context.Background()
	for name, open := range map[string]func(t *testing.T) Storage{
		"memory": func(*testing.T) Storage { return NewMemoryStorage() },
		"file":   func(t *testing.T) Storage { return openFile(t, t.TempDir()) },
	} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			if cp, err := st.LatestCheckpoint(ctx); err != nil || cp != nil {
				t.Fatalf("fresh checkpoint: %q %v", cp, err)
			}
			var want [][]byte
			for batch := range 5 {
				var leaves [][]byte
				for i := range 100*batch + 1 {
					leaves = append(leaves, []byte(fmt.Sprintf("leaf-%d-%d", batch, i)))
				}
				first, err := st.Append(ctx, leaves)
				if err != nil || first != uint64(len(want)) {
					t.Fatalf("Append: %d %v", first, err)
				}
				want = append(want, leaves...)
			}
			if n, _ := st.Size(ctx); n != uint64(len(want)) {
				t.Fatalf("size %d, want %d", n, len(want))
			}
			for _, r := range [][2]uint64{{0, 0}, {0, 1}, {255, 257}, {300, uint64(len(want))}, {0, uint64(len(want))}} {
				got, err := st.Leaves(ctx, r[0], r[1])
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != int(r[1]-r[0]) {
					t.Fatalf("Leaves%v: %d leaves", r, len(got))
				}
				for i := range got {
					if !bytes.Equal(got[i], want[r[0]+uint64(i)]) {
						t.Fatalf("Leaves%v[%d] = %q", r, i, got[i])
					}
				}
			}
			if _, err := st.Leaves(ctx, 0, uint64(len(want))+1); err == nil {
				t.Error("range beyond size accepted")
			}
			st.StoreCheckpoint(ctx, []byte("cp1"))
			st.StoreCheckpoint(ctx, []byte("cp2"))
			if cp, _ := st.LatestCheckpoint(ctx); string(cp) != "cp2" {
				t.Errorf("checkpoint %q", cp)
			}
		})
	}
}

func TestFileStorageRecovery(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		t.Run(fmt.Sprintf("buffered=%v", buffered), func(t *testing.T) {
			defer func(old bool) { bufferedAppends = old }(bufferedAppends)
			bufferedAppends = buffered
			testFileStorageRecovery(t)
		})
	}
}

func testFileStorageRecovery(t *testing.T) {
	ctx := context.Background()
	// mk writes 10 records and returns the directory and the offset after
	// the last (the file may be longer: preallocated zeros).
	mk := func(t *testing.T) (string, int64) {
		dir := t.TempDir()
		s := openFile(t, dir)
		for i := range 10 {
			s.Append(ctx, [][]byte{[]byte(fmt.Sprintf("leaf-%d", i))})
		}
		if bufferedAppends != (s.direct == nil) {
			t.Logf("direct I/O unavailable here: testing buffered appends")
		}
		end := s.end
		s.Close()
		return dir, end
	}
	tests := []struct {
		name      string
		damage    func(path string, end int64)
		wantSize  uint64
		wantError bool
	}{
		{"intact", func(string, int64) {}, 10, false},
		{"torn length", func(p string, end int64) { writeAt(p, end, []byte{0, 0}) }, 10, false},
		{"torn length, nonzero", func(p string, end int64) { writeAt(p, end, []byte{0, 7}) }, 10, false},
		{"torn record", func(p string, end int64) { writeAt(p, end, []byte{0, 0, 0, 9, 'x', 'y'}) }, 10, false},
		{"torn checksum", func(p string, end int64) { writeAt(p, end, []byte{0, 0, 0, 1, 'x', 1, 2, 3, 4}) }, 10, false},
		{"zeroed tail", func(p string, end int64) { writeAt(p, end, make([]byte, 100)) }, 10, false},
		{"last record cut", func(p string, end int64) { os.Truncate(p, end-3) }, 9, false},
		{"damage after a torn record", func(p string, end int64) {
			writeAt(p, end, []byte{0, 0, 0, 1, 'x', 1, 2, 3, 4})
			writeAt(p, end+5000, []byte{1})
		}, 0, true},
		{"record after zeros", func(p string, end int64) { writeAt(p, end+64, []byte{0, 0, 0, 1, 'x', 1, 2, 3, 4}) }, 0, true},
		{"corrupt middle", func(p string, _ int64) { flipAt(p, int64(len(leavesMagic))+30) }, 0, true},
		{"bad magic", func(p string, _ int64) { flipAt(p, 0) }, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, end := mk(t)
			tt.damage(filepath.Join(dir, "leaves"), end)
			s, err := OpenFileStorage(dir)
			if tt.wantError {
				if !errs.Is(errs.Integrity, err) {
					t.Fatalf("got %v, want an integrity error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if n, _ := s.Size(ctx); n != tt.wantSize {
				t.Fatalf("size %d, want %d", n, tt.wantSize)
			}
			// Appends continue cleanly after the cut, and survive a reopen.
			for i := range 3 {
				if first, err := s.Append(ctx, [][]byte{[]byte("after")}); err != nil || first != tt.wantSize+uint64(i) {
					t.Fatalf("append after recovery: %d %v", first, err)
				}
			}
			s.Close()
			s = openFile(t, dir)
			if n, _ := s.Size(ctx); n != tt.wantSize+3 || s.Truncated != 0 {
				t.Fatalf("after reopening: size %d (want %d), %d bytes cut", n, tt.wantSize+3, s.Truncated)
			}
			leaves, err := s.Leaves(ctx, 0, tt.wantSize+3)
			if err != nil || string(leaves[tt.wantSize+2]) != "after" {
				t.Fatalf("leaves after reopening: %v", err)
			}
		})
	}
}

// TestFileStorageManyBlocks appends batches of every size across block and
// preallocation boundaries and reads them back, before and after reopening.
func TestFileStorageManyBlocks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openFile(t, dir)
	t.Logf("direct I/O: %v", s.direct != nil)
	rnd := rand.New(rand.NewPCG(1, 2))
	var want [][]byte
	for total := 0; total < 3*preallocChunk; {
		batch, size := randomBatch(rnd, 40)
		total += size
		if first, err := s.Append(ctx, batch); err != nil || first != uint64(len(want)) {
			t.Fatalf("append at %d: %d %v", len(want), first, err)
		}
		want = append(want, batch...)
	}
	checkLeaves(t, s, want)
	s.Close()
	s = openFile(t, dir)
	if s.Truncated != 0 {
		t.Fatalf("%d bytes cut from a cleanly closed log", s.Truncated)
	}
	checkLeaves(t, s, want)
}

func writeAt(p string, off int64, b []byte) {
	f, _ := os.OpenFile(p, os.O_WRONLY, 0)
	f.WriteAt(b, off)
	f.Close()
}

func flipAt(p string, off int64) {
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0xff
	f.WriteAt(b, off)
	f.Close()
}

// TestKill9 re-executes the test binary as a child that appends through a
// Log on FileStorage and prints every acknowledged index; kills it with
// SIGKILL at a random moment; reopens; and checks that every acknowledged
// entry is there, with its content, and that the log verifies. Three
// rounds on the same directory.
func TestKill9(t *testing.T) {
	if dir := os.Getenv("CUSTOS_AUDIT_KILL9_DIR"); dir != "" {
		kill9Child(t, dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	ctx := context.Background()
	dir := t.TempDir()
	rnd := rand.New(rand.NewPCG(5, 9))
	acked := map[uint64]string{}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$", "-test.v")
		cmd.Env = append(os.Environ(), "CUSTOS_AUDIT_KILL9_DIR="+dir, fmt.Sprintf("CUSTOS_AUDIT_KILL9_ROUND=%d", round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		killAfter := 200 + rnd.IntN(3000)
		n := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 || f[0] != "ack" {
				continue
			}
			i, _ := strconv.ParseUint(f[1], 10, 64)
			acked[i] = f[2]
			if n++; n == killAfter {
				cmd.Process.Kill() // SIGKILL
			}
		}
		cmd.Wait()
		if n < killAfter {
			t.Fatalf("round %d: child stopped after %d acks", round, n)
		}

		st := openFile(t, dir)
		l := openTestLog(t, st, 1) // fails if the checkpoint and leaves disagree
		es, err := l.Entries(ctx, 0, l.Size())
		if err != nil {
			t.Fatal(err)
		}
		for i, req := range acked {
			if i >= uint64(len(es)) {
				t.Fatalf("round %d: acknowledged entry %d lost (log has %d)", round, i, len(es))
			}
			if string(es[i].Request) != req {
				t.Fatalf("round %d: entry %d is %s, acknowledged as %s", round, i, es[i].Request, req)
			}
		}
		if _, err := l.Sign(ctx); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := Export(ctx, &b, l, 0, l.Size()); err != nil {
			t.Fatal(err)
		}
		_, _, vkey := testKey(t, testOrigin, 1)
		if _, err := Verify(&b, nil, vkey, nil, 0); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		t.Logf("round %d: %d acknowledged so far, %d in the log, %d torn bytes cut", round, len(acked), len(es), st.Truncated)
		l.Close()
		st.Close()
	}
}

func kill9Child(t *testing.T, dir string) {
	ctx := context.Background()
	st, err := OpenFileStorage(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, v, _ := testKey(t, testOrigin, 1)
	l, err := Open(ctx, Config{Storage: st, Origin: testOrigin, Signer: s, Verifier: v, CheckpointInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	round := os.Getenv("CUSTOS_AUDIT_KILL9_ROUND")
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	// Round 0 appends from one goroutine, so that Begin starts each write
	// itself (asynchronous direct I/O); the others from eight, batched by
	// the sequencer.
	callers := 8
	if round == "0" {
		callers = 1
	}
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			for i := 0; ; i++ {
				e := testEntry(i)
				e.Request = RequestID(fmt.Sprintf("r%s-g%d-%d", round, g, i))
				n, err := l.Append(ctx, e)
				if err != nil {
					return
				}
				mu.Lock()
				fmt.Fprintf(w, "ack %d %s\n", n, e.Request)
				w.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestFileStorageStartAppend: a started append is invisible until
// finished, blocks other appends, and interleaves with plain appends
// across preallocation chunks; everything reads back after a reopen.
func TestFileStorageStartAppend(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		t.Run(fmt.Sprintf("buffered=%v", buffered), func(t *testing.T) {
			defer func(old bool) { bufferedAppends = old }(bufferedAppends)
			bufferedAppends = buffered
			ctx := context.Background()
			dir := t.TempDir()
			s := openFile(t, dir)
			t.Logf("direct I/O: %v, asynchronous: %v", s.direct != nil, s.aio != nil)
			if err := s.FinishAppend(); err == nil {
				t.Fatal("FinishAppend without a started append succeeded")
			}
			rnd := rand.New(rand.NewPCG(3, 4))
			var want [][]byte
			for total := 0; total < 2*preallocChunk+5000; {
				batch, size := randomBatch(rnd, 8)
				total += size
				if rnd.IntN(2) == 0 {
					if first, err := s.Append(ctx, batch); err != nil || first != uint64(len(want)) {
						t.Fatalf("append at %d: %d %v", len(want), first, err)
					}
					want = append(want, batch...)
					continue
				}
				first, err := s.StartAppend(batch)
				if s.aio == nil {
					if !errors.Is(err, errors.ErrUnsupported) {
						t.Fatalf("StartAppend without asynchronous I/O: %v", err)
					}
					if first, err = s.Append(ctx, batch); err != nil || first != uint64(len(want)) {
						t.Fatalf("append at %d: %d %v", len(want), first, err)
					}
					want = append(want, batch...)
					continue
				}
				if err != nil || first != uint64(len(want)) {
					t.Fatalf("start at %d: %d %v", len(want), first, err)
				}
				if _, err := s.Append(ctx, batch); err == nil {
					t.Fatal("Append while an append is in flight succeeded")
				}
				if _, err := s.StartAppend(batch); err == nil {
					t.Fatal("second StartAppend succeeded")
				}
				if err := s.FinishAppend(); err != nil {
					t.Fatal(err)
				}
				want = append(want, batch...)
				if n, _ := s.Size(ctx); n != uint64(len(want)) {
					t.Fatalf("size %d after finishing, want %d", n, len(want))
				}
			}
			checkLeaves(t, s, want)
			// A started append is finished by Close, and then on disk.
			last := [][]byte{[]byte("last")}
			_, err := s.StartAppend(last)
			if errors.Is(err, errors.ErrUnsupported) {
				_, err = s.Append(ctx, last)
			}
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			s = openFile(t, dir)
			if s.Truncated != 0 {
				t.Fatalf("%d bytes cut from a cleanly closed log", s.Truncated)
			}
			want = append(want, last...)
			checkLeaves(t, s, want)
		})
	}
}

// randomBatch returns 1 to max leaves of random bytes and their size on
// disk.
func randomBatch(rnd *rand.Rand, max int) ([][]byte, int) {
	batch := make([][]byte, 1+rnd.IntN(max))
	size := 0
	for i := range batch {
		batch[i] = make([]byte, 1+rnd.IntN(MaxLeafLen))
		for j := range batch[i] {
			batch[i][j] = byte(rnd.Uint32())
		}
		size += 8 + len(batch[i])
	}
	return batch, size
}

// checkLeaves fails t unless s holds exactly want.
func checkLeaves(t *testing.T, s *FileStorage, want [][]byte) {
	t.Helper()
	if n, _ := s.Size(context.Background()); n != uint64(len(want)) {
		t.Fatalf("size %d, want %d", n, len(want))
	}
	got, err := s.Leaves(context.Background(), 0, uint64(len(want)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("leaf %d differs", i)
		}
	}
}
