package audit

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden audit log in testdata/golden")

const goldenEntries = 300

// buildGolden builds the golden log deterministically: fixed key (seed 1),
// a clock stepping 1 ms per entry, entries testEntry(0..299).
func buildGolden(t testing.TB) (bundle, checkpoint []byte, vkey string) {
	t.Helper()
	ctx := context.Background()
	l := openTestLog(t, NewMemoryStorage(), 1)
	fill(t, l, 0, goldenEntries)
	cp, err := l.Sign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Export(ctx, &b, l, 0, goldenEntries); err != nil {
		t.Fatal(err)
	}
	_, _, vkey = testKey(t, testOrigin, 1)
	return b.Bytes(), cp, vkey
}

func goldenPath(name string) string { return filepath.Join("testdata", "golden", name) }

// TestGolden rebuilds the golden log and compares it with the committed one
// (so the encodings cannot drift unnoticed); with -update it rewrites it.
func TestGolden(t *testing.T) {
	bundle, cp, vkey := buildGolden(t)
	files := map[string][]byte{"log.bundle": bundle, "checkpoint": cp, "log.pub": []byte(vkey + "\n")}
	if *update {
		os.MkdirAll(goldenPath(""), 0o755)
		for name, b := range files {
			if err := os.WriteFile(goldenPath(name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, want := range files {
		got, err := os.ReadFile(goldenPath(name))
		if err != nil {
			t.Fatalf("%v (run go test -run TestGolden -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the rebuilt golden log: an encoding changed (rerun with -update only if intended)", name)
		}
	}
	rep, err := Verify(bytes.NewReader(bundle), cp, vkey, nil, 0)
	if err != nil || rep.Entries != goldenEntries || rep.Size != goldenEntries || !rep.OK() {
		t.Fatalf("golden log does not verify: %+v %v", rep, err)
	}
}

type mutation struct {
	name   string
	bundle []byte
	cp     []byte // nil: the golden checkpoint
	want   Fault
	index  int64 // -1: any
}

// recordOffsets returns where each leaf's bytes start in an encoded bundle.
func recordOffsets(t testing.TB, b *Bundle) []int {
	t.Helper()
	off := len(appendHeader(nil, &bundleHeader{b.From, b.To, b.Checkpoint, b.Prefix, b.Suffix}))
	out := make([]int, len(b.Leaves))
	for i, l := range b.Leaves {
		out[i] = off + 4
		off += 4 + len(l) + hashLen
	}
	return out
}

func marshal(t testing.TB, b *Bundle) []byte {
	t.Helper()
	out, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMutations: every single-entry edit, every deletion, truncation at
// every length, every adjacent swap and a fork of the committed golden log
// is detected by Verify, with the expected fault (and entry, where one is
// to blame). 100% or the test fails.
func TestMutations(t *testing.T) {
	ctx := context.Background()
	golden, err := os.ReadFile(goldenPath("log.bundle"))
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := os.ReadFile(goldenPath("checkpoint"))
	pub, _ := os.ReadFile(goldenPath("log.pub"))
	vkey := string(bytes.TrimSpace(pub))
	parsed, err := ReadBundle(bytes.NewReader(golden))
	if err != nil {
		t.Fatal(err)
	}
	offs := recordOffsets(t, parsed)
	var ms []mutation

	// Edits: flip bytes of each leaf (first, last, and one rotating byte;
	// every byte of the first and last leaf).
	for i, leaf := range parsed.Leaves {
		positions := []int{0, i % len(leaf), len(leaf) - 1}
		if i == 0 || i == len(parsed.Leaves)-1 {
			positions = positions[:0]
			for j := range leaf {
				positions = append(positions, j)
			}
		}
		for _, j := range positions {
			b := bytes.Clone(golden)
			b[offs[i]+j] ^= 0x01
			ms = append(ms, mutation{fmt.Sprintf("edit entry %d byte %d", i, j), b, nil, EntryModified, int64(i)})
		}
	}
	// Deletions.
	for i := range parsed.Leaves {
		b := *parsed
		b.Leaves = append(append([][]byte{}, parsed.Leaves[:i]...), parsed.Leaves[i+1:]...)
		b.Hashes = append(append([][]byte{}, parsed.Hashes[:i]...), parsed.Hashes[i+1:]...)
		ms = append(ms, mutation{fmt.Sprintf("delete entry %d", i), marshal(t, &b), nil, Missing, -1})
	}
	// Truncation of the file at every length (under -race: every length in
	// the header, the first and last records and the end, and five cuts in
	// and around every other record).
	for n := range len(golden) {
		if raceEnabled && n > offs[2] && n < offs[len(offs)-2] {
			continue
		}
		ms = append(ms, mutation{fmt.Sprintf("cut at byte %d", n), golden[:n], nil, Truncated, -1})
	}
	if raceEnabled {
		for i := 2; i < len(offs)-2; i++ {
			for _, d := range []int{-4, -3, 0, 10, len(parsed.Leaves[i]) + 1} {
				ms = append(ms, mutation{fmt.Sprintf("cut at byte %d", offs[i]+d), golden[:offs[i]+d], nil, Truncated, -1})
			}
		}
	}
	// Truncation of the log: a genuine, signed, well-formed export of each
	// shorter prefix, checked against the saved checkpoint.
	prefixLog := openTestLog(t, NewMemoryStorage(), 1)
	for k := range goldenEntries {
		if k > 0 {
			fill(t, prefixLog, k-1, 1)
		}
		if _, err := prefixLog.Sign(ctx); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := Export(ctx, &b, prefixLog, 0, uint64(k)); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, mutation{fmt.Sprintf("log truncated to %d entries", k), b.Bytes(), nil, Truncated, int64(k)})
	}
	// Reordering: swap each adjacent pair.
	for i := 0; i+1 < len(parsed.Leaves); i++ {
		b := *parsed
		b.Leaves = append([][]byte{}, parsed.Leaves...)
		b.Hashes = append([][]byte{}, parsed.Hashes...)
		b.Leaves[i], b.Leaves[i+1] = b.Leaves[i+1], b.Leaves[i]
		b.Hashes[i], b.Hashes[i+1] = b.Hashes[i+1], b.Hashes[i]
		ms = append(ms, mutation{fmt.Sprintf("swap entries %d and %d", i, i+1), marshal(t, &b), nil, OutOfOrder, int64(i + 1)})
	}
	// A fork: the operator, holding the log key, rewrites entry 150 and
	// re-signs. Same size as the saved checkpoint, different root.
	forked := openTestLog(t, NewMemoryStorage(), 1)
	fill(t, forked, 0, 150)
	fill(t, forked, 1000, 1)
	fill(t, forked, 151, goldenEntries-151)
	forkCP, _ := forked.Sign(ctx)
	var fb bytes.Buffer
	if err := Export(ctx, &fb, forked, 0, goldenEntries); err != nil {
		t.Fatal(err)
	}
	ms = append(ms, mutation{"fork: same size, other root", fb.Bytes(), nil, Fork, -1})
	// The same fork against an older saved checkpoint (size 200): not a prefix.
	var old200 []byte
	{
		l := openTestLog(t, NewMemoryStorage(), 1)
		fill(t, l, 0, 200)
		old200, _ = l.Sign(ctx)
	}
	ms = append(ms, mutation{"fork: not an extension of size 200", fb.Bytes(), old200, Fork, -1})
	ms = append(ms, mutation{"fork: only the checkpoint", golden, forkCP, Fork, -1})
	// Checkpoint signed by another key.
	otherS, _, _ := testKey(t, testOrigin, 9)
	ms = append(ms, mutation{"checkpoint by another key", golden, signCheckpoint(t, otherS, testOrigin, goldenEntries, make([]byte, 32)), BadSignature, -1})

	detected := 0
	for _, m := range ms {
		want := cp
		if m.cp != nil {
			want = m.cp
		}
		rep, err := Verify(bytes.NewReader(m.bundle), want, vkey, nil, 0)
		var p *Problem
		switch {
		case err == nil:
			t.Errorf("%s: not detected", m.name)
		case !errors.As(err, &p):
			t.Errorf("%s: error without a problem: %v", m.name, err)
		case p.Fault != m.want:
			t.Errorf("%s: got %v, want fault %v", m.name, err, m.want)
		case m.index >= 0 && (!p.HasIndex || p.Index != uint64(m.index)):
			t.Errorf("%s: got %v, want entry %d", m.name, err, m.index)
		case rep.OK():
			t.Errorf("%s: report says OK", m.name)
		default:
			detected++
		}
	}
	t.Logf("%d of %d mutations detected with the expected fault", detected, len(ms))
	if detected != len(ms) {
		t.Fatalf("detected %d of %d", detected, len(ms))
	}
}

func asProblem(err error, p **Problem) bool { return errors.As(err, p) }
