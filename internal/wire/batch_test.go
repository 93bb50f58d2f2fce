package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestBatchRoundTrip(t *testing.T) {
	cases := validCases()
	all := &Batch{ID: testID(7)}
	for i, c := range cases {
		all.Series = append(all.Series, Series{Key: fmt.Sprintf("dev-%d/metric.%d", i, i), Readings: c.rs})
	}
	tests := []struct {
		name string
		b    *Batch
	}{{"all cases in one batch", all}, {"household 10x100", householdBatch(newRand(5), 10, 100)}}
	for _, c := range cases {
		tests = append(tests, struct {
			name string
			b    *Batch
		}{c.name, &Batch{ID: testID(3), Series: []Series{{Key: "meter-1/import_power_w", Readings: c.rs}}}})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := AppendBatch([]byte("prefix"), tc.b)
			if err != nil {
				t.Fatalf("AppendBatch: %v", err)
			}
			enc = enc[len("prefix"):]
			got, err := DecodeBatch(enc)
			if err != nil {
				t.Fatalf("DecodeBatch: %v", err)
			}
			checkSameBatch(t, &got, tc.b)
			if got.Len() != tc.b.Len() {
				t.Fatalf("Len = %d, want %d", got.Len(), tc.b.Len())
			}
			for i, s := range got.Series {
				checkTimeRange(t, i, &s)
				if again := AppendBlock(nil, s.Readings); !bytes.Equal(again, s.Block) {
					t.Fatalf("series %d: Block is not the block of Readings", i)
				}
			}
			again, err := AppendBatch(nil, &got)
			if err != nil || !bytes.Equal(again, enc) {
				t.Fatalf("re-encoding the decoded batch differs (err %v)", err)
			}
		})
	}
}

func checkTimeRange(t *testing.T, i int, s *Series) {
	t.Helper()
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, r := range s.Readings {
		lo, hi = min(lo, r.Time), max(hi, r.Time)
	}
	if s.MinTime != lo || s.MaxTime != hi {
		t.Fatalf("series %d: time range [%d, %d], want [%d, %d]", i, s.MinTime, s.MaxTime, lo, hi)
	}
}

func TestDecodeBatches(t *testing.T) {
	r := newRand(6)
	var body []byte
	var want []*Batch
	ends := map[int]bool{}
	for i := range 5 {
		b := householdBatch(r, i+1, 10*(i+1))
		b.ID = testID(byte(10 * i))
		want = append(want, b)
		var err error
		if body, err = AppendBatch(body, b); err != nil {
			t.Fatal(err)
		}
		ends[len(body)] = true
	}
	got, err := DecodeBatches(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d batches, want %d", len(got), len(want))
	}
	for i := range got {
		checkSameBatch(t, &got[i], want[i])
	}
	if _, err := DecodeBatch(body); !errors.Is(err, ErrMalformed) {
		t.Fatalf("DecodeBatch of several batches: err = %v, want ErrMalformed", err)
	}
	for i := 1; i < len(body); i++ {
		if ends[i] {
			continue // a shorter body of whole batches
		}
		if _, err := DecodeBatches(body[:i]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("body truncated at %d: err = %v, want ErrMalformed", i, err)
		}
	}
}

// secretKey appears in test batches; no error may repeat it.
const secretKey = "secret-meter/power"

func TestDecodeBatchRejects(t *testing.T) {
	one := AppendBlock(nil, []Reading{{Time: t0, Value: 1}})
	block := func(rs ...Reading) []byte { return AppendBlock(nil, rs) }
	valid := rawBatch(testID(1), rawSeries{secretKey, one})
	with := func(i int, v byte) []byte {
		b := append([]byte{}, valid...)
		b[i] = v
		return b
	}
	many := func(n int, readings int) []byte {
		ss := make([]rawSeries, n)
		for i := range ss {
			ss[i] = rawSeries{fmt.Sprintf("d/m%d", i), AppendBlock(nil, regular(readings, t0, 5))}
		}
		return rawBatch(testID(1), ss...)
	}
	huge := append([]byte(magic), version)
	huge = binary.AppendUvarint(huge, MaxBatchBytes+1)
	huge = append(huge, make([]byte, MaxBatchBytes+1)...)
	idAt := len(magic) + 2
	for _, c := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"wrong magic", with(0, 'X'), ErrMalformed},
		{"wrong magic case", with(3, 'b'), ErrMalformed},
		{"unknown version 0", with(4, 0), ErrVersion},
		{"unknown version 3", with(4, 3), ErrVersion},
		{"trailing bytes", append(append([]byte{}, valid...), 0), ErrMalformed},
		{"batch length larger than remaining", with(5, valid[5]+1), ErrMalformed},
		{"batch length smaller than batch", with(5, valid[5]-1), ErrMalformed},
		{"overlong batch length", append(append([]byte(magic), version, 0x80, 0x00), valid[6:]...), ErrMalformed},
		{"zero batch ID", rawBatch(BatchID{}, rawSeries{secretKey, one}), ErrMalformed},
		{"no series", rawBatch(testID(1)), ErrMalformed},
		{"series count larger than remaining", with(idAt+16, 2), ErrMalformed},
		{"key length larger than remaining", with(idAt+17, 200), ErrMalformed},
		{"key length over limit", with(idAt+17, 0xff), ErrMalformed},
		{"block length larger than remaining", with(idAt+18+len(secretKey), byte(len(one)+1)), ErrMalformed},
		{"invalid key: one segment", rawBatch(testID(1), rawSeries{"meter", one}), ErrMalformed},
		{"invalid key: empty segment", rawBatch(testID(1), rawSeries{"meter//w", one}), ErrMalformed},
		{"invalid key: character", rawBatch(testID(1), rawSeries{"secret meter/w", one}), ErrMalformed},
		{"invalid key: dot-dot", rawBatch(testID(1), rawSeries{"../secret", one}), ErrMalformed},
		{"duplicate key", rawBatch(testID(1), rawSeries{secretKey, one}, rawSeries{"a/b", one}, rawSeries{secretKey, one}), ErrMalformed},
		{"empty series", rawBatch(testID(1), rawSeries{secretKey, block()}), ErrMalformed},
		{"empty block", rawBatch(testID(1), rawSeries{secretKey, nil}), ErrMalformed},
		{"unknown block version", rawBatch(testID(1), rawSeries{secretKey, append([]byte{9}, one[1:]...)}), ErrVersion},
		{"corrupt block", rawBatch(testID(1), rawSeries{secretKey, one[:len(one)-1]}), ErrMalformed},
		{"NaN value", rawBatch(testID(1), rawSeries{secretKey, block(Reading{Time: t0, Value: math.NaN()})}), ErrMalformed},
		{"+Inf value", rawBatch(testID(1), rawSeries{secretKey, block(Reading{Time: t0, Value: 2}, Reading{Time: t0, Value: math.Inf(1)})}), ErrMalformed},
		{"-Inf value", rawBatch(testID(1), rawSeries{secretKey, block(Reading{Time: t0, Value: math.Inf(-1)})}), ErrMalformed},
		{"negative time", rawBatch(testID(1), rawSeries{secretKey, block(Reading{Time: -1, Value: 1})}), ErrMalformed},
		{"time at MaxTime", rawBatch(testID(1), rawSeries{secretKey, block(Reading{Time: MaxTime, Value: 1})}), ErrMalformed},
		{"unknown quality flag", rawBatch(testID(1), rawSeries{secretKey, block(Reading{Time: t0, Value: 1, Quality: 0x10})}), ErrMalformed},
		{"too many series", many(MaxSeriesPerBatch+1, 1), ErrTooLarge},
		{"too many readings in a block", many(1, MaxReadingsPerBatch+1), ErrTooLarge},
		{"too many readings in a batch", many(2, MaxReadingsPerBatch/2+1), ErrTooLarge},
		{"batch too large", huge, ErrTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeBatch(c.data)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error repeats payload: %v", err)
			}
			if !strings.Contains(err.Error(), "at byte") {
				t.Fatalf("error does not say where: %v", err)
			}
			if _, err := DecodeBatches(c.data); !errors.Is(err, c.want) {
				t.Fatalf("DecodeBatches: err = %v, want %v", err, c.want)
			}
		})
	}
	if _, err := DecodeBatch(append(append([]byte{}, valid...), valid...)); !errors.Is(err, ErrMalformed) {
		t.Errorf("two batches: err = %v, want ErrMalformed", err)
	}
	for i := range valid {
		if _, err := DecodeBatch(valid[:i]); !errors.Is(err, ErrMalformed) {
			t.Errorf("truncated at %d: err = %v, want ErrMalformed", i, err)
		}
	}
}

func TestDecodeBatchTruncatedEverywhere(t *testing.T) {
	valid, err := AppendBatch(nil, &Batch{ID: testID(1), Series: []Series{
		{Key: "meter-1/power_w", Readings: household(newRand(8), 20, t0)},
		{Key: "meter-1/temp_c", Readings: temperature(newRand(8), 5, t0)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range valid {
		if _, err := DecodeBatch(valid[:i]); !errors.Is(err, ErrMalformed) {
			t.Errorf("truncated at %d of %d: err = %v, want ErrMalformed", i, len(valid), err)
		}
	}
}

func TestDecodeBatchesLimits(t *testing.T) {
	tiny := rawBatch(testID(1), rawSeries{"d/m", AppendBlock(nil, []Reading{{Time: t0, Value: 1}})})
	full := rawBatch(testID(1), rawSeries{"d/m", AppendBlock(nil, regular(MaxReadingsPerBatch, t0, 1))})
	for _, c := range []struct {
		name string
		body []byte
		want error
	}{
		{"empty body", nil, ErrMalformed},
		{"body too large", make([]byte, MaxBodyBytes+1), ErrTooLarge},
		{"too many batches", bytes.Repeat(tiny, MaxBatchesPerBody+1), ErrTooLarge},
		{"too many readings", bytes.Repeat(full, MaxReadingsPerBody/MaxReadingsPerBatch+1), ErrTooLarge},
		{"garbage after a batch", append(append([]byte{}, tiny...), "CSTX"...), ErrMalformed},
		{"unknown version after a batch", append(append([]byte{}, tiny...), "CSTB\x03"...), ErrVersion},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := DecodeBatches(c.body); !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
	if got, err := DecodeBatches(bytes.Repeat(tiny, MaxBatchesPerBody)); err != nil || len(got) != MaxBatchesPerBody {
		t.Fatalf("MaxBatchesPerBody batches: %d, %v", len(got), err)
	}
}

func TestAppendBatchRejects(t *testing.T) {
	ok := []Reading{{Time: t0, Value: 1}}
	one := func(key string, rs ...Reading) *Batch {
		return &Batch{ID: testID(1), Series: []Series{{Key: key, Readings: rs}}}
	}
	many := func(n, per int) *Batch {
		b := &Batch{ID: testID(1)}
		for i := range n {
			b.Series = append(b.Series, Series{Key: fmt.Sprintf("d/m%d", i), Readings: regular(per, t0, 1)})
		}
		return b
	}
	for _, c := range []struct {
		name string
		b    *Batch
		want error
	}{
		{"zero ID", &Batch{Series: []Series{{Key: secretKey, Readings: ok}}}, ErrMalformed},
		{"no series", &Batch{ID: testID(1)}, ErrMalformed},
		{"empty series", one(secretKey), ErrMalformed},
		{"invalid key", one("secret", ok...), ErrMalformed},
		{"key too long", one("a/"+strings.Repeat("b", maxKeyLen-1), ok...), ErrMalformed},
		{"duplicate key", &Batch{ID: testID(1), Series: []Series{{Key: secretKey, Readings: ok}, {Key: secretKey, Readings: ok}}}, ErrMalformed},
		{"duplicate key among many", func() *Batch { b := many(40, 1); b.Series[39].Key = b.Series[3].Key; return b }(), ErrMalformed},
		{"NaN", one(secretKey, Reading{Time: t0, Value: math.NaN()}), ErrMalformed},
		{"+Inf", one(secretKey, Reading{Time: t0, Value: math.Inf(1)}), ErrMalformed},
		{"-Inf", one(secretKey, Reading{Time: t0, Value: math.Inf(-1)}), ErrMalformed},
		{"negative time", one(secretKey, Reading{Time: -1}), ErrMalformed},
		{"time at MaxTime", one(secretKey, Reading{Time: MaxTime}), ErrMalformed},
		{"unknown quality", one(secretKey, Reading{Time: t0, Quality: 0x80}), ErrMalformed},
		{"too many series", many(MaxSeriesPerBatch+1, 1), ErrTooLarge},
		{"too many readings", many(2, MaxReadingsPerBatch/2+1), ErrTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := AppendBatch(dst, c.b)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error repeats payload: %v", err)
			}
			if string(got) != "keep" {
				t.Fatalf("dst changed on error")
			}
		})
	}
}

func TestValidKey(t *testing.T) {
	for _, c := range []struct {
		key  string
		want bool
	}{
		{"a/b", true},
		{"meter-1/import_power_w", true},
		{"site.3/meter-1/energy.total_wh", true},
		{"A-Z/0_9.x", true},
		{"a/" + strings.Repeat("b", maxKeyLen-2), true},
		{"a/" + strings.Repeat("b", maxKeyLen-1), false},
		{"", false},
		{"ab", false},
		{"abc", false},
		{"/ab", false},
		{"ab/", false},
		{"a//b", false},
		{"a/b c", false},
		{"a/b\x00", false},
		{"a/bé", false},
		{"a\\b/c", false},
		{"./a", false},
		{"a/..", false},
		{"a/.../b", true},
		{".a/b.", true},
	} {
		if got := ValidKey(c.key); got != c.want {
			t.Errorf("ValidKey(%q) = %v, want %v", c.key, got, c.want)
		}
	}
}

func TestBatchID(t *testing.T) {
	id := testID(0xa0)
	s := id.String()
	if s != "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf" {
		t.Fatalf("String = %s", s)
	}
	for _, c := range []struct {
		in   string
		want error
	}{
		{s, nil},
		{strings.ToUpper(s), nil},
		{s[:31], ErrMalformed},
		{s + "0", ErrMalformed},
		{"g" + s[1:], ErrMalformed},
		{strings.Repeat("0", 32), ErrMalformed},
	} {
		got, err := ParseBatchID(c.in)
		if !errors.Is(err, c.want) || (err == nil && got != id) {
			t.Errorf("ParseBatchID(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

// TestMeters: meter identities round-trip in version 2; a batch without
// them is still version 1, byte for byte what hubs before meters read;
// every rule of the meters section is enforced both ways.
func TestMeters(t *testing.T) {
	series := []Series{{Key: "meter-1/import_power_w", Readings: regular(3, t0, 1)}, {Key: "pv/power_w", Readings: regular(2, t0, 5)}}
	plain := &Batch{ID: testID(5), Series: series}
	v1, err := AppendBatch(nil, plain)
	if err != nil || v1[4] != 1 {
		t.Fatalf("without meters: version %d, %v; want 1", v1[4], err)
	}
	metered := &Batch{ID: testID(5), Series: series, Meters: []Meter{{"meter-1", "E0044007123456789"}, {"pv", "INV-42"}}}
	v2, err := AppendBatch(nil, metered)
	if err != nil || v2[4] != 2 {
		t.Fatalf("with meters: %v", err)
	}
	got, err := DecodeBatch(v2)
	if err != nil {
		t.Fatal(err)
	}
	checkSameBatch(t, &got, metered)
	if got.MeterOf("meter-1") != "E0044007123456789" || got.MeterOf("heatpump") != "" {
		t.Fatalf("MeterOf: %+v", got.Meters)
	}
	// The meters section is the only difference.
	if b1, b2 := afterLength(v1), afterLength(v2); !bytes.Equal(b2[:len(b1)], b1) {
		t.Fatal("version 2 changes the bytes before the meters section")
	}
	for _, tc := range []struct {
		name   string
		meters []Meter
	}{
		{"empty device", []Meter{{"", "X"}}},
		{"device with slash", []Meter{{"meter-1/x", "X"}}},
		{"empty identity", []Meter{{"meter-1", ""}}},
		{"identity with space", []Meter{{"meter-1", "E 1"}}},
		{"identity too long", []Meter{{"meter-1", strings.Repeat("9", 65)}}},
		{"unknown device", []Meter{{"heatpump", "X"}}},
		{"out of order", []Meter{{"pv", "X"}, {"meter-1", "Y"}}},
		{"duplicate device", []Meter{{"pv", "X"}, {"pv", "Y"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Batch{ID: testID(5), Series: series, Meters: tc.meters}
			if _, err := AppendBatch(nil, b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("encode: %v, want ErrMalformed", err)
			}
			// The same section forged onto a valid batch is refused too.
			forged := forgeMeters(t, v1, tc.meters)
			if _, err := DecodeBatch(forged); !errors.Is(err, ErrMalformed) {
				t.Fatalf("decode: %v, want ErrMalformed", err)
			}
		})
	}
	if _, err := DecodeBatch(forgeMeters(t, v1, nil)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("version 2 without meters: %v, want ErrMalformed", err)
	}
}

// forgeMeters turns an encoded version 1 batch into version 2 with the
// given meters section, unchecked.
func forgeMeters(t *testing.T, v1 []byte, ms []Meter) []byte {
	t.Helper()
	body := append([]byte{}, afterLength(v1)...)
	body = binary.AppendUvarint(body, uint64(len(ms)))
	for _, m := range ms {
		body = appendPair(body, m.Device, m.ID)
	}
	return frame(versionMeter, body)
}

// afterLength returns an encoded batch after its magic, version and length.
func afterLength(b []byte) []byte {
	_, k := binary.Uvarint(b[5:])
	return b[5+k:]
}
