package collection

import (
	"fmt"

	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/wire"
)

// Rule is what the hub enforces for one stream. A reading timed at or
// after Effective must satisfy Current. A reading timed before it may
// satisfy Current or Previous: it may have been collected and spooled
// under the previous policy (an agent learns of a change only at its next
// refresh, and may hold readings from before an outage), and data that
// left the edge lawfully must not be lost. Effective is the time of the
// last change plus the hub's grace period.
//
// The zero Rule is not valid; use DefaultRule for a stream without a
// stored policy.
type Rule struct {
	Current   Policy
	Previous  Policy
	Effective int64 // Unix ms
}

// DefaultRule accepts every reading: the rule of a stream whose policy
// was never set.
var DefaultRule = Rule{Current: Default, Previous: Default}

// Refusal says why readings were refused.
type Refusal string

// The reasons a reading is refused.
const (
	RefusedOff   Refusal = "stream must not be sent"
	RefusedFiner Refusal = "finer than the stream's policy allows"
)

// allows reports whether p allows a reading at t; prev is the time of the
// series' previous reading allowed as coarse (or a time that is no bucket
// boundary), to refuse a second reading for the same bucket.
func allows(p Policy, t int64, prev int64) bool {
	switch {
	case !p.Send:
		return false
	case p.Finest == rollup.Raw:
		return true
	case !p.Finest.Valid():
		return false // fail closed
	}
	return p.Finest.Bucket(t) == t && t != prev
}

// Filter returns the readings of one series (sorted by time, as the wire
// format delivers them) that the rule allows, the number refused and the
// reason for the first refusal. When nothing is refused it returns rs
// itself, without allocating. A coarse policy allows only readings on a
// bucket boundary of its resolution, one per boundary: what a compliant
// agent sends (see the package doc).
func (r Rule) Filter(rs []wire.Reading) (keep []wire.Reading, refused int, why Refusal) {
	if r.Current == Default && r.Previous == Default {
		return rs, 0, ""
	}
	const none = -1 << 63
	prev := int64(none)
	for i, x := range rs {
		ok := allows(r.Current, x.Time, prev) || x.Time < r.Effective && allows(r.Previous, x.Time, prev)
		if ok {
			prev = x.Time
			if keep != nil {
				keep = append(keep, x)
			}
			continue
		}
		if keep == nil {
			keep = make([]wire.Reading, i, len(rs))
			copy(keep, rs[:i])
		}
		if refused == 0 {
			why = RefusedFiner
			if !r.Current.Send {
				why = RefusedOff
			}
		}
		refused++
	}
	if keep == nil {
		return rs, 0, ""
	}
	return keep, refused, why
}

// String describes the rule for logs and operators.
func (r Rule) String() string {
	return fmt.Sprintf("%s (previously %s, until %d)", r.Current, r.Previous, r.Effective)
}
