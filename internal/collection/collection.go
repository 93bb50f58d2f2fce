// Package collection owns the collection policy: which of a stream's
// readings may leave the edge, and at which finest resolution (raw, 15m,
// 1h, 1d, 1mo). The hub stores a Policy per stream and serves each
// connector a Document; the agent applies it with an Aggregator before
// anything is spooled; the hub checks arriving readings with Check, so a
// reading finer than the policy allows is never stored.
//
// The package does no I/O and is imported by both binaries: it MUST NOT
// import any hub-side package (store, api, ingest) nor log reading values.
//
// # Coarse readings
//
// At a resolution coarser than raw the agent sends one reading per UTC
// bucket (see package rollup), always timestamped on a bucket boundary:
//
//   - a gauge (power, temperature, anything not a counter) is sent as the
//     mean of the bucket's readings, timestamped at the bucket's start;
//   - a counter (energy or volume register, see KindOf) is sent as the
//     register's value at the bucket's end (the last reading of the
//     bucket), timestamped at the bucket's end, which is the next
//     bucket's start.
//
// So a reading at time t of a coarse gauge is the mean over [t, t+w), and a
// reading at time t of a coarse counter is the register at t. The hub's
// rollups then hold, for each bucket of the policy resolution, exactly one
// reading: a gauge bucket's mean is the agent's mean, and a counter
// bucket's min (= first) is the register at the bucket's start, so the
// consumption of a bucket is the next bucket's min minus its own min.
//
// Buckets are UTC; time zones and daylight saving time play no part.
package collection

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/rollup"
)

// Policy is the collection policy of one stream.
type Policy struct {
	// Send says whether the stream's readings may leave the edge at all.
	Send bool `json:"send"`
	// Finest is the finest resolution at which they may leave it.
	Finest rollup.Resolution `json:"finest"`
}

// Default is the policy of a stream nobody set one for: raw readings are
// sent, as before collection policies existed.
var Default = Policy{Send: true, Finest: rollup.Raw}

// Check validates a policy: Finest must be one of the five resolutions
// (also when Send is false, so the stored value is always meaningful).
func (p Policy) Check() error {
	if !p.Finest.Valid() {
		return errs.E(errs.Invalid, fmt.Sprintf("finest resolution %.40q: want one of raw, 15m, 1h, 1d, 1mo", string(p.Finest)))
	}
	return nil
}

// String is "raw", "15m", ... or "off".
func (p Policy) String() string {
	if !p.Send {
		return "off"
	}
	return string(p.Finest)
}

// Parse reads a policy written as String writes it: "off", or a
// resolution.
func Parse(s string) (Policy, error) {
	if s == "off" {
		return Policy{Send: false, Finest: rollup.Raw}, nil
	}
	r, err := rollup.ParseResolution(s)
	if err != nil {
		return Policy{}, errs.E(errs.Invalid, fmt.Sprintf("policy %.40q: want off, raw, 15m, 1h, 1d or 1mo", s))
	}
	return Policy{Send: true, Finest: r}, nil
}

// Kind says how a stream's readings are coarsened.
type Kind string

// The kinds.
const (
	// Gauge readings are averaged per bucket (power, temperature, ...).
	Gauge Kind = "gauge"
	// Counter readings are a cumulative register (energy, volume); per
	// bucket the register's value at the bucket's end is sent.
	Counter Kind = "counter"
)

// counterUnits are the units of cumulative registers.
var counterUnits = []string{"Wh", "kWh", "MWh", "varh", "kvarh", "J", "kJ", "MJ", "GJ", "m³", "m3", "l", "L"}

// KindOf returns the kind of a stream with the given unit (see
// registry.Stream.Unit): a counter for energy and volume units, a gauge
// for everything else.
func KindOf(unit string) Kind {
	if slices.Contains(counterUnits, strings.TrimSpace(unit)) {
		return Counter
	}
	return Gauge
}

// StreamPolicy is the policy of one stream as a connector receives it.
type StreamPolicy struct {
	Key string `json:"key"`
	Policy
	Kind Kind `json:"kind"`
}

// Document is the collection policy of one connector: every stream it may
// write, with its policy. Version changes whenever the content does, and
// serves as the HTTP entity tag.
type Document struct {
	Version string         `json:"version"`
	Streams []StreamPolicy `json:"streams"`
}

// NewDocument returns the document for the streams, sorted by key, with
// its Version computed from the content.
func NewDocument(streams []StreamPolicy) Document {
	s := slices.Clone(streams)
	slices.SortFunc(s, func(a, b StreamPolicy) int { return strings.Compare(a.Key, b.Key) })
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return Document{Version: hex.EncodeToString(sum[:12]), Streams: s}
}

// Lookup returns the policy of a key; ok is false for a key the document
// does not list (the hub does not know it: it must not be sent).
func (d *Document) Lookup(key string) (StreamPolicy, bool) {
	i, ok := slices.BinarySearchFunc(d.Streams, key, func(p StreamPolicy, k string) int { return strings.Compare(p.Key, k) })
	if !ok {
		return StreamPolicy{}, false
	}
	return d.Streams[i], true
}

// Record is a stream's stored policy as operators see it.
type Record struct {
	Stream string `json:"stream"` // the stream's ID
	Policy
	// Previous is the policy before the last change; the hub still
	// accepts readings timed before the change plus its grace period
	// under it (see Rule).
	Previous Policy `json:"previous"`
	// Version counts the changes; 0 means the policy was never set (Default).
	Version int64 `json:"version"`
	// Reason says why it was last set (free text, e.g. "consent to
	// real-time monitoring withdrawn"); it must carry no personal data.
	Reason  string    `json:"reason,omitempty"`
	Updated time.Time `json:"updated,omitzero"`
	// Refused counts the readings the hub refused under this stream's
	// policy; LastRefused is when it last did.
	Refused     int64     `json:"refused_readings"`
	LastRefused time.Time `json:"last_refused,omitzero"`
}

// ETag is the record's entity tag for HTTP.
func (r Record) ETag() string { return fmt.Sprintf(`"%d"`, r.Version) }

// Rule returns the rule the hub enforces for the record, given its grace
// period after a change.
func (r Record) Rule(grace time.Duration) Rule {
	if r.Version == 0 {
		return DefaultRule
	}
	return Rule{Current: r.Policy, Previous: r.Previous, Effective: r.Updated.Add(grace).UnixMilli()}
}

// CheckReason validates the reason given for a change.
func CheckReason(s string) error {
	if len(s) > 500 {
		return errs.E(errs.Invalid, "reason must be at most 500 characters")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return errs.E(errs.Invalid, "reason must not contain control characters")
		}
	}
	return nil
}
