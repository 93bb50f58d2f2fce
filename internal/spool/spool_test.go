package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// fastDir returns a temporary directory on tmpfs when there is one: the
// tests that open a spool hundreds of times check logic, not the disk, and
// fsync on a real disk costs milliseconds.
func fastDir(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "spooltest"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

func mustOpen(t testing.TB, opts Options) *Spool {
	t.Helper()
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func mustAppend(t testing.TB, s *Spool, payloads ...[]byte) {
	t.Helper()
	for _, p := range payloads {
		if err := s.Append(p); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
}

func mustClose(t testing.TB, s *Spool) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// peekAll returns every unacknowledged record.
func peekAll(t testing.TB, s *Spool) []Record {
	t.Helper()
	recs, err := s.Peek(0, 0)
	if err != nil {
		t.Fatalf("Peek: %v", err)
	}
	return recs
}

func payloads(recs []Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, string(r.Payload))
	}
	return out
}

func numbered(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%03d", prefix, i))
	}
	return out
}

func bs(ss []string) [][]byte {
	var out [][]byte
	for _, s := range ss {
		out = append(out, []byte(s))
	}
	return out
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

func TestAppendPeekAck(t *testing.T) {
	s := mustOpen(t, Options{Dir: t.TempDir()})
	defer s.Close()
	want := numbered("r", 0, 10)
	mustAppend(t, s, bs(want)...)

	recs, err := s.Peek(3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := payloads(recs); !slices.Equal(got, want[:3]) {
		t.Fatalf("Peek(3) = %q, want %q", got, want[:3])
	}
	again, _ := s.Peek(3, 0)
	if !slices.Equal(payloads(again), want[:3]) {
		t.Fatalf("Peek is not idempotent: %q", payloads(again))
	}
	if err := s.Ack(recs[1].Pos); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if got := payloads(peekAll(t, s)); !slices.Equal(got, want[2:]) {
		t.Fatalf("after Ack: %q, want %q", got, want[2:])
	}
	if err := s.Ack(recs[0].Pos); err != nil {
		t.Fatalf("Ack of an older position: %v", err)
	}
	if got := payloads(peekAll(t, s)); !slices.Equal(got, want[2:]) {
		t.Fatalf("older Ack changed the spool: %q", got)
	}
	all := peekAll(t, s)
	if err := s.Ack(all[len(all)-1].Next); err == nil {
		t.Fatal("Ack beyond the tail succeeded")
	}
	if err := s.Ack(Position{all[0].Pos.Segment, all[0].Pos.Offset + 1}); err == nil {
		t.Fatal("Ack of a position inside a record succeeded")
	}
	st := s.Stats()
	if st.Records != 8 || st.Appended != 10 || st.Dropped != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if err := s.Ack(all[len(all)-1].Pos); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Records != 0 || st.Bytes != 0 {
		t.Fatalf("Stats after full ack = %+v", st)
	}
	if recs := peekAll(t, s); len(recs) != 0 {
		t.Fatalf("Peek after full ack = %q", payloads(recs))
	}
}

func TestPeekLimits(t *testing.T) {
	s := mustOpen(t, Options{Dir: t.TempDir()})
	defer s.Close()
	mustAppend(t, s, bytes.Repeat([]byte("a"), 100), []byte("b"), []byte("c"), bytes.Repeat([]byte("d"), 50))
	tests := []struct {
		maxRecords, maxBytes int
		want                 int
	}{
		{0, 0, 4},
		{2, 0, 2},
		{0, 10, 1}, // the first record is bigger than maxBytes: still returned
		{0, 102, 3},
		{0, 101, 2},
		{1, 1000, 1},
	}
	for _, tt := range tests {
		recs, err := s.Peek(tt.maxRecords, tt.maxBytes)
		if err != nil || len(recs) != tt.want {
			t.Errorf("Peek(%d, %d) = %d records, %v; want %d", tt.maxRecords, tt.maxBytes, len(recs), err, tt.want)
		}
	}
}

func TestEmpty(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, Options{Dir: dir})
	if recs := peekAll(t, s); len(recs) != 0 {
		t.Fatalf("Peek on empty spool = %d records", len(recs))
	}
	if _, ok := s.Last(); ok {
		t.Fatal("Last on an empty spool reported a record")
	}
	if st := s.Stats(); st != (Stats{}) {
		t.Fatalf("Stats = %+v", st)
	}
	if err := s.Ack(Position{}); err != nil {
		t.Fatalf("Ack of the zero position: %v", err)
	}
	if err := s.Ack(Position{1, 0}); err == nil {
		t.Fatal("Ack on an empty spool succeeded")
	}
	mustClose(t, s)
	s = mustOpen(t, Options{Dir: dir})
	defer s.Close()
	if recs := peekAll(t, s); len(recs) != 0 {
		t.Fatalf("Peek on reopened empty spool = %d records", len(recs))
	}
	sub := filepath.Join(dir, "new")
	s2 := mustOpen(t, Options{Dir: sub})
	defer s2.Close()
	if fi, err := os.Stat(sub); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("created dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
}

func TestOptionsAndErrors(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Error("Open without Dir succeeded")
	}
	if _, err := Open(Options{Dir: t.TempDir(), SegmentBytes: 1 << 20, MaxBytes: 1 << 20}); err == nil {
		t.Error("Open with MaxBytes < 2*SegmentBytes succeeded")
	}
	s := mustOpen(t, Options{Dir: t.TempDir()})
	if err := s.Append(make([]byte, MaxRecordBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Append(MaxRecordBytes+1) = %v, want ErrTooLarge", err)
	}
	if err := s.Append(make([]byte, MaxRecordBytes)); err != nil {
		t.Errorf("Append(MaxRecordBytes) = %v", err)
	}
	mustClose(t, s)
	if err := s.Append([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v", err)
	}
	if _, err := s.Peek(1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Peek after Close = %v", err)
	}
	if err := s.Ack(Position{1, 0}); !errors.Is(err, ErrClosed) {
		t.Errorf("Ack after Close = %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentBytes: 64, MaxBytes: 1 << 20}
	s := mustOpen(t, opts)
	want := numbered("rec", 0, 12)
	mustAppend(t, s, bs(want)...)
	recs, _ := s.Peek(5, 0)
	if err := s.Ack(recs[4].Pos); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)

	s = mustOpen(t, opts)
	if got := payloads(peekAll(t, s)); !slices.Equal(got, want[5:]) {
		t.Fatalf("after restart: %q, want %q", got, want[5:])
	}
	if st := s.Stats(); st.Appended != 12 || st.Records != 7 || st.Dropped != 0 {
		t.Fatalf("Stats after restart = %+v", st)
	}
	if last, ok := s.Last(); !ok || string(last) != want[11] {
		t.Fatalf("Last = %q, %v", last, ok)
	}
	mustAppend(t, s, []byte("more"))
	mustClose(t, s)

	s = mustOpen(t, opts)
	defer s.Close()
	if got := payloads(peekAll(t, s)); !slices.Equal(got, append(want[5:], "more")) {
		t.Fatalf("after second restart: %q", got)
	}
	if st := s.Stats(); st.Appended != 13 {
		t.Fatalf("Appended = %d, want 13", st.Appended)
	}
}

// TestAppendedAfterCrash checks that Appended is exact when the process dies
// without Close: the crash is simulated by copying the directory of an open
// spool (every Append was fsynced).
func TestAppendedAfterCrash(t *testing.T) {
	dir := fastDir(t)
	opts := Options{Dir: dir, SegmentBytes: 100, MaxBytes: 1 << 20}
	s := mustOpen(t, opts)
	defer s.Close()
	n := 0
	check := func(step string) {
		t.Helper()
		img := filepath.Join(fastDir(t), "img")
		copyDir(t, dir, img)
		c := mustOpen(t, Options{Dir: img, SegmentBytes: 100, MaxBytes: 1 << 20})
		defer c.Close()
		if got := c.Stats(); got.Appended != uint64(n) || got.Records != s.Stats().Records {
			t.Fatalf("%s: crash image Stats = %+v, live %+v, want Appended %d", step, got, s.Stats(), n)
		}
	}
	add := func(k int) {
		for range k {
			mustAppend(t, s, fmt.Appendf(nil, "record-%d", n))
			n++
		}
	}
	check("empty")
	add(3)
	check("3 records")
	add(20) // several rolls
	check("after rolls")
	recs, _ := s.Peek(7, 0)
	if err := s.Ack(recs[6].Pos); err != nil {
		t.Fatal(err)
	}
	check("after ack")
	add(4)
	check("after ack and appends")
	all := peekAll(t, s)
	if err := s.Ack(all[len(all)-1].Pos); err != nil {
		t.Fatal(err)
	}
	add(1)
	check("after full ack")
}

func TestSegmentRollAndDeletion(t *testing.T) {
	dir := t.TempDir()
	// 12-byte header + 88-byte payload = 100 bytes: two records a segment.
	opts := Options{Dir: dir, SegmentBytes: 200, MaxBytes: 1 << 20}
	s := mustOpen(t, opts)
	defer s.Close()
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprintf("%088d", i))
	}
	mustAppend(t, s, bs(want)...)
	if got := segFiles(t, dir); len(got) != 5 {
		t.Fatalf("segments = %v, want 5", got)
	}
	recs := peekAll(t, s)
	for i, r := range recs {
		if r.Pos.Segment != uint64(i/2+1) {
			t.Fatalf("record %d in segment %d", i, r.Pos.Segment)
		}
	}
	if err := s.Ack(recs[4].Pos); err != nil { // segments 1, 2 done; 3 half
		t.Fatal(err)
	}
	if got := segFiles(t, dir); !slices.Equal(got, []string{segName(3), segName(4), segName(5)}) {
		t.Fatalf("segments after ack = %v", got)
	}
	if err := s.Ack(recs[5].Pos); err != nil { // segment 3 done
		t.Fatal(err)
	}
	if got := segFiles(t, dir); !slices.Equal(got, []string{segName(4), segName(5)}) {
		t.Fatalf("segments after ack = %v", got)
	}
	if err := s.Ack(recs[9].Pos); err != nil { // all done; the newest stays for Last
		t.Fatal(err)
	}
	if got := segFiles(t, dir); !slices.Equal(got, []string{segName(5)}) {
		t.Fatalf("segments after full ack = %v", got)
	}
	if st := s.Stats(); st.Records != 0 || st.Bytes != 0 || st.Appended != 10 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestLast(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentBytes: 64, MaxBytes: 1 << 20}
	s := mustOpen(t, opts)
	mustAppend(t, s, bs(numbered("last", 0, 7))...) // rolls
	all := peekAll(t, s)
	if err := s.Ack(all[len(all)-1].Pos); err != nil {
		t.Fatal(err)
	}
	if last, ok := s.Last(); !ok || string(last) != "last006" {
		t.Fatalf("Last after full ack = %q, %v", last, ok)
	}
	mustClose(t, s)
	s = mustOpen(t, opts)
	if last, ok := s.Last(); !ok || string(last) != "last006" {
		t.Fatalf("Last after restart = %q, %v", last, ok)
	}
	if recs := peekAll(t, s); len(recs) != 0 {
		t.Fatalf("acked records redelivered: %q", payloads(recs))
	}
	mustAppend(t, s, []byte("x"))
	if last, _ := s.Last(); string(last) != "x" {
		t.Fatalf("Last = %q", last)
	}
	mustClose(t, s)
}

func TestOverflow(t *testing.T) {
	dir := t.TempDir()
	// 100-byte records, two a segment; MaxBytes allows 4 unacked segments.
	opts := Options{Dir: dir, SegmentBytes: 200, MaxBytes: 800}
	s := mustOpen(t, opts)
	var all []string
	for i := range 21 {
		all = append(all, fmt.Sprintf("%088d", i))
	}
	mustAppend(t, s, bs(all)...)
	st := s.Stats()
	if st.Bytes > opts.MaxBytes {
		t.Fatalf("unacked bytes %d > MaxBytes %d", st.Bytes, opts.MaxBytes)
	}
	got := payloads(peekAll(t, s))
	if int64(len(got)) != st.Records || st.Dropped != uint64(21-len(got)) || st.Appended != 21 {
		t.Fatalf("Stats = %+v with %d records delivered", st, len(got))
	}
	if !slices.Equal(got, all[21-len(got):]) {
		t.Fatalf("delivered %q, want the newest records", got)
	}
	if st.Dropped == 0 {
		t.Fatal("nothing dropped")
	}
	mustClose(t, s)
	s = mustOpen(t, opts)
	defer s.Close()
	if st2 := s.Stats(); st2 != st {
		t.Fatalf("Stats after restart = %+v, want %+v", st2, st)
	}
}

// TestOverflowDuringPeek drops the segment an in-flight Peek read from.
func TestOverflowDuringPeek(t *testing.T) {
	opts := Options{Dir: t.TempDir(), SegmentBytes: 200, MaxBytes: 400}
	s := mustOpen(t, opts)
	defer s.Close()
	rec := func(i int) []byte { return fmt.Appendf(nil, "%088d", i) }
	for i := range 4 {
		mustAppend(t, s, rec(i))
	}
	inflight, _ := s.Peek(1, 0) // record 0, segment 1
	for i := 4; i < 8; i++ {
		mustAppend(t, s, rec(i))
	}
	if st := s.Stats(); st.Dropped == 0 {
		t.Fatalf("no segment dropped: %+v", st)
	}
	if err := s.Ack(inflight[0].Pos); err != nil {
		t.Fatalf("Ack of a dropped position: %v", err)
	}
	recs := peekAll(t, s)
	if len(recs) == 0 {
		t.Fatal("records after the dropped segment were lost")
	}
	wantFirst := 8 - len(recs)
	for i, r := range recs {
		if !bytes.Equal(r.Payload, rec(wantFirst+i)) {
			t.Fatalf("record %d = %q, want %q", i, r.Payload, rec(wantFirst+i))
		}
	}
	if st := s.Stats(); st.Dropped+uint64(st.Records) != 8 {
		t.Fatalf("Stats = %+v: records unaccounted for", st)
	}
}

func TestNotify(t *testing.T) {
	s := mustOpen(t, Options{Dir: t.TempDir()})
	defer s.Close()
	select {
	case <-s.Notify():
		t.Fatal("notified before any Append")
	default:
	}
	mustAppend(t, s, []byte("a"), []byte("b")) // must not block
	select {
	case <-s.Notify():
	default:
		t.Fatal("no notification after Append")
	}
}

// TestConcurrent runs group-commit appenders against a reader that acks.
func TestConcurrent(t *testing.T) {
	s := mustOpen(t, Options{Dir: fastDir(t), SegmentBytes: 4096, MaxBytes: 1 << 30, Sync: SyncPolicy{Every: 2 * time.Millisecond}})
	defer s.Close()
	const writers, each = 8, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.Append(fmt.Appendf(nil, "%d:%d", w, i)); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	next := make([]int, writers)
	got := 0
	deadline := time.After(20 * time.Second)
	for got < writers*each {
		recs, err := s.Peek(50, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			select {
			case <-s.Notify():
			case <-deadline:
				t.Fatalf("timed out with %d records", got)
			}
			continue
		}
		for _, r := range recs {
			var w, i int
			if _, err := fmt.Sscanf(string(r.Payload), "%d:%d", &w, &i); err != nil || next[w] != i {
				t.Fatalf("record %q out of order (want %d:%d)", r.Payload, w, next[w])
			}
			next[w]++
			got++
		}
		if err := s.Ack(recs[len(recs)-1].Pos); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if st := s.Stats(); st.Appended != writers*each || st.Records != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}
