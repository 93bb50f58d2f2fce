package audit

import (
	"bytes"
	"context"
	"os"
	"testing"
)

// FuzzReadBundle: untrusted bundles never panic, and whatever parses
// re-encodes byte for byte.
func FuzzReadBundle(f *testing.F) {
	if b, err := os.ReadFile(goldenPath("log.bundle")); err == nil {
		f.Add(b[:min(len(b), 4096)])
		f.Add(b)
	}
	l := openTestLog(f, NewMemoryStorage(), 1)
	fill(f, l, 0, 3)
	l.Sign(context.Background())
	for _, r := range [][2]uint64{{0, 0}, {0, 3}, {1, 2}} {
		var b bytes.Buffer
		Export(context.Background(), &b, l, r[0], r[1])
		f.Add(b.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ReadBundle(bytes.NewReader(data))
		if err != nil {
			return
		}
		out, err := b.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed bundle does not encode: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("round trip differs")
		}
	})
}

// FuzzVerify: Verify never panics on untrusted bundles, and never passes
// anything but the genuine one.
func FuzzVerify(f *testing.F) {
	golden, err := os.ReadFile(goldenPath("log.bundle"))
	if err != nil {
		f.Fatal(err)
	}
	cp, _ := os.ReadFile(goldenPath("checkpoint"))
	pub, _ := os.ReadFile(goldenPath("log.pub"))
	vkey := string(bytes.TrimSpace(pub))
	f.Add(golden)
	f.Add(golden[:len(golden)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := Verify(bytes.NewReader(data), cp, vkey, nil, 0)
		if err == nil && !bytes.Equal(data, golden) {
			// Only another encoding of the same entries could pass; there is none.
			t.Fatalf("a bundle other than the golden one verified: %+v", rep)
		}
	})
}

func TestVerifyRangeExports(t *testing.T) {
	ctx := context.Background()
	l := openTestLog(t, NewMemoryStorage(), 1)
	fill(t, l, 0, 600)
	l.Sign(ctx)
	_, _, vkey := testKey(t, testOrigin, 1)
	ref := openTestLog(t, NewMemoryStorage(), 1)
	fill(t, ref, 0, 300)
	old, _ := ref.Sign(ctx)
	tests := []struct {
		from, to uint64
		cp       []byte
		want     Fault
	}{
		{0, 600, nil, 0},
		{17, 600, nil, 0},
		{256, 300, nil, 0},
		{0, 0, nil, 0},
		{600, 600, nil, 0},
		{100, 400, old, 0}, // an old saved checkpoint inside the range: consistency
		{0, 300, old, 0},   // ... at its end
		{301, 600, old, OutOfRange},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if err := Export(ctx, &b, l, tt.from, tt.to); err != nil {
			t.Fatal(err)
		}
		rep, err := Verify(&b, tt.cp, vkey, nil, 0)
		var p *Problem
		switch {
		case tt.want == 0 && err != nil:
			t.Errorf("[%d, %d): %v", tt.from, tt.to, err)
		case tt.want != 0 && (!asProblem(err, &p) || p.Fault != tt.want):
			t.Errorf("[%d, %d): got %v, want %v", tt.from, tt.to, err, tt.want)
		case tt.want == 0 && rep.Entries != tt.to-tt.from:
			t.Errorf("[%d, %d): %d entries read", tt.from, tt.to, rep.Entries)
		}
	}
}
