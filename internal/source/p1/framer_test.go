package p1

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestFramer(t *testing.T) {
	a := seal(minimal)
	b := seal(strings.Replace(minimal, "120000W", "120001W", 1))
	big := append([]byte("/"), bytes.Repeat([]byte("x"), MaxTelegramBytes+10)...)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name     string
		in       []byte
		want     [][]byte
		oversize uint64
	}{
		{"one", a, [][]byte{a}, 0},
		{"two", cat(a, b), [][]byte{a, b}, 0},
		{"garbage first", cat([]byte("\x00\xff garbage!1234\r\n"), a), [][]byte{a}, 0},
		{"truncated then good", cat(a[:40], b), [][]byte{b}, 0},
		{"garbage between", cat(a, []byte("\r\n\x7f\x80"), b), [][]byte{a, b}, 0},
		{"cut after CRC", cat(a[:len(a)-2], b), [][]byte{a[:len(a)-2], b}, 0},
		{"oversize then good", cat(big, b), [][]byte{b}, 1},
		{"incomplete at end", cat(a, b[:30]), [][]byte{a}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One byte per Read: splits never matter.
			f := NewFramer(iotest.OneByteReader(bytes.NewReader(tc.in)))
			var got [][]byte
			for {
				fr, err := f.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, append([]byte(nil), fr...))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d frames, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.want[i]) {
					t.Errorf("frame %d = %q, want %q", i, got[i], tc.want[i])
				}
			}
			if f.Oversize != tc.oversize {
				t.Errorf("Oversize = %d, want %d", f.Oversize, tc.oversize)
			}
		})
	}
}
