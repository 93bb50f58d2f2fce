package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

const (
	magic        = "CSTB"
	version      = 1
	versionMeter = 2 // version 1 plus the meters section
	idLen        = len(BatchID{})
	lenReserve   = 4 // uvarint bytes of MaxBatchBytes
	blockReserve = 2 // uvarint bytes reserved for a block length, grown if needed
	// minSeriesLen is the fewest bytes a series can take: key length, key,
	// block length, and a block of one reading (version, count, time,
	// mode, value, quality flags and run).
	minSeriesLen = 1 + minKeyLen + 1 + 7
)

// AppendBatch appends the encoding of b to dst and returns the extended
// slice. It ignores the Block, MinTime and MaxTime fields of b's series. If
// b is not a valid batch — zero ID, no series, an empty series, an invalid
// or duplicate key, a time outside [0, MaxTime), a non-finite value,
// unknown quality flags — it returns dst unchanged and an error wrapping
// ErrMalformed; if b exceeds a limit, one wrapping ErrTooLarge.
func AppendBatch(dst []byte, b *Batch) ([]byte, error) {
	if err := checkBatch(b); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, magic...)
	if len(b.Meters) > 0 {
		dst = append(dst, versionMeter)
	} else {
		dst = append(dst, version) // what hubs before meters read
	}
	lenAt := len(dst)
	dst = append(dst, make([]byte, lenReserve)...)
	dst = append(dst, b.ID[:]...)
	dst = binary.AppendUvarint(dst, uint64(len(b.Series)))
	for i := range b.Series {
		dst = appendSeries(dst, &b.Series[i])
	}
	if len(b.Meters) > 0 {
		dst = binary.AppendUvarint(dst, uint64(len(b.Meters)))
		for _, m := range b.Meters {
			dst = binary.AppendUvarint(dst, uint64(len(m.Device)))
			dst = append(dst, m.Device...)
			dst = binary.AppendUvarint(dst, uint64(len(m.ID)))
			dst = append(dst, m.ID...)
		}
	}
	dst = putPrefix(dst, lenAt, lenReserve)
	if len(dst)-start > MaxBatchBytes {
		return dst[:start], fmt.Errorf("%w: batch encodes to more than %d bytes", ErrTooLarge, MaxBatchBytes)
	}
	return dst, nil
}

func appendSeries(dst []byte, s *Series) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s.Key)))
	dst = append(dst, s.Key...)
	at := len(dst)
	dst = append(dst, make([]byte, blockReserve)...)
	dst = AppendBlock(dst, s.Readings)
	return putPrefix(dst, at, blockReserve)
}

// checkBatch reports why b cannot be encoded, if it cannot.
func checkBatch(b *Batch) error {
	if b.ID == (BatchID{}) {
		return fmt.Errorf("%w: batch ID is zero", ErrMalformed)
	}
	if len(b.Series) == 0 {
		return fmt.Errorf("%w: batch has no series", ErrMalformed)
	}
	if len(b.Series) > MaxSeriesPerBatch {
		return fmt.Errorf("%w: batch has more than %d series", ErrTooLarge, MaxSeriesPerBatch)
	}
	total := 0
	for i := range b.Series {
		s := &b.Series[i]
		if !ValidKey(s.Key) {
			return fmt.Errorf("%w: series %d: invalid key", ErrMalformed, i)
		}
		if len(s.Readings) == 0 {
			return fmt.Errorf("%w: series %d: no readings", ErrMalformed, i)
		}
		if total += len(s.Readings); total > MaxReadingsPerBatch {
			return fmt.Errorf("%w: batch has more than %d readings", ErrTooLarge, MaxReadingsPerBatch)
		}
		if _, _, j, why := checkReadings(s.Readings); why != "" {
			return fmt.Errorf("%w: series %d: reading %d: %s", ErrMalformed, i, j, why)
		}
	}
	if i, j := duplicateKey(b.Series); i >= 0 {
		return fmt.Errorf("%w: series %d: duplicate key of series %d", ErrMalformed, j, i)
	}
	if i, why := checkMeters(b.Meters, b.Series); why != "" {
		return fmt.Errorf("%w: meter %d: %s", ErrMalformed, i, why)
	}
	return nil
}

// checkReadings returns the smallest and largest time of rs, or the index
// of the first reading a batch may not carry and why.
func checkReadings(rs []Reading) (minT, maxT int64, bad int, why string) {
	minT, maxT = math.MaxInt64, math.MinInt64
	for i := range rs {
		r := &rs[i]
		switch {
		case r.Time < 0 || r.Time >= MaxTime:
			return 0, 0, i, "time out of range"
		case math.Float64bits(r.Value)>>52&0x7ff == 0x7ff:
			return 0, 0, i, "value is NaN or infinite"
		case r.Quality&^qualityKnown != 0:
			return 0, 0, i, "unknown quality flags"
		}
		minT = min(minT, r.Time)
		maxT = max(maxT, r.Time)
	}
	return minT, maxT, -1, ""
}

// duplicateKey returns the indexes i < j of two series with the same key,
// or -1, -1.
func duplicateKey(ss []Series) (int, int) {
	const linear = 16 // below this, comparing all pairs beats a map
	if len(ss) <= linear {
		for j := range ss {
			for i := range j {
				if ss[i].Key == ss[j].Key {
					return i, j
				}
			}
		}
		return -1, -1
	}
	seen := make(map[string]int, len(ss))
	for j := range ss {
		if i, ok := seen[ss[j].Key]; ok {
			return i, j
		}
		seen[ss[j].Key] = j
	}
	return -1, -1
}

// DecodeBatch decodes the one batch that occupies all of data. The series'
// Readings share one allocation; their Block fields alias data. The error
// wraps ErrMalformed, ErrVersion or ErrTooLarge.
func DecodeBatch(data []byte) (Batch, error) {
	body, end, err := batchFrame(data, 0)
	if err != nil {
		return Batch{}, err
	}
	if end != len(data) {
		return Batch{}, errAt(ErrMalformed, end, "trailing bytes after batch")
	}
	return decodeBatchBody(data, body, 0)
}

// DecodeBatches decodes a request body of one or more concatenated batches.
// The error wraps ErrMalformed, ErrVersion or ErrTooLarge and gives the
// offset in body.
func DecodeBatches(body []byte) ([]Batch, error) {
	if len(body) > MaxBodyBytes {
		return nil, fmt.Errorf("%w: body is larger than %d bytes", ErrTooLarge, MaxBodyBytes)
	}
	if len(body) == 0 {
		return nil, errAt(ErrMalformed, 0, "empty body")
	}
	n, err := countBatches(body)
	if err != nil {
		return nil, err
	}
	out := make([]Batch, 0, n)
	readings := 0
	for pos := 0; pos < len(body); {
		start, end, _ := batchFrame(body[pos:], pos) // checked by countBatches
		b, err := decodeBatchBody(body[pos:pos+end], start, pos)
		if err != nil {
			return nil, err
		}
		if readings += b.Len(); readings > MaxReadingsPerBody {
			return nil, errAt(ErrTooLarge, pos, fmt.Sprintf("body holds more than %d readings", MaxReadingsPerBody))
		}
		out = append(out, b)
		pos += end
	}
	return out, nil
}

// countBatches walks the batch frames of body and returns their number.
func countBatches(body []byte) (int, error) {
	n := 0
	for pos := 0; pos < len(body); n++ {
		if n == MaxBatchesPerBody {
			return 0, errAt(ErrTooLarge, pos, fmt.Sprintf("body holds more than %d batches", MaxBatchesPerBody))
		}
		_, end, err := batchFrame(body[pos:], pos)
		if err != nil {
			return 0, err
		}
		pos += end
	}
	return n, nil
}

// batchFrame checks the header of the batch at the start of data and
// returns the offset of its ID and the offset just past it. base is the
// offset of data in the input, for error messages.
func batchFrame(data []byte, base int) (body, end int, err error) {
	for i := range min(len(data), len(magic)) {
		if data[i] != magic[i] {
			return 0, 0, errAt(ErrMalformed, base, "bad magic")
		}
	}
	if len(data) <= len(magic) {
		return 0, 0, errAt(ErrMalformed, base+len(data), "truncated batch header")
	}
	if v := data[len(magic)]; v != version && v != versionMeter {
		return 0, 0, errAt(ErrVersion, base+len(magic), fmt.Sprintf("batch version %d", v))
	}
	pos := len(magic) + 1
	n, k := uvarint(data, pos)
	if k <= 0 {
		return 0, 0, errAt(ErrMalformed, base+pos, "bad batch length")
	}
	if n > MaxBatchBytes {
		return 0, 0, errAt(ErrTooLarge, base+pos, fmt.Sprintf("batch is larger than %d bytes", MaxBatchBytes))
	}
	pos += k
	if n > uint64(len(data)-pos) {
		return 0, 0, errAt(ErrMalformed, base+pos, "batch length exceeds remaining bytes")
	}
	if end = pos + int(n); end > MaxBatchBytes {
		return 0, 0, errAt(ErrTooLarge, base+pos, fmt.Sprintf("batch is larger than %d bytes", MaxBatchBytes))
	}
	return pos, end, nil
}

// decodeBatchBody decodes the batch data[pos:], whose frame batchFrame
// has checked. base is the offset of data in the input.
func decodeBatchBody(data []byte, pos, base int) (Batch, error) {
	var b Batch
	if len(data)-pos < idLen {
		return Batch{}, errAt(ErrMalformed, base+pos, "truncated batch ID")
	}
	copy(b.ID[:], data[pos:])
	if b.ID == (BatchID{}) {
		return Batch{}, errAt(ErrMalformed, base+pos, "batch ID is zero")
	}
	pos += idLen
	count, k := uvarint(data, pos)
	switch {
	case k <= 0:
		return Batch{}, errAt(ErrMalformed, base+pos, "bad series count")
	case count == 0:
		return Batch{}, errAt(ErrMalformed, base+pos, "batch has no series")
	case count > MaxSeriesPerBatch:
		return Batch{}, errAt(ErrTooLarge, base+pos, fmt.Sprintf("batch has more than %d series", MaxSeriesPerBatch))
	case count > uint64((len(data)-pos-k)/minSeriesLen):
		return Batch{}, errAt(ErrMalformed, base+pos, "series count exceeds remaining bytes")
	}
	pos += k
	b.Series = make([]Series, count)
	blocks := make([]blockSpan, count)
	total := 0
	for i := range b.Series {
		var err error
		if pos, blocks[i], err = parseSeries(data, pos, base, &b.Series[i]); err != nil {
			return Batch{}, fmt.Errorf("series %d: %w", i, err)
		}
		if total += blocks[i].n; total > MaxReadingsPerBatch {
			return Batch{}, errAt(ErrTooLarge, base+blocks[i].at, fmt.Sprintf("batch has more than %d readings", MaxReadingsPerBatch))
		}
	}
	if data[len(magic)] == versionMeter {
		var err error
		if pos, err = parseMeters(data, pos, base, &b); err != nil {
			return Batch{}, err
		}
	}
	if pos != len(data) {
		return Batch{}, errAt(ErrMalformed, base+pos, "trailing bytes in batch")
	}
	if i, j := duplicateKey(b.Series); i >= 0 {
		return Batch{}, fmt.Errorf("series %d: %w", j, errAt(ErrMalformed, base+blocks[j].at, fmt.Sprintf("duplicate key of series %d", i)))
	}
	if i, why := checkMeters(b.Meters, b.Series); why != "" {
		return Batch{}, fmt.Errorf("meter %d: %w", i, errAt(ErrMalformed, base+pos, why))
	}
	if err := decodeSeries(b.Series, blocks, total, base); err != nil {
		return Batch{}, err
	}
	return b, nil
}

// blockSpan locates a series' block in the batch: its offset, the offset
// of its body and its reading count.
type blockSpan struct {
	at, body, n int
}

// parseSeries parses the key and block header of the series at data[pos:]
// into s and returns the offset past it and where its block is.
func parseSeries(data []byte, pos, base int, s *Series) (int, blockSpan, error) {
	n, k := uvarint(data, pos)
	switch {
	case k <= 0:
		return 0, blockSpan{}, errAt(ErrMalformed, base+pos, "bad key length")
	case n > maxKeyLen:
		return 0, blockSpan{}, errAt(ErrMalformed, base+pos, "key too long")
	case n > uint64(len(data)-pos-k):
		return 0, blockSpan{}, errAt(ErrMalformed, base+pos, "key length exceeds remaining bytes")
	}
	pos += k
	key := data[pos : pos+int(n)]
	if !validKey(key) {
		return 0, blockSpan{}, errAt(ErrMalformed, base+pos, "invalid key")
	}
	s.Key = string(key)
	pos += int(n)
	if n, k = uvarint(data, pos); k <= 0 {
		return 0, blockSpan{}, errAt(ErrMalformed, base+pos, "bad block length")
	}
	if n > uint64(len(data)-pos-k) {
		return 0, blockSpan{}, errAt(ErrMalformed, base+pos, "block length exceeds remaining bytes")
	}
	pos += k
	end := pos + int(n)
	s.Block = data[pos:end:end]
	count, body, err := blockHeader(s.Block, base+pos)
	if err != nil {
		return 0, blockSpan{}, err
	}
	if count == 0 {
		return 0, blockSpan{}, errAt(ErrMalformed, base+pos, "empty series")
	}
	return end, blockSpan{at: pos, body: body, n: count}, nil
}

// decodeSeries decodes the blocks of ss into one allocation of total
// readings and checks that a batch may carry them.
func decodeSeries(ss []Series, blocks []blockSpan, total, base int) error {
	all := make([]Reading, total)
	for i := range ss {
		s, sp := &ss[i], blocks[i]
		s.Readings, all = all[:sp.n:sp.n], all[sp.n:]
		if err := decodeBlockBody(s.Block, sp.body, s.Readings, base+sp.at); err != nil {
			return fmt.Errorf("series %d: %w", i, err)
		}
		var j int
		var why string
		if s.MinTime, s.MaxTime, j, why = checkReadings(s.Readings); why != "" {
			return fmt.Errorf("series %d: %w", i, errAt(ErrMalformed, base+sp.at, fmt.Sprintf("reading %d: %s", j, why)))
		}
	}
	return nil
}
