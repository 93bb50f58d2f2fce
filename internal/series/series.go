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

// Chunk is an encoded block of one stream's readings, stored as one row.
type Chunk struct {
	ID      int64 // assigned by the store; orders chunks that start at the same time
	Tenant  registry.TenantID
	Stream  registry.StreamID
	MinTime int64 // Unix ms of the earliest reading
	MaxTime int64 // Unix ms of the latest reading
	Count   int
	Data    []byte // a wire block
}

// Batch is one connector batch as stored: all of its chunks or none.
type Batch struct {
	Connector registry.ConnectorID
	ID        wire.BatchID
	Readings  int
	Chunks    []Chunk
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
}

// MaxLimit bounds the page size of a read.
const MaxLimit = 100_000

// Page is one page of readings in time order. Next is empty on the last page.
type Page struct {
	Readings []Reading `json:"readings"`
	Next     string    `json:"next,omitempty"`
}

// position totally orders stored readings: by time, then chunk, then index.
type position struct {
	time  int64
	chunk int64
	index int32
}

func (p position) less(q position) bool {
	if p.time != q.time {
		return p.time < q.time
	}
	if p.chunk != q.chunk {
		return p.chunk < q.chunk
	}
	return p.index < q.index
}

func (p position) cursor() string {
	var b [20]byte
	binary.BigEndian.PutUint64(b[0:], uint64(p.time))
	binary.BigEndian.PutUint64(b[8:], uint64(p.chunk))
	binary.BigEndian.PutUint32(b[16:], uint32(p.index))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func parseCursor(s string) (position, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 20 {
		return position{}, errs.E(errs.Invalid, "malformed cursor")
	}
	return position{
		time:  int64(binary.BigEndian.Uint64(b[0:])),
		chunk: int64(binary.BigEndian.Uint64(b[8:])),
		index: int32(binary.BigEndian.Uint32(b[16:])),
	}, nil
}

type positioned struct {
	pos position
	r   wire.Reading
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
	after := position{time: q.From, chunk: -1, index: -1}
	if q.Cursor != "" {
		p, err := parseCursor(q.Cursor)
		if err != nil {
			return Page{}, errs.E(op, err)
		}
		if p.time < q.From || p.time >= q.To {
			return Page{}, errs.E(op, errs.Invalid, "cursor does not belong to this range")
		}
		after = p
	}

	// Chunks arrive ordered by MinTime. Once more than Limit candidates are
	// held and the next chunk starts after the latest of them, neither it
	// nor any later chunk can change this page.
	var got []positioned
	var buf []wire.Reading
	var integrity error
	latest := int64(-1 << 63)
	err := src.StreamChunks(ctx, q.Tenant, q.Stream, after.time, q.To, func(c *Chunk) (bool, error) {
		if len(got) > q.Limit && c.MinTime > latest {
			return false, nil
		}
		var err error
		buf, err = wire.DecodeBlock(c.Data, buf[:0])
		if err != nil {
			integrity = errs.E(op, errs.Integrity, fmt.Sprintf("chunk %d of stream %s cannot be decoded", c.ID, q.Stream))
			return false, nil
		}
		for i, r := range buf {
			p := position{time: r.Time, chunk: c.ID, index: int32(i)}
			if r.Time >= q.To || !after.less(p) {
				continue
			}
			got = append(got, positioned{p, r})
			latest = max(latest, r.Time)
		}
		return true, nil
	})
	if err != nil {
		return Page{}, errs.E(op, err)
	}
	if integrity != nil {
		return Page{}, integrity
	}
	slices.SortFunc(got, func(a, b positioned) int {
		switch {
		case a.pos.less(b.pos):
			return -1
		case b.pos.less(a.pos):
			return 1
		}
		return 0
	})
	page := Page{Readings: make([]Reading, 0, min(len(got), q.Limit))}
	for i, g := range got {
		if i == q.Limit {
			page.Next = got[i-1].pos.cursor()
			break
		}
		page.Readings = append(page.Readings, Reading{Time: g.r.Time, Value: g.r.Value, Quality: g.r.Quality})
	}
	return page, nil
}
