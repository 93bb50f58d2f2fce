package audit

import (
	"errors"
	"strings"
	"testing"
)

func TestEntryRoundTrip(t *testing.T) {
	for i := range 12 {
		e := testEntry(i)
		e.When = int64(1_700_000_000_000 + i)
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		if got != e {
			t.Errorf("round trip: got %+v, want %+v", got, e)
		}
		if err := parseLeaf(b, nil); err != nil {
			t.Errorf("parseLeaf without entry: %v", err)
		}
	}
}

func TestEntryInvalid(t *testing.T) {
	ok := testEntry(0)
	tests := []struct {
		name string
		edit func(*Entry)
	}{
		{"no principal", func(e *Entry) { e.Principal = "" }},
		{"no action", func(e *Entry) { e.Action = "" }},
		{"no outcome", func(e *Entry) { e.Outcome = "" }},
		{"negative time", func(e *Entry) { e.When = -1 }},
		{"too long", func(e *Entry) { e.Resource = Resource(strings.Repeat("x", MaxFieldLen+1)) }},
		{"not utf-8", func(e *Entry) { e.Purpose = "\xff" }},
		{"control character", func(e *Entry) { e.Request = "a\nb" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ok
			tt.edit(&e)
			if _, err := e.MarshalBinary(); !errors.Is(err, ErrMalformedEntry) {
				t.Errorf("MarshalBinary: got %v, want ErrMalformedEntry", err)
			}
		})
	}
}

func TestParseEntryRejects(t *testing.T) {
	good, _ := testEntry(0).MarshalBinary()
	tests := []struct {
		name string
		leaf []byte
	}{
		{"empty", nil},
		{"short", good[:5]},
		{"version 2", append([]byte{2}, good[1:]...)},
		{"truncated field", good[:len(good)-1]},
		{"trailing byte", append(append([]byte{}, good...), 0)},
		{"negative time", append([]byte{1, 0x80}, good[2:]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseEntry(tt.leaf); !errors.Is(err, ErrMalformedEntry) {
				t.Errorf("got %v, want ErrMalformedEntry", err)
			}
		})
	}
}

// FuzzParseEntry: untrusted leaves never panic, and whatever parses
// re-encodes to the very same bytes (one encoding per entry).
func FuzzParseEntry(f *testing.F) {
	for i := range 4 {
		b, _ := testEntry(i).MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, leaf []byte) {
		e, err := ParseEntry(leaf)
		if (parseLeaf(leaf, nil) == nil) != (err == nil) {
			t.Fatalf("parseLeaf with and without entry disagree on %x", leaf)
		}
		if err != nil {
			return
		}
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed entry does not encode: %v", err)
		}
		if string(b) != string(leaf) {
			t.Fatalf("not canonical: %x re-encodes as %x", leaf, b)
		}
	})
}
