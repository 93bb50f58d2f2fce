package wire

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

type readingsCase struct {
	name string
	rs   []Reading
}

// validCases are readings a batch may carry; every codec path appears.
func validCases() []readingsCase {
	r := newRand(1)
	outOfOrder := household(r, 50, t0)
	r.Shuffle(len(outOfOrder), func(i, j int) { outOfOrder[i], outOfOrder[j] = outOfOrder[j], outOfOrder[i] })
	irregular := household(r, 100, t0)
	for i := range irregular {
		irregular[i].Time += int64(r.IntN(601) - 300)
	}
	negative := household(r, 100, t0)
	for i := range negative {
		negative[i].Value = -negative[i].Value
	}
	kwh := make([]Reading, 100)
	for i := range kwh {
		kwh[i] = Reading{Time: t0 + int64(i)*1000, Value: float64(1_234_567+i*i) / 1000}
	}
	jumps := energy(r, 100, t0)
	jumps[40].Value += 1e9
	jumps[70].Value = 0 // counter reset
	mixedQ := household(r, 20, t0)
	for i := range mixedQ {
		mixedQ[i].Quality = Quality(i/3) & qualityKnown
	}
	return []readingsCase{
		{"one reading", []Reading{{Time: t0, Value: 42}}},
		{"two readings", []Reading{{Time: t0, Value: 1.5}, {Time: t0 + 1, Value: -1.5}}},
		{"household 1s", household(r, 100, t0)},
		{"energy counter", energy(r, 100, t0)},
		{"irregular timestamps", irregular},
		{"out-of-order timestamps", outOfOrder},
		{"duplicate timestamps", regular(10, t0, 7)[:5:5]},
		{"negative values", negative},
		{"decimal 0.1 V", voltage(r, 100, t0)},
		{"decimal 0.001 kWh", kwh},
		{"decimal 1e-9", []Reading{{Time: t0, Value: 1e-9}, {Time: t0 + 1, Value: 123456789e-9}}},
		{"constant", regular(100, t0, 0)},
		{"huge magnitudes", []Reading{{Time: t0, Value: 1e300}, {Time: t0 + 1, Value: -math.MaxFloat64}, {Time: t0 + 2, Value: 9.2e18}, {Time: t0 + 3, Value: -9.3e18}}},
		{"int64 edge", []Reading{{Time: t0, Value: 1 << 62}, {Time: t0 + 1, Value: -(1 << 62)}, {Time: t0 + 2, Value: 1<<53 + 2}}},
		{"small magnitudes", []Reading{{Time: t0, Value: 5e-324}, {Time: t0 + 1, Value: math.SmallestNonzeroFloat64 * 3}, {Time: t0 + 2, Value: 2.2250738585072014e-308}}},
		{"negative zero", []Reading{{Time: t0, Value: math.Copysign(0, -1)}, {Time: t0 + 1, Value: 0}, {Time: t0 + 2, Value: math.Copysign(0, -1)}}},
		{"xor fallback", temperature(r, 100, t0)},
		{"one value breaks scaling", append(household(r, 10, t0), Reading{Time: t0 + 10_000, Value: 0.1 + 0.2})},
		{"mixed qualities", mixedQ},
		{"counter with large jumps", jumps},
		{"time at zero and max", []Reading{{Time: 0, Value: 1}, {Time: MaxTime - 1, Value: 2}, {Time: 0, Value: 3}}},
	}
}

func TestBlockRoundTrip(t *testing.T) {
	cases := append(validCases(),
		readingsCase{"empty", nil},
		readingsCase{"NaN payloads and infinities", []Reading{
			{Value: math.Float64frombits(0x7ff8000000000001)}, {Value: math.Float64frombits(0xfff0000000000001)},
			{Value: math.Inf(1)}, {Value: math.Inf(-1)}, {Value: math.NaN()}}},
		readingsCase{"any time", []Reading{{Time: math.MinInt64}, {Time: math.MaxInt64}, {Time: -1}, {Time: 0}, {Time: math.MaxInt64}}},
		readingsCase{"any quality bits", []Reading{{Quality: 0xff}, {Quality: 0x80}, {Quality: 0x80}}},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			block := AppendBlock([]byte("prefix"), c.rs)[len("prefix"):]
			n, err := BlockLen(block)
			if err != nil || n != len(c.rs) {
				t.Fatalf("BlockLen = %d, %v; want %d", n, err, len(c.rs))
			}
			prev := []Reading{{Time: 99}}
			got, err := DecodeBlock(block, prev)
			if err != nil {
				t.Fatalf("DecodeBlock: %v", err)
			}
			if !sameReadings(got[:1], prev) || !sameReadings(got[1:], c.rs) {
				t.Fatalf("round trip differs:\n got %v\nwant %v", got[1:], c.rs)
			}
		})
	}
}

// valueMode returns the value-encoding byte of a non-empty block.
func valueMode(t *testing.T, block []byte) byte {
	t.Helper()
	n, pos, err := blockHeader(block, 0)
	if err != nil {
		t.Fatal(err)
	}
	pos, err = decodeTimes(block, pos, make([]Reading, n), 0)
	if err != nil {
		t.Fatal(err)
	}
	return block[pos]
}

func TestValueMode(t *testing.T) {
	r := newRand(2)
	steady := make([]Reading, 100) // a busy counter: deltas ~750, dods ~0
	for i := range steady {
		steady[i] = Reading{Time: t0 + int64(i)*1000, Value: float64(1_000_000 + 750*i + r.IntN(3))}
	}
	const anyOrder = 0xf0
	for _, c := range []struct {
		name string
		rs   []Reading
		want byte // modeXOR, or a scaled mode; anyOrder accepts either
	}{
		{"household watts", household(r, 100, t0), modeDelta}, // exponent 0
		{"steady counter", steady, modeDoD},                   // exponent 0
		{"0.1 V", voltage(r, 100, t0), anyOrder | 1},
		{"0.001 kWh", []Reading{{Value: 1.001}, {Value: 1.002}, {Value: 1.5}}, anyOrder | 3},
		{"1e-9", []Reading{{Value: 1e-9}}, anyOrder | 9},
		{"1e-10", []Reading{{Value: 1e-10}}, modeXOR},
		{"negative zero", []Reading{{Value: 1}, {Value: math.Copysign(0, -1)}}, modeXOR},
		{"NaN", []Reading{{Value: math.NaN()}}, modeXOR},
		{"beyond int64", []Reading{{Value: 1e19}}, modeXOR},
		{"float32", temperature(r, 10, t0), modeXOR},
	} {
		got := valueMode(t, AppendBlock(nil, c.rs))
		if c.want&0xf0 == anyOrder && got != modeXOR && got&0x0f == c.want&0x0f {
			continue
		}
		if got != c.want {
			t.Errorf("%s: mode 0x%02x, want 0x%02x", c.name, got, c.want)
		}
	}
}

func TestBlockSize(t *testing.T) {
	r := newRand(3)
	for _, c := range []struct {
		name string
		rs   []Reading
		max  float64 // bytes per reading
	}{
		{"household W, 1 s, 100 readings", household(r, 100, t0), 2},
		{"energy Wh counter, 1 s, 100 readings", energy(r, 100, t0), 2},
		{"voltage 0.1 V, 1 s, 100 readings", voltage(r, 100, t0), 2},
		{"constant, 1 s, 100 readings", regular(100, t0, 0), 0.2},
		{"float32 temperature, 10 s, 100 readings", temperature(r, 100, t0), 6},
	} {
		block := AppendBlock(nil, c.rs)
		per := float64(len(block)) / float64(len(c.rs))
		t.Logf("%-42s %4d bytes, %.2f B/reading", c.name, len(block), per)
		if per >= c.max {
			t.Errorf("%s: %.2f B/reading, want < %.2f", c.name, per, c.max)
		}
	}
}

func TestDecodeBlockRejects(t *testing.T) {
	valid := AppendBlock(nil, household(newRand(4), 10, t0))
	xor := AppendBlock(nil, temperature(newRand(4), 10, t0))
	one := AppendBlock(nil, []Reading{{Time: 5, Value: 1}})
	with := func(b []byte, i int, v byte) []byte {
		b = append([]byte{}, b...)
		b[i] = v
		return b
	}
	for _, c := range []struct {
		name  string
		block []byte
		want  error
	}{
		{"empty", nil, ErrMalformed},
		{"unknown version", with(valid, 0, 2), ErrVersion},
		{"truncated count", []byte{blockVersion, 0x80}, ErrMalformed},
		{"overlong count", []byte{blockVersion, 0x80, 0x00}, ErrMalformed},
		{"too many readings", binary.AppendUvarint([]byte{blockVersion}, MaxReadingsPerBatch+1), ErrTooLarge},
		{"no body", []byte{blockVersion, 1}, ErrMalformed},
		{"trailing bytes", append(append([]byte{}, valid...), 0), ErrMalformed},
		{"trailing bytes after empty", []byte{blockVersion, 0, 0}, ErrMalformed},
		{"unknown value mode", with(one, 3, 0x30), ErrMalformed},
		{"exponent too large", with(one, 3, modeDelta|10), ErrMalformed},
		{"quality run too long", with(one, len(one)-1, 1), ErrMalformed},
		{"zero-run beyond count", []byte{blockVersion, 2, 10, 0, 5}, ErrMalformed},
		{"xor padding bits", with(xor, len(xor)-3, xor[len(xor)-3]|1), ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := []Reading{{Time: 1}}
			got, err := DecodeBlock(c.block, dst)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if len(got) != 1 {
				t.Fatalf("dst grew to %d on error", len(got))
			}
		})
	}
	for i := range valid {
		if _, err := DecodeBlock(valid[:i], nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("truncated at %d: err = %v, want ErrMalformed", i, err)
		}
	}
	for i := range xor {
		if _, err := DecodeBlock(xor[:i], nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("xor truncated at %d: err = %v, want ErrMalformed", i, err)
		}
	}
}

func TestScaleExponentVerifiesEveryValue(t *testing.T) {
	// The large value passes at e=0 and is checked before 0.1 raises e
	// to 1; it must be checked again at e=1 (where its scaled integer is
	// beyond 2^53), whichever codec wins.
	rs := []Reading{{Value: 123456789012345678}, {Value: 0.1}}
	got, err := DecodeBlock(AppendBlock(nil, rs), nil)
	if err != nil || !sameReadings(got, rs) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
}
