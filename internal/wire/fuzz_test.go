package wire

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
)

// FuzzDecodeBatches checks that no body makes the decoder panic, and that
// every accepted batch re-encodes to bytes that decode to the same batch.
func FuzzDecodeBatches(f *testing.F) {
	for _, s := range batchSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		batches, err := DecodeBatches(body)
		if err != nil {
			return
		}
		for i := range batches {
			b := &batches[i]
			checkDecoded(t, b)
			enc, err := AppendBatch(nil, b)
			if err != nil {
				t.Fatalf("batch %d: accepted but does not re-encode: %v", i, err)
			}
			again, err := DecodeBatch(enc)
			if err != nil {
				t.Fatalf("batch %d: re-encoding does not decode: %v", i, err)
			}
			checkSameBatch(t, &again, b)
			if enc2, _ := AppendBatch(nil, &again); !bytes.Equal(enc2, enc) {
				t.Fatalf("batch %d: encoding is not deterministic", i)
			}
		}
	})
}

// checkDecoded checks the invariants DecodeBatch promises.
func checkDecoded(t *testing.T, b *Batch) {
	t.Helper()
	if b.ID == (BatchID{}) || len(b.Series) == 0 {
		t.Fatal("accepted a zero ID or no series")
	}
	for i := range b.Series {
		s := &b.Series[i]
		if !ValidKey(s.Key) || len(s.Readings) == 0 {
			t.Fatalf("series %d: accepted an invalid key or no readings", i)
		}
		if _, _, j, why := checkReadings(s.Readings); why != "" {
			t.Fatalf("series %d: accepted reading %d: %s", i, j, why)
		}
		checkTimeRange(t, i, s)
		got, err := DecodeBlock(s.Block, nil)
		if err != nil || !sameReadings(got, s.Readings) {
			t.Fatalf("series %d: Block does not decode to Readings (%v)", i, err)
		}
	}
}

// FuzzBlock checks that no bytes make DecodeBlock panic, that whatever it
// accepts round-trips, and that readings made from the same bytes
// round-trip bit for bit through AppendBlock and DecodeBlock.
func FuzzBlock(f *testing.F) {
	for _, s := range blockSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if rs, err := DecodeBlock(data, nil); err == nil {
			n, _ := BlockLen(data)
			if n != len(rs) {
				t.Fatalf("BlockLen = %d, decoded %d", n, len(rs))
			}
			checkBlockRoundTrip(t, rs)
		}
		checkBlockRoundTrip(t, readingsFromBytes(data))
	})
}

func checkBlockRoundTrip(t *testing.T, rs []Reading) {
	t.Helper()
	block := AppendBlock(nil, rs)
	got, err := DecodeBlock(block, nil)
	if err != nil {
		t.Fatalf("AppendBlock output does not decode: %v", err)
	}
	if !sameReadings(got, rs) {
		t.Fatalf("round trip differs:\n got %v\nwant %v", got, rs)
	}
	if again := AppendBlock(nil, got); !bytes.Equal(again, block) {
		t.Fatal("encoding is not deterministic")
	}
}

// readingsFromBytes turns fuzz bytes into readings. The first byte picks
// a shape, so that every value codec gets exercised:
//
//	0: raw — 17 bytes per reading: time, float bits, flags
//	1: meter — 4 bytes per reading: jitter, int16 value, exponent|flags
//	2: counter — 3 bytes per reading: uint16 increment, flags
//	3: float bits at regular times — 8 bytes per reading
func readingsFromBytes(data []byte) []Reading {
	if len(data) == 0 {
		return nil
	}
	shape, data := data[0]%4, data[1:]
	size := [...]int{17, 4, 3, 8}[shape]
	rs := make([]Reading, 0, len(data)/size)
	t, v := int64(t0), 0.0
	for ; len(data) >= size; data = data[size:] {
		var r Reading
		switch shape {
		case 0:
			r.Time = int64(binary.LittleEndian.Uint64(data))
			r.Value = math.Float64frombits(binary.LittleEndian.Uint64(data[8:]))
			r.Quality = Quality(data[16])
		case 1:
			t += 1000 + int64(int8(data[0]))
			r.Time = t
			r.Value = float64(int16(binary.LittleEndian.Uint16(data[1:]))) / pow10(int(data[3]%10))
			r.Quality = Quality(data[3] >> 4)
		case 2:
			t += 1000
			v += float64(binary.LittleEndian.Uint16(data))
			r.Time, r.Value, r.Quality = t, v, Quality(data[2])
		case 3:
			t += 1000
			r.Time = t
			r.Value = math.Float64frombits(binary.LittleEndian.Uint64(data))
		}
		rs = append(rs, r)
	}
	return rs
}
