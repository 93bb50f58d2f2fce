package p1

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/wire"
)

// FuzzParse checks that Parse never panics, that it only fails with its
// documented errors, and that whatever it accepts has a matching CRC,
// round-trips byte for byte and yields finite readings. Seeds:
// testdata/fuzz/FuzzParse (rebuilt from testdata/*.txt by
// TestSeedCorpus -update).
func FuzzParse(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		tg, err := Parse(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		out, _ := tg.AppendBinary(nil)
		if !bytes.Equal(out, in) && !bytes.Equal(out, append(append([]byte(nil), in...), '\r', '\n')) {
			t.Fatalf("round trip differs:\n%q\n%q", out, in)
		}
		bang := bytes.LastIndexByte(out, '!')
		if CRC16(out[:bang+1]) != tg.CRC {
			t.Fatal("accepted a telegram whose CRC does not match")
		}
		if tg.Equipment != "" && !(wire.Meter{Device: "d", ID: tg.Equipment}).Valid() {
			t.Fatal("accepted an equipment identifier a batch cannot carry")
		}
		for _, m := range tg.Measurements {
			if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) || m.Value < 0 {
				t.Fatalf("%s = %v", m.Metric, m.Value)
			}
		}
	})
}

// seeds returns the golden telegrams and variants of them: bad CRCs,
// truncations, LF line ends, a missing final CR LF.
func seeds(tb testing.TB) map[string][]byte {
	files, _ := filepath.Glob("testdata/*.txt")
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		out[name] = b
		out[name+"_no_final_crlf"] = b[:len(b)-2]
		bad := append([]byte(nil), b...)
		bad[len(bad)-3] ^= 1 // last CRC digit
		out[name+"_bad_crc"] = bad
		flip := append([]byte(nil), b...)
		i := bytes.Index(flip, []byte("1-0:1.8.1(")) + 12
		flip[i] ^= 1 // a digit of the import register
		out[name+"_bit_flip"] = flip
		out[name+"_truncated"] = b[:len(b)/2]
		out[name+"_lf"] = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	}
	out["minimal"] = seal(minimal)
	out["empty_value"] = seal("/XMX5LGBBFG1009214046\n\n0-0:96.13.0()\n!")
	return out
}

// TestSeedCorpus checks that the committed corpus is what seeds()
// produces; with -update it rewrites it.
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	for name, b := range seeds(t) {
		path := filepath.Join(dir, name)
		want := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b)
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
			t.Errorf("seed %s is missing or stale (run with -update)", name)
		}
	}
}
