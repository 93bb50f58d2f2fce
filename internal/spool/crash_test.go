package spool

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// copyDir copies every file of src into dst (created).
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCrashTruncation simulates a crash at every byte of the append stream:
// for each length L, the segments are cut so that exactly L bytes of records
// reached the disk, with the state file as it was when the segment being
// written became the newest. Open must recover exactly the records written
// completely within L: a prefix, never more, never garbage.
func TestCrashTruncation(t *testing.T) {
	dir := fastDir(t)
	opts := Options{Dir: dir, SegmentBytes: 300, MaxBytes: 1 << 20}
	s := mustOpen(t, opts)
	readState := func() []byte {
		b, err := os.ReadFile(filepath.Join(dir, stateName))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	stateAt := map[uint64][]byte{1: readState()}
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 40
	for i := range n {
		p := make([]byte, rng.IntN(40))
		for j := range p {
			p[j] = byte(rng.IntN(256))
		}
		p = append(fmt.Appendf(nil, "%02d", i), p...)
		mustAppend(t, s, p)
		if seq := uint64(len(segFiles(t, dir))); stateAt[seq] == nil {
			stateAt[seq] = readState()
		}
	}
	recs := peekAll(t, s)
	mustClose(t, s)
	if len(recs) != n {
		t.Fatalf("%d records, want %d", len(recs), n)
	}
	var segs [][]byte
	for seq := uint64(1); ; seq++ {
		b, err := os.ReadFile(filepath.Join(dir, segName(seq)))
		if err != nil {
			break
		}
		segs = append(segs, b)
	}
	if len(segs) < 3 {
		t.Fatalf("only %d segments", len(segs))
	}
	total := 0
	for _, b := range segs {
		total += len(b)
	}

	for L := 0; L <= total; L++ {
		// Segment k (1-based) is being written; cut is its length.
		k, cut := 1, L
		for cut > len(segs[k-1]) {
			cut -= len(segs[k-1])
			k++
		}
		img := filepath.Join(fastDir(t), "img")
		if err := os.Mkdir(img, 0o700); err != nil {
			t.Fatal(err)
		}
		for seq := 1; seq <= k; seq++ {
			b := segs[seq-1]
			if seq == k {
				b = b[:cut]
			}
			if err := os.WriteFile(filepath.Join(img, segName(uint64(seq))), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(img, stateName), stateAt[uint64(k)], 0o600); err != nil {
			t.Fatal(err)
		}
		var want [][]byte
		for _, r := range recs {
			if r.Pos.Segment < uint64(k) || r.Pos.Segment == uint64(k) && r.Next.Offset <= int64(cut) {
				want = append(want, r.Payload)
			}
		}
		o := opts
		o.Dir = img
		c := mustOpen(t, o)
		got := peekAll(t, c)
		if len(got) != len(want) {
			t.Fatalf("L=%d: recovered %d records, want %d", L, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i].Payload, want[i]) {
				t.Fatalf("L=%d: record %d = %x, want %x", L, i, got[i].Payload, want[i])
			}
		}
		if st := c.Stats(); st.Appended != uint64(len(want)) || st.Dropped != 0 || st.Corrupt != 0 {
			t.Fatalf("L=%d: Stats = %+v, want Appended %d", L, st, len(want))
		}
		if len(want) > 0 {
			if last, ok := c.Last(); !ok || !bytes.Equal(last, want[len(want)-1]) {
				t.Fatalf("L=%d: Last = %x, %v", L, last, ok)
			}
		}
		if L%5 == 0 { // appending after recovery continues cleanly
			mustAppend(t, c, []byte("after"))
			mustClose(t, c)
			c = mustOpen(t, o)
			got := peekAll(t, c)
			if len(got) != len(want)+1 || string(got[len(got)-1].Payload) != "after" {
				t.Fatalf("L=%d: after append and reopen: %d records", L, len(got))
			}
		}
		mustClose(t, c)
	}
}

// corruptSpool writes 9 records of 40 bytes (3 a segment, 3 segments) and
// returns the directory and the records.
func corruptSpool(t *testing.T) (Options, []Record) {
	opts := Options{Dir: t.TempDir(), SegmentBytes: 200, MaxBytes: 1 << 20}
	s := mustOpen(t, opts)
	for i := range 9 {
		mustAppend(t, s, fmt.Appendf(nil, "%040d", i))
	}
	recs := peekAll(t, s)
	mustClose(t, s)
	if recs[8].Pos.Segment != 3 || recs[2].Pos.Segment != 1 || recs[3].Pos.Segment != 2 {
		t.Fatalf("unexpected layout: %v", recs)
	}
	return opts, recs
}

func flip(t *testing.T, dir string, pos Position, delta int64) {
	t.Helper()
	name := filepath.Join(dir, segName(pos.Segment))
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	b[pos.Offset+delta] ^= 0x40
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCorruption(t *testing.T) {
	tests := []struct {
		name    string
		rec     int   // record to damage
		delta   int64 // byte of it to flip
		want    []int // records delivered
		corrupt uint64
	}{
		{"payload mid older segment", 1, headerSize + 3, []int{0, 3, 4, 5, 6, 7, 8}, 2},
		{"length mid older segment", 1, 0, []int{0, 3, 4, 5, 6, 7, 8}, 1},
		{"first record of older segment", 3, headerSize, []int{0, 1, 2, 6, 7, 8}, 3},
		{"payload mid newest segment", 7, headerSize, []int{0, 1, 2, 3, 4, 5, 6}, 2},
		{"torn final record", 8, headerSize + 39, []int{0, 1, 2, 3, 4, 5, 6, 7}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, recs := corruptSpool(t)
			flip(t, opts.Dir, recs[tt.rec].Pos, tt.delta)
			for round := range 2 { // counted once, persisted
				s := mustOpen(t, opts)
				var got []int
				for _, r := range peekAll(t, s) {
					i, _ := strconv.Atoi(string(r.Payload))
					got = append(got, i)
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("round %d: delivered %v, want %v", round, got, tt.want)
				}
				st := s.Stats()
				if st.Corrupt != tt.corrupt || st.Dropped != tt.corrupt || st.Appended != 9 {
					t.Fatalf("round %d: Stats = %+v, want Corrupt %d", round, st, tt.corrupt)
				}
				mustClose(t, s)
			}
		})
	}
}

// TestHelperProcess is the child of TestKill: it appends numbered records
// until it is killed, printing each number after Append returned nil.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("SPOOL_KILL_DIR")
	if dir == "" {
		t.Skip("helper process for TestKill")
	}
	s, err := Open(Options{Dir: dir, SegmentBytes: 2048, MaxBytes: 1 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	next := 0
	if last, ok := s.Last(); ok {
		n, err := killSeq(last)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		next = n + 1
	}
	for i := next; ; i++ {
		if err := s.Append(killPayload(i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stdout, "%d\n", i)
	}
}

func killPayload(i int) []byte {
	return fmt.Appendf(nil, "seq=%08d;%s", i, strings.Repeat("x", i%300))
}

func killSeq(p []byte) (int, error) {
	s, pad, ok := strings.Cut(string(p), ";")
	n, err := strconv.Atoi(strings.TrimPrefix(s, "seq="))
	if !ok || err != nil || !strings.HasPrefix(s, "seq=") || pad != strings.Repeat("x", n%300) {
		return 0, fmt.Errorf("garbage record %q", p)
	}
	return n, nil
}

// TestKill kills a child appending with SyncAlways at random moments and
// checks that every record it reported appended survives, in order, once.
func TestKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes")
	}
	dir := t.TempDir()
	acked := -1  // the highest acknowledged number
	printed := 0 // numbers printed so far: 0..printed-1
	start := time.Now()
	for iter := 0; iter < 5 && time.Since(start) < 8*time.Second; iter++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), "SPOOL_KILL_DIR="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var (
			mu    sync.Mutex
			nums  []int
			first = make(chan struct{})
			done  = make(chan struct{})
		)
		go func() {
			defer close(done)
			r := bufio.NewReader(out)
			var once sync.Once
			for {
				line, err := r.ReadString('\n')
				if err != nil { // a line cut by the kill has no newline: ignore it
					if err != io.EOF {
						t.Error(err)
					}
					once.Do(func() { close(first) })
					return
				}
				n, err := strconv.Atoi(strings.TrimSpace(line))
				if err != nil {
					continue // test framework output
				}
				mu.Lock()
				nums = append(nums, n)
				mu.Unlock()
				once.Do(func() { close(first) })
			}
		}()
		select {
		case <-first:
		case <-time.After(5 * time.Second):
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		<-done
		_ = cmd.Wait()
		if len(nums) == 0 {
			t.Fatalf("iteration %d: child printed nothing; stderr: %s", iter, stderr.String())
		}
		for i, n := range nums {
			if n != printed+i {
				t.Fatalf("iteration %d: child printed %d, want %d", iter, n, printed+i)
			}
		}
		printed += len(nums)

		s := mustOpen(t, Options{Dir: dir, SegmentBytes: 2048, MaxBytes: 1 << 20})
		recs := peekAll(t, s)
		got := make([]int, len(recs))
		for i, r := range recs {
			n, err := killSeq(r.Payload)
			if err != nil {
				t.Fatalf("iteration %d: %v", iter, err)
			}
			if n != acked+1+i {
				t.Fatalf("iteration %d: record %d is %d, want %d", iter, i, n, acked+1+i)
			}
			got[i] = n
		}
		// Everything printed is there; at most one more (appended, killed before printing).
		if len(got) == 0 || got[len(got)-1] < printed-1 || got[len(got)-1] > printed {
			t.Fatalf("iteration %d: recovered %d..%v, child printed up to %d", iter, acked+1, got[len(got)-1:], printed-1)
		}
		printed = got[len(got)-1] + 1
		if st := s.Stats(); st.Appended != uint64(printed) || st.Corrupt != 0 {
			t.Fatalf("iteration %d: Stats = %+v, want Appended %d", iter, st, printed)
		}
		half := recs[len(recs)/2]
		if err := s.Ack(half.Pos); err != nil {
			t.Fatal(err)
		}
		acked = acked + 1 + len(recs)/2
		mustClose(t, s)
		t.Logf("iteration %d: child appended %d records, %d unacked", iter, len(nums), len(recs))
	}
}
