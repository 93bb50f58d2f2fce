// Package wire owns the device protocol: the versioned, compact binary
// encoding of reading batches that the edge agent sends and the hub accepts,
// and the block codec for one stream's readings that the hub also keeps as
// its storage format.
//
// A body is one or more concatenated batches. A batch is
//
//	magic    "CSTB"
//	version  1 byte (1)
//	length   uvarint, number of bytes that follow in this batch
//	id       16 bytes, BatchID (never all zero)
//	count    uvarint, number of series (1..MaxSeriesPerBatch)
//	count × series:
//	  key    uvarint length, then the key bytes (see ValidKey)
//	  block  uvarint length, then the block bytes (see AppendBlock)
//
// Version 2 appends the meters section (see Meter); hubs read both.
//
// Every uvarint is minimally encoded. Decoding is strict: each length is
// checked against the remaining bytes and the limits before anything is
// allocated, and unknown versions, trailing bytes, duplicate keys, empty
// series, times outside [0, MaxTime) and non-finite values are rejected.
//
// Package wire is imported by both binaries, so it MUST NOT import any
// hub-side package (storage, crypto, HTTP, access control) nor anything
// beyond the standard library. Its errors name what is wrong and where (a
// byte offset, a series or reading index) and MUST NOT carry keys, values or
// other payload bytes.
package wire

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// Limits. A decoder rejects input exceeding one of them with ErrTooLarge
// before allocating for it; AppendBatch refuses to produce such input.
const (
	// MaxBatchBytes bounds the encoding of one batch, header included.
	MaxBatchBytes = 8 << 20
	// MaxReadingsPerBatch bounds the readings of one batch, and of one block.
	MaxReadingsPerBatch = 200_000
	// MaxSeriesPerBatch bounds the series of one batch.
	MaxSeriesPerBatch = 10_000
	// MaxBatchesPerBody bounds the batches of one request body.
	MaxBatchesPerBody = 1024
	// MaxBodyBytes bounds one request body.
	MaxBodyBytes = 32 << 20
	// MaxReadingsPerBody bounds the readings of one request body. Blocks
	// compress regular series to a few bytes, so without it a small body
	// could make the decoder allocate gigabytes (a Reading takes 24 bytes).
	MaxReadingsPerBody = 1_000_000
	// MaxTime is the first reading time not accepted in a batch:
	// 2200-01-01T00:00:00Z in Unix milliseconds. Times start at 0.
	MaxTime = 7258118400000
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them; match with errors.Is.
var (
	// ErrMalformed means the bytes (or, from AppendBatch, the batch) do
	// not follow the format or break one of its rules. Reject the input
	// and do not retry it unchanged: it will never be accepted.
	ErrMalformed = errors.New("wire: malformed")
	// ErrVersion means the input uses a version of the format this side
	// does not know. Upgrade the agent or the hub; the input may be valid.
	ErrVersion = errors.New("wire: unknown version")
	// ErrTooLarge means a limit is exceeded. Split the batch (or the body)
	// into smaller ones and send them again.
	ErrTooLarge = errors.New("wire: too large")
)

// errAt returns an error of the given kind saying what is wrong at byte
// offset off. what MUST NOT contain payload bytes.
func errAt(kind error, off int, what string) error {
	return fmt.Errorf("%w at byte %d: %s", kind, off, what)
}

// Quality is a bit set of per-reading quality flags. The zero value means
// a good reading.
type Quality uint8

// The quality flags. A batch carrying any other bit is malformed.
const (
	QualityUncertain     Quality = 1 << iota // source flagged the value as uncertain
	QualityBad                               // source flagged the value as bad
	QualitySubstituted                       // value was estimated/substituted by the agent
	QualityClockUnsynced                     // timestamp taken while the device clock was unsynchronised

	qualityKnown = QualityUncertain | QualityBad | QualitySubstituted | QualityClockUnsynced
)

// Reading is one measurement. Time is Unix milliseconds (UTC).
type Reading struct {
	Time    int64
	Value   float64
	Quality Quality
}

// BatchID identifies a batch for idempotency: the hub stores a batch ID at
// most once. Agents generate it randomly when the batch is sealed; the zero
// ID is never valid.
type BatchID [16]byte

// String returns the ID as 32 lowercase hex digits.
func (id BatchID) String() string { return hex.EncodeToString(id[:]) }

// ParseBatchID parses 32 hex digits (either case) into a BatchID. It
// rejects the zero ID. The error wraps ErrMalformed.
func ParseBatchID(s string) (BatchID, error) {
	var id BatchID
	if len(s) != 2*len(id) {
		return BatchID{}, fmt.Errorf("%w: batch ID must be %d hex digits, got %d characters", ErrMalformed, 2*len(id), len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return BatchID{}, fmt.Errorf("%w: batch ID is not hex", ErrMalformed)
	}
	if id == (BatchID{}) {
		return BatchID{}, fmt.Errorf("%w: batch ID is zero", ErrMalformed)
	}
	return id, nil
}

// Series is the readings of one stream within a batch.
type Series struct {
	// Key is the stream key, "<device>/<metric>"; see ValidKey.
	Key string
	// Readings are the readings, in the order the agent recorded them
	// (not necessarily sorted by time).
	Readings []Reading
	// Block is, after decoding, the encoded block of Readings; it aliases
	// the decoded input. Encoders ignore it.
	Block []byte
	// MinTime and MaxTime are, after decoding, the smallest and the
	// largest reading time. Encoders ignore them.
	MinTime, MaxTime int64
}

// Batch is the unit an agent seals, sends and retries, and the hub stores
// at most once.
type Batch struct {
	ID     BatchID
	Series []Series
	// Meters, if any, report the meter identity of devices of the
	// series (see Meter); a batch with meters is encoded as version 2.
	Meters []Meter
}

// Len returns the total number of readings in b.
func (b *Batch) Len() int {
	n := 0
	for i := range b.Series {
		n += len(b.Series[i].Readings)
	}
	return n
}

// Key length bounds, in bytes.
const (
	minKeyLen = 3
	maxKeyLen = 200
)

// ValidKey reports whether k is an acceptable stream key: 3 to 200 bytes of
// at least two '/'-separated segments, each non-empty, made of
// [A-Za-z0-9._-], and neither "." nor ".." (keys may end up in paths).
func ValidKey(k string) bool { return validKey(k) }

func validKey[T string | []byte](k T) bool {
	if len(k) < minKeyLen || len(k) > maxKeyLen {
		return false
	}
	segments, start := 0, 0
	for i := 0; i <= len(k); i++ {
		if i < len(k) && k[i] != '/' {
			if !keyByte(k[i]) {
				return false
			}
			continue
		}
		if !validSegment(k[start:i]) {
			return false
		}
		segments++
		start = i + 1
	}
	return segments >= 2
}

func validSegment[T string | []byte](s T) bool {
	switch len(s) {
	case 0:
		return false
	case 1:
		return s[0] != '.'
	case 2:
		return s[0] != '.' || s[1] != '.'
	}
	return true
}

func keyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// NewBatchID returns a fresh batch ID: the first 6 bytes are the Unix
// millisecond time (big-endian), the other 10 are random. The time prefix
// keeps the hub's idempotency index append-mostly; uniqueness comes from
// the 80 random bits. The hub never relies on the prefix being true.
func NewBatchID(now time.Time, rand io.Reader) (BatchID, error) {
	var id BatchID
	ms := uint64(now.UnixMilli())
	for i := range 6 {
		id[i] = byte(ms >> (8 * (5 - i)))
	}
	if _, err := io.ReadFull(rand, id[6:]); err != nil {
		return BatchID{}, fmt.Errorf("wire: batch ID: %w", err)
	}
	if id == (BatchID{}) {
		id[15] = 1
	}
	return id, nil
}
