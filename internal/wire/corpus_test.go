package wire

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// seed is one named fuzz input.
type seed struct {
	name string
	data []byte
}

// batchSeeds returns valid and near-valid request bodies.
func batchSeeds() []seed {
	r := newRand(42)
	household := mustBatch(householdBatch(r, 3, 20))
	mixed := mustBatch(&Batch{ID: testID(9), Series: []Series{
		{Key: "meter-1/energy_wh", Readings: energy(r, 30, t0)},
		{Key: "meter-1/voltage_v", Readings: voltage(r, 30, t0)},
		{Key: "heatpump/flow_temp_c", Readings: temperature(r, 30, t0)},
		{Key: "site.2/pv/power_w", Readings: []Reading{{Time: 0, Value: math.Copysign(0, -1), Quality: QualityClockUnsynced},
			{Time: MaxTime - 1, Value: -1e300, Quality: QualityBad | QualityUncertain}}},
	}})
	one := mustBatch(&Batch{ID: testID(1), Series: []Series{{Key: "d/m", Readings: []Reading{{Time: t0, Value: 1}}}}})
	nan := rawBatch(testID(1), rawSeries{"d/m", AppendBlock(nil, []Reading{{Time: t0, Value: math.NaN()}})})
	dup := rawBatch(testID(1), rawSeries{"d/m", AppendBlock(nil, regular(3, t0, 1))}, rawSeries{"d/m", AppendBlock(nil, regular(3, t0, 2))})
	metered := mustBatch(&Batch{ID: testID(3), Series: []Series{
		{Key: "meter-1/import_power_w", Readings: regular(3, t0, 1)},
		{Key: "pv/power_w", Readings: regular(3, t0, 2)},
	}, Meters: []Meter{{Device: "meter-1", ID: "E0044007123456789"}, {Device: "pv", ID: "INV-42"}}})
	return []seed{
		{"one-reading", one},
		{"meters", metered},
		{"meters-truncated", metered[:len(metered)-3]},
		{"household", household},
		{"mixed-codecs", mixed},
		{"two-batches", append(append([]byte{}, one...), mixed...)},
		{"truncated", household[:len(household)/2]},
		{"trailing-byte", append(append([]byte{}, one...), 0)},
		{"version-2-without-meters", append([]byte("CSTB\x02"), one[5:]...)},
		{"version-3", append([]byte("CSTB\x03"), one[5:]...)},
		{"nan-value", nan},
		{"duplicate-key", dup},
		{"empty", []byte{}},
	}
}

// blockSeeds returns blocks, and inputs for readingsFromBytes of each shape.
func blockSeeds() []seed {
	r := newRand(43)
	raw := []byte{0}
	for _, v := range []uint64{0x7ff8000000000001, math.Float64bits(math.Copysign(0, -1)), 0} {
		raw = binary64(raw, uint64(t0))
		raw = binary64(raw, v)
		raw = append(raw, 0xff)
	}
	return []seed{
		{"household", AppendBlock(nil, household(r, 50, t0))},
		{"energy", AppendBlock(nil, energy(r, 50, t0))},
		{"voltage", AppendBlock(nil, voltage(r, 50, t0))},
		{"xor", AppendBlock(nil, temperature(r, 20, t0))},
		{"empty", AppendBlock(nil, nil)},
		{"qualities", AppendBlock(nil, []Reading{{Quality: 1}, {Quality: 1}, {Quality: 0x80}, {}})},
		{"truncated", AppendBlock(nil, household(r, 10, t0))[:9]},
		{"shape-raw", raw},
		{"shape-meter", []byte{1, 5, 0x10, 0x27, 0x12, 0xfb, 0xf0, 0xd8, 0x01, 0, 0, 0, 0}},
		{"shape-counter", []byte{2, 1, 0, 0, 1, 0, 0, 200, 0, 1, 0xff, 0xff, 0}},
		{"shape-floats", []byte{3, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f}},
	}
}

func binary64(b []byte, v uint64) []byte {
	for i := range 8 {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

func mustBatch(b *Batch) []byte {
	enc, err := AppendBatch(nil, b)
	if err != nil {
		panic(err)
	}
	return enc
}

// corpusFile renders data in the format of Go's fuzzing corpus files.
func corpusFile(data []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
}

// TestFuzzCorpus checks that testdata/fuzz holds the seeds above, or with
// -update writes them there.
func TestFuzzCorpus(t *testing.T) {
	for target, seeds := range map[string][]seed{
		"FuzzDecodeBatches": batchSeeds(),
		"FuzzBlock":         blockSeeds(),
	} {
		dir := filepath.Join("testdata", "fuzz", target)
		for _, s := range seeds {
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
				t.Errorf("%s is missing or stale (%v); run go test -run TestFuzzCorpus -update", path, err)
			}
		}
	}
}
