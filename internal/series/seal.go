package series

import (
	"context"
	"fmt"
	"strconv"

	"github.com/custos-iot/custos/internal/errs"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// Sealer encrypts what the hub stores under the key of the data subject it
// belongs to, binding it to where it is stored with associated data.
// seal.Keys implements it.
type Sealer interface {
	Seal(ctx context.Context, s registry.SubjectID, plaintext, ad []byte) ([]byte, error)
	Open(ctx context.Context, s registry.SubjectID, ciphertext, ad []byte) ([]byte, error)
}

// Plain is a Sealer that does not encrypt. It exists for benchmarks that
// measure the cost of sealing and for tests of the layers above; a hub
// never serves data stored with it. Like a real Sealer, its results never
// alias its input.
type Plain struct{}

// Seal returns the plaintext.
func (Plain) Seal(_ context.Context, _ registry.SubjectID, p, _ []byte) ([]byte, error) {
	return p, nil
}

// Open returns the ciphertext.
func (Plain) Open(_ context.Context, _ registry.SubjectID, c, _ []byte) ([]byte, error) {
	return c, nil
}

// The associated data binds each sealed value to its tenant, stream and
// place: a landed block moved to another stream, a chunk moved to another
// stream or hour, a rollup moved to another resolution or period all fail
// to open.

// LandingAD is the associated data of a landed block.
func LandingAD(t registry.TenantID, s registry.StreamID) []byte {
	return ad("landing", string(t), string(s))
}

// ChunkAD is the associated data of a compacted chunk of an hour bucket.
func ChunkAD(t registry.TenantID, s registry.StreamID, bucket int64) []byte {
	return ad("chunk", string(t), string(s), strconv.FormatInt(bucket, 10))
}

// RollupAD is the associated data of a rollup row.
func RollupAD(t registry.TenantID, s registry.StreamID, res rollup.Resolution, period int64) []byte {
	return ad("rollup", string(t), string(s), string(res), strconv.FormatInt(period, 10))
}

func ad(kind string, parts ...string) []byte {
	b := []byte("custos/" + kind + "/v1")
	for _, p := range parts {
		b = append(b, 0)
		b = append(b, p...)
	}
	return b
}

// adFor is the associated data of a stored chunk or landed block.
func adFor(c *Chunk) []byte {
	if c.Landed {
		return LandingAD(c.Tenant, c.Stream)
	}
	return ChunkAD(c.Tenant, c.Stream, floorDiv(c.MinTime, BucketMS)*BucketMS)
}

// RollupQuery asks for a stream's aggregates at a resolution in [From, To).
type RollupQuery struct {
	Tenant registry.TenantID
	Stream registry.StreamID
	Res    rollup.Resolution
	From   int64
	To     int64
	// Sealer opens the stored rows. nil means Plain (tests only).
	Sealer Sealer
}

// MaxBuckets bounds the buckets one rollup read returns.
const MaxBuckets = 200_000

// ReadRollups returns the buckets of q's resolution that start in
// [From, To), in time order. Rollups follow the compactor, which runs every
// few seconds: the newest readings reach them within one pass.
func ReadRollups(ctx context.Context, src RollupSource, q RollupQuery) ([]rollup.Bucket, error) {
	const op errs.Op = "series.ReadRollups"
	if !q.Res.Valid() || q.Res == rollup.Raw {
		return nil, errs.E(op, errs.Invalid, "resolution must be one of 15m, 1h, 1d, 1mo")
	}
	if q.To <= q.From {
		return nil, errs.E(op, errs.Invalid, "the end of the range must be after its start")
	}
	sealer := q.Sealer
	if sealer == nil {
		sealer = Plain{}
	}
	var rows []*rollup.Row
	err := src.StreamRollups(ctx, q.Tenant, q.Stream, q.Res, q.Res.Period(q.From), q.Res.Period(q.To-1), func(r *RollupRow) error {
		pt, err := sealer.Open(ctx, r.Subject, r.Data, RollupAD(r.Tenant, r.Stream, r.Res, r.Period))
		if err != nil {
			if errs.KindOf(err) == errs.Other {
				return errs.E(errs.Integrity, fmt.Sprintf("a rollup of stream %s cannot be opened", q.Stream))
			}
			return err
		}
		row, err := rollup.DecodeRow(pt)
		if err != nil {
			return errs.E(errs.Integrity, fmt.Sprintf("a rollup of stream %s cannot be decoded", q.Stream))
		}
		rows = append(rows, row)
		return nil
	})
	if err != nil {
		return nil, errs.E(op, err)
	}
	bs := rollup.Buckets(rows, q.From, q.To)
	if len(bs) > MaxBuckets {
		return nil, errs.E(op, errs.Invalid, fmt.Sprintf("more than %d buckets: narrow the range or choose a coarser resolution", MaxBuckets))
	}
	return bs, nil
}
