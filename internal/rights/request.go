// Package rights owns data subjects' rights requests (GDPR art. 15-21):
// their one-month deadline and status, and carrying them out across the
// data map — an access/portability export gathers every registered
// store's data about the subject into one machine-readable archive (JSON
// and CSV in a zip); an erasure runs every registered store's erase
// handler and keeps the evidence; a rectification names the subject's
// stream, its grounds and what to correct (the corrected readings are
// applied by internal/series), and its evidence holds counts, never the
// wrong values. It also parses corrections files.
//
// It knows stores only through the data map (internal/datamap); it must
// never write personal data into errors, logs or evidence.
package rights

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/custos-iot/custos/internal/consent"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// RequestID names a rights request.
type RequestID string

// Kind is the right exercised.
type Kind string

// The rights.
const (
	Access        Kind = "access"        // art. 15
	Portability   Kind = "portability"   // art. 20
	Rectification Kind = "rectification" // art. 16
	Erasure       Kind = "erasure"       // art. 17
	Restriction   Kind = "restriction"   // art. 18
	Objection     Kind = "objection"     // art. 21
)

// Kinds lists the rights.
var Kinds = []Kind{Access, Portability, Rectification, Erasure, Restriction, Objection}

// Status is where a request stands.
type Status string

// The statuses.
const (
	Open       Status = "open"
	InProgress Status = "in-progress"
	Done       Status = "done"
	Refused    Status = "refused"
)

// Requester is who made the request.
type Requester string

// The requesters.
const (
	BySubject Requester = "subject"
	ByAdmin   Requester = "admin"
	ByDPO     Requester = "dpo"
)

// Request is a data subject's rights request.
type Request struct {
	ID          RequestID          `json:"id"`
	Tenant      registry.TenantID  `json:"tenant"`
	Subject     registry.SubjectID `json:"subject"`
	Kind        Kind               `json:"kind"`
	RequestedBy Requester          `json:"requested_by"`
	// Purpose is the purpose restricted or objected to (restriction and
	// objection only).
	Purpose consent.PurposeID `json:"purpose,omitempty"`
	// Rectification is what a rectification request asks for
	// (rectification only).
	Rectification *RectificationClaim `json:"rectification,omitempty"`
	Status        Status              `json:"status"`
	Opened        time.Time           `json:"opened"`
	// Due is one month after Opened (art. 12(3)).
	Due     time.Time `json:"due"`
	Updated time.Time `json:"updated"`
	// Reason explains a refusal.
	Reason string `json:"reason,omitempty"`
	// Evidence records what was done (for an erasure: what was erased
	// where; for an export: the archive's name, size and hash; for a
	// rectification: RectificationEvidence).
	Evidence json.RawMessage `json:"evidence,omitempty"`
}

// DueAfter is the deadline of a request opened at t: one month.
func DueAfter(t time.Time) time.Time { return t.AddDate(0, 1, 0) }

// Overdue reports whether the request is still unanswered after its deadline.
func (r Request) Overdue(now time.Time) bool {
	return (r.Status == Open || r.Status == InProgress) && now.After(r.Due)
}

// Check validates a new request.
func (r Request) Check() error {
	if !slices.Contains(Kinds, r.Kind) {
		return errs.E(errs.Invalid, fmt.Sprintf("kind must be one of %v", Kinds))
	}
	if !slices.Contains([]Requester{BySubject, ByAdmin, ByDPO}, r.RequestedBy) {
		return errs.E(errs.Invalid, "requested_by must be subject, admin or dpo")
	}
	needsPurpose := r.Kind == Restriction || r.Kind == Objection
	if needsPurpose {
		if err := consent.CheckPurposeID(r.Purpose); err != nil {
			return err
		}
	} else if r.Purpose != "" {
		return errs.E(errs.Invalid, "purpose is only for restriction and objection requests")
	}
	if r.Kind == Rectification {
		return r.Rectification.check()
	}
	if r.Rectification != nil {
		return errs.E(errs.Invalid, "stream, grounds, corrections and delete ranges are only for rectification requests")
	}
	return nil
}

// Final reports whether the request is done or refused.
func (r Request) Final() bool { return r.Status == Done || r.Status == Refused }

// Transition checks that a request may move from its status to next.
// Done and refused are final; a refusal needs a reason.
func (r Request) Transition(next Status, reason string) error {
	ok := false
	switch r.Status {
	case Open:
		ok = next == InProgress || next == Done || next == Refused
	case InProgress:
		ok = next == Done || next == Refused || next == InProgress
	}
	if !ok {
		return errs.E(errs.Conflict, fmt.Sprintf("a request that is %s cannot become %s", r.Status, next))
	}
	if next == Refused && (reason == "" || len(reason) > 2000) {
		return errs.E(errs.Invalid, "a refusal needs a reason (1-2000 characters)")
	}
	return nil
}
