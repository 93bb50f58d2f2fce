package spool

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the FuzzOpen seed corpus in testdata/fuzz/FuzzOpen")

func encode(payloads ...[]byte) []byte {
	var b []byte
	for _, p := range payloads {
		h := make([]byte, headerSize)
		putHeader(h, p)
		b = append(append(b, h...), p...)
	}
	return b
}

type fuzzSeed struct {
	name  string
	seg   []byte
	state []byte
	older bool
}

// fuzzSeeds are the seeds of FuzzOpen: valid segments, every kind of damage
// Open must handle, and state files pointing at odd places.
func fuzzSeeds() []fuzzSeed {
	three := encode([]byte("alpha"), []byte("beta"), []byte("gamma"))
	flipped := bytes.Clone(three)
	flipped[headerSize+5+headerSize+1] ^= 1 // payload of "beta"
	badLen := bytes.Clone(three)
	badLen[headerSize+5] ^= 0x80 // length of "beta"
	huge := encode([]byte("x"))
	huge[3] = 0x7f // length far beyond MaxRecordBytes and the file
	zeros := append(encode([]byte("a")), make([]byte, 64)...)
	st := func(head, mark Position, appended uint64) []byte {
		return state{Head: head, Mark: mark, Appended: appended, Dropped: 1, Corrupt: 1}.marshal()
	}
	badState := st(Position{1, 0}, Position{1, 0}, 0)
	badState[20] ^= 1
	return []fuzzSeed{
		{"empty", nil, nil, false},
		{"three", three, nil, false},
		{"three-older", three, nil, true},
		{"torn-header", three[:len(three)-5-headerSize+3], nil, false},
		{"torn-payload", three[:len(three)-2], nil, false},
		{"flipped-payload", flipped, nil, false},
		{"flipped-payload-older", flipped, nil, true},
		{"bad-length", badLen, nil, true},
		{"huge-length", huge, nil, false},
		{"zero-tail", zeros, nil, false},
		{"empty-record", encode(nil, []byte("b")), nil, false},
		{"state-mid", three, st(Position{1, headerSize + 5}, Position{1, headerSize + 5}, 1), false},
		{"state-inside-record", three, st(Position{1, 3}, Position{1, 3}, 7), true},
		{"state-beyond", three, st(Position{9, 1 << 40}, Position{9, 1 << 40}, 3), false},
		{"state-all-acked", three, st(Position{1, int64(len(three))}, Position{2, 0}, 3), true},
		{"state-corrupt", three, badState, false},
		{"state-garbage", three, []byte("not a state file"), false},
	}
}

func corpusEntry(s fuzzSeed) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n[]byte(%q)\nbool(%v)\n", s.seg, s.state, s.older)
}

// TestFuzzCorpus checks that the committed seed corpus is what fuzzSeeds
// generates; run with -update to rewrite it.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range fuzzSeeds() {
		name := filepath.Join(dir, s.name)
		if *update {
			if err := os.WriteFile(name, corpusEntry(s), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := os.ReadFile(name)
		if err != nil || !bytes.Equal(b, corpusEntry(s)) {
			t.Errorf("seed %s is stale or missing (%v); run go test -run TestFuzzCorpus -update", name, err)
		}
	}
}

// FuzzOpen writes arbitrary bytes as a segment file and as the state file:
// Open must not fail or panic, and must never deliver a record whose bytes
// are not a checksummed record of the input.
func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.seg, s.state, s.older)
	}
	f.Fuzz(func(t *testing.T, seg, st []byte, older bool) {
		dir := fastDir(t)
		if err := os.WriteFile(filepath.Join(dir, segName(1)), seg, 0o600); err != nil {
			t.Fatal(err)
		}
		tail := encode([]byte("tail"))
		if older {
			if err := os.WriteFile(filepath.Join(dir, segName(2)), tail, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if len(st) > 0 {
			if err := os.WriteFile(filepath.Join(dir, stateName), st, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		opts := Options{Dir: dir, SegmentBytes: 1 << 10, MaxBytes: 1 << 30}
		s, err := Open(opts)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		recs, err := s.Peek(0, 0)
		if err != nil {
			t.Fatalf("Peek: %v", err)
		}
		for _, r := range recs {
			src := seg
			if r.Pos.Segment == 2 {
				src = tail
			}
			if r.Pos.Segment > 2 || r.Pos.Segment == 2 && !older || r.Pos.Offset+headerSize > int64(len(src)) {
				t.Fatalf("record at impossible position %v", r.Pos)
			}
			n, sum, ok := parseHeader(src[r.Pos.Offset:])
			end := r.Pos.Offset + headerSize + n
			if !ok || end > int64(len(src)) || end != r.Next.Offset || crc(r.Payload) != sum ||
				!bytes.Equal(r.Payload, src[r.Pos.Offset+headerSize:end]) {
				t.Fatalf("record at %v is not a valid record of the input", r.Pos)
			}
		}
		if len(recs) > 0 {
			if err := s.Ack(recs[len(recs)-1].Pos); err != nil {
				t.Fatalf("Ack: %v", err)
			}
		}
		if err := s.Append([]byte("new")); err != nil {
			t.Fatalf("Append: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		s, err = Open(opts)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer s.Close()
		recs, err = s.Peek(0, 0)
		if err != nil || len(recs) != 1 || string(recs[0].Payload) != "new" {
			t.Fatalf("after ack, append and reopen: %d records, %v", len(recs), err)
		}
		if last, ok := s.Last(); !ok || string(last) != "new" {
			t.Fatalf("Last = %q, %v", last, ok)
		}
	})
}
