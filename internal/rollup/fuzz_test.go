package rollup

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// FuzzDecodeRow checks that no input makes DecodeRow panic, and that every
// accepted input re-encodes to the same bytes and decodes to the same row.
func FuzzDecodeRow(f *testing.F) {
	for _, s := range rowSeeds(f) {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecodeRoundTrip(t, b)
	})
}

// seed is one named fuzz input.
type seed struct {
	name string
	data []byte
}

// rowSeeds returns every sample row's encoding and a few near misses.
func rowSeeds(tb testing.TB) []seed {
	var seeds []seed
	var last []byte
	for _, s := range sampleRows(tb) {
		last = AppendRow(nil, s.row)
		seeds = append(seeds, seed{s.name, last})
	}
	one := AppendRow(nil, sampleRows(tb)[1].row)
	return append(seeds,
		seed{"truncated", last[:len(last)/2]},
		seed{"trailing-byte", append(append([]byte{}, one...), 0)},
		seed{"version-2", append([]byte{2}, one[1:]...)},
		seed{"nothing", []byte{}},
	)
}

// corpusFile renders data in the format of Go's fuzzing corpus files.
func corpusFile(data []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
}

// TestFuzzCorpus checks that testdata/fuzz/FuzzDecodeRow holds the seeds
// above, or with -update writes them there.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeRow")
	for _, s := range rowSeeds(t) {
		path := filepath.Join(dir, s.name)
		want := corpusFile(s.data)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is missing or stale (%v); run go test ./internal/rollup/ -run TestFuzzCorpus -update", path, err)
		}
	}
}
