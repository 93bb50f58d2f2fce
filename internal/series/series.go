// Package series owns stored readings: the chunk, the unit in which a
// stream's readings are kept, and the read path that turns chunks back into
// ordered, paginated readings.
//
// A chunk holds one wire block (see internal/wire) of one stream. The
// package never talks to a database itself: it reads chunks through the
// small ChunkSource interface its caller provides.
package series

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/wire"
)

// MaxChunkSpanMS bounds the time one chunk may cover. Ingest splits longer
// blocks, so a range read only considers chunks that start at most this
// long before the range.
const MaxChunkSpanMS = 3600_000

// Chunk is an encoded block of one stream's readings, stored as one row,
// sealed under its subject's key.
type Chunk struct {
	ID      int64 // assigned by the store; orders chunks that start at the same time
	Tenant  registry.TenantID
	Subject registry.SubjectID // whose data it is: the key that seals it
	Stream  registry.StreamID
	// Landed marks a block as received, not yet compacted (sealed with
	// LandingAD instead of ChunkAD).
	Landed  bool
	MinTime int64 // Unix ms of the earliest reading
	MaxTime int64 // Unix ms of the latest reading
	Count   int
	Data    []byte // a wire block
	// Hold, for a landed block, is when (Unix ms) the compactor may fold
	// it at the earliest: blocks of streams with a site role wait so that
	// the site balance check (see Screen) sees the other roles first. 0:
	// at once.
	Hold int64
}

// Batch is one connector batch as stored: all of its chunks or none.
type Batch struct {
	Connector registry.ConnectorID
	ID        wire.BatchID
	Readings  int
	Chunks    []Chunk
	// Audit, if set, is the batch's audit entry, encoded without its time
	// (audit.Entry.MarshalBinary). It is written to the audit queue in the
	// batch's own transaction, so the batch and its entry are durable
	// together, with one fsync.
	Audit []byte
	// Quarantine holds the readings the plausibility checks flagged; they
	// are stored with the batch, all or nothing, and not in Chunks.
	Quarantine []Quarantined
}

// ChunkSource yields the chunks of a stream that may hold readings in
// [from, to), ordered by MinTime then ID, until fn returns false.
type ChunkSource interface {
	StreamChunks(ctx context.Context, tenant registry.TenantID, stream registry.StreamID, from, to int64, fn func(*Chunk) (bool, error)) error
}

// Reading is a stored reading as served to readers.
type Reading struct {
	Time    int64        `json:"t"` // Unix ms
	Value   float64      `json:"v"`
	Quality wire.Quality `json:"q,omitempty"`
}

// Query asks for a stream's readings in [From, To).
type Query struct {
	Tenant registry.TenantID
	Stream registry.StreamID
	From   int64
	To     int64
	// Limit is the page size, 1..MaxLimit.
	Limit int
	// Cursor continues a previous page; empty for the first page.
	Cursor string
	// Sealer opens the stored chunks. nil means Plain (tests only).
	Sealer Sealer
}

// MaxLimit bounds the page size of a read.
const MaxLimit = 100_000

// Page is one page of readings in time order. Next is empty on the last page.
type Page struct {
	Readings []Reading `json:"readings"`
	Next     string    `json:"next,omitempty"`
}

// cursor marks where a page ended: after the first skip readings at time.
// It names readings by time and rank, not by storage location, so it stays
// valid when the compactor moves readings between landing and chunks.
type cursor struct {
	time int64
	skip int64
}

func (c cursor) String() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:], uint64(c.time))
	binary.BigEndian.PutUint64(b[8:], uint64(c.skip))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func parseCursor(s string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 16 {
		return cursor{}, errs.E(errs.Invalid, "malformed cursor")
	}
	c := cursor{time: int64(binary.BigEndian.Uint64(b[0:])), skip: int64(binary.BigEndian.Uint64(b[8:]))}
	if c.skip < 0 {
		return cursor{}, errs.E(errs.Invalid, "malformed cursor")
	}
	return c, nil
}

// Read returns one page of q. A reading is returned exactly once across the
// pages of a query, also when chunks overlap in time (late data).
func Read(ctx context.Context, src ChunkSource, q Query) (Page, error) {
	const op errs.Op = "series.Read"
	if q.Limit < 1 || q.Limit > MaxLimit {
		return Page{}, errs.E(op, errs.Invalid, fmt.Sprintf("limit must be between 1 and %d", MaxLimit))
	}
	if q.To <= q.From {
		return Page{}, errs.E(op, errs.Invalid, "the end of the range must be after its start")
	}
	sealer := q.Sealer
	if sealer == nil {
		sealer = Plain{}
	}
	from, skip := q.From, int64(0)
	if q.Cursor != "" {
		c, err := parseCursor(q.Cursor)
		if err != nil {
			return Page{}, errs.E(op, err)
		}
		if c.time < q.From || c.time >= q.To {
			return Page{}, errs.E(op, errs.Invalid, "cursor does not belong to this range")
		}
		from, skip = c.time, c.skip
	}

	// Chunks arrive ordered by MinTime. Once more than Limit+skip
	// candidates are held and the next chunk starts after the latest of
	// them, neither it nor any later chunk can change this page.
	var got []wire.Reading
	var buf []wire.Reading
	var integrity error
	latest := int64(-1 << 63)
	need := q.Limit + int(skip)
	err := src.StreamChunks(ctx, q.Tenant, q.Stream, from, q.To, func(c *Chunk) (bool, error) {
		if len(got) > need && c.MinTime > latest {
			return false, nil
		}
		block, err := sealer.Open(ctx, c.Subject, c.Data, adFor(c))
		if err != nil {
			integrity = errs.E(op, err)
			if errs.KindOf(err) == errs.Other {
				integrity = errs.E(op, errs.Integrity, fmt.Sprintf("a chunk of stream %s cannot be opened", q.Stream))
			}
			return false, nil
		}
		if got == nil {
			got = make([]wire.Reading, 0, min(c.Count*32, q.Limit+int(skip)+1, 1<<20))
		}
		if c.MinTime >= from && c.MaxTime < q.To {
			// Wholly inside the range (the common case): decode in place.
			n := len(got)
			if got, err = wire.DecodeBlock(block, got); err != nil {
				integrity = errs.E(op, errs.Integrity, fmt.Sprintf("a chunk of stream %s cannot be decoded", q.Stream))
				return false, nil
			}
			if len(got) > n {
				latest = max(latest, c.MaxTime)
			}
			return true, nil
		}
		buf, err = wire.DecodeBlock(block, buf[:0])
		if err != nil {
			integrity = errs.E(op, errs.Integrity, fmt.Sprintf("a chunk of stream %s cannot be decoded", q.Stream))
			return false, nil
		}
		for _, r := range buf {
			if r.Time >= from && r.Time < q.To {
				got = append(got, r)
				latest = max(latest, r.Time)
			}
		}
		return true, nil
	})
	if err != nil {
		return Page{}, errs.E(op, err)
	}
	if integrity != nil {
		return Page{}, integrity
	}
	// Readings of equal time are ordered by what they hold, not where they
	// are stored, so a cursor's rank means the same on the next page even
	// if the compactor moved them in between.
	if !slices.IsSortedFunc(got, compareReadings) {
		slices.SortFunc(got, compareReadings)
	}
	// Skip the readings of the cursor's time that earlier pages returned.
	start := 0
	for start < len(got) && int64(start) < skip && got[start].Time == from {
		start++
	}
	got = got[start:]
	page := Page{Readings: make([]Reading, 0, min(len(got), q.Limit))}
	for i, r := range got {
		if i == q.Limit {
			last := got[i-1].Time
			n := int64(0)
			for j := i - 1; j >= 0 && got[j].Time == last; j-- {
				n++
			}
			if last == from {
				n += skip
			}
			page.Next = cursor{last, n}.String()
			break
		}
		page.Readings = append(page.Readings, Reading{Time: r.Time, Value: r.Value, Quality: r.Quality})
	}
	return page, nil
}
