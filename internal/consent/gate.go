package consent

import (
	"context"
	"fmt"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// Source answers the gate's questions from storage.
type Source interface {
	// Purpose returns the newest version of a tenant's purpose, or an
	// errs.NotFound error.
	Purpose(ctx context.Context, t registry.TenantID, p PurposeID) (Purpose, error)
	// LatestConsent returns the newest consent record of a subject for a
	// purpose; ok is false if there is none.
	LatestConsent(ctx context.Context, t registry.TenantID, s registry.SubjectID, p PurposeID) (r Record, ok bool, err error)
	// Restriction returns the subject's restriction or objection of a
	// purpose; ok is false if there is none.
	Restriction(ctx context.Context, t registry.TenantID, s registry.SubjectID, p PurposeID) (r Restriction, ok bool, err error)
}

// Gate decides whether a subject's data may be processed for a purpose.
// The lead wires it into reads and ingest; it is safe for concurrent use.
type Gate struct {
	// Source is the storage. Must be non-nil.
	Source Source
}

// Allowed reports whether data of category c of subject s may be processed
// for purpose p at time at, and why not. It fails closed: on an error the
// answer is false with the error. The reason never holds personal data.
//
// The rules: the purpose must exist and cover the category; the subject
// must not have restricted or objected to it; and if its lawful basis is
// consent, a consent must be in force at at.
func (g Gate) Allowed(ctx context.Context, t registry.TenantID, s registry.SubjectID, p PurposeID, c registry.Category, at time.Time) (bool, string, error) {
	pur, err := g.Source.Purpose(ctx, t, p)
	if errs.Is(errs.NotFound, err) {
		return false, fmt.Sprintf("purpose %q is not defined in this tenant", p), nil
	}
	if err != nil {
		return false, "the purpose cannot be checked", err
	}
	if !pur.Covers(c) {
		return false, fmt.Sprintf("purpose %q does not cover data category %q", p, c), nil
	}
	r, ok, err := g.Source.Restriction(ctx, t, s, p)
	if err != nil {
		return false, "restrictions cannot be checked", err
	}
	if ok {
		return false, fmt.Sprintf("the data subject's %s stops processing for purpose %q", r.Kind, p), nil
	}
	if pur.Basis != BasisConsent {
		return true, fmt.Sprintf("lawful basis %s", pur.Basis), nil
	}
	rec, ok, err := g.Source.LatestConsent(ctx, t, s, p)
	if err != nil {
		return false, "consent cannot be checked", err
	}
	if !ok {
		return false, fmt.Sprintf("no consent for purpose %q", p), nil
	}
	if !InForce(rec, at) {
		if rec.Event == Given {
			return false, fmt.Sprintf("consent for purpose %q expired", p), nil
		}
		return false, fmt.Sprintf("consent for purpose %q was %s", p, rec.Event), nil
	}
	return true, fmt.Sprintf("consent %s given on notice version %d", rec.ID, rec.NoticeVersion), nil
}

// StreamRef is what the collection policy needs to know of a stream.
type StreamRef struct {
	Stream   registry.StreamID
	Subject  registry.SubjectID
	Category registry.Category
}

// Collection is the collection policy of one stream derived from the
// purposes in force: whether it is collected at all, at which finest
// resolution, and for which purposes.
type Collection struct {
	Stream   registry.StreamID `json:"stream"`
	Collect  bool              `json:"collect"`
	Finest   rollup.Resolution `json:"finest,omitempty"`
	Purposes []PurposeID       `json:"purposes"`
}

// Collections derives, for each stream, the finest resolution at which it
// may be collected at time at: the finest that any of the given purposes
// in force for its subject and category needs. A stream no purpose allows
// is not collected. E.g. with "monitoring" (consent, raw) withdrawn and
// "billing" (contract, 15m) defined, a meter's stream is collected at 15m.
// It fails closed: on an error nothing is returned.
func (g Gate) Collections(ctx context.Context, t registry.TenantID, purposes []PurposeID, streams []StreamRef, at time.Time) ([]Collection, error) {
	out := make([]Collection, 0, len(streams))
	for _, st := range streams {
		c := Collection{Stream: st.Stream, Purposes: []PurposeID{}}
		for _, p := range purposes {
			ok, _, err := g.Allowed(ctx, t, st.Subject, p, st.Category, at)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			pur, err := g.Source.Purpose(ctx, t, p)
			if err != nil {
				return nil, err
			}
			c.Purposes = append(c.Purposes, p)
			if !c.Collect || pur.Finest.Finer(c.Finest) {
				c.Finest = pur.Finest
			}
			c.Collect = true
		}
		out = append(out, c)
	}
	return out, nil
}
