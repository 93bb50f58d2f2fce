package consent

import (
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// RecordID names one consent event.
type RecordID string

// Event is what happened to a consent.
type Event string

// The consent events. A consent is in force after Given until Withdrawn,
// Expired or its expiry time.
const (
	Given     Event = "given"
	Withdrawn Event = "withdrawn"
	Expired   Event = "expired"
)

// Method is how the consent was expressed or withdrawn (ISO/IEC TS 27560
// "method"), e.g. "web-form", "app", "paper", "verbal", "api".
type Method string

// Record is one event of a consent's history, with the fields of ISO/IEC
// TS 27560: who (Subject), what (Purpose and the NoticeVersion they were
// shown), when (At), how (Method), status (Event) and expiry (Expires).
// Records are append-only: a withdrawal is a new record, never an edit.
type Record struct {
	ID            RecordID           `json:"id"`
	Tenant        registry.TenantID  `json:"tenant"`
	Subject       registry.SubjectID `json:"subject"`
	Purpose       PurposeID          `json:"purpose"`
	NoticeVersion int                `json:"notice_version"`
	Event         Event              `json:"event"`
	Method        Method             `json:"method"`
	At            time.Time          `json:"at"`
	Expires       time.Time          `json:"expires,omitzero"`
}

// CheckMethod validates a method name.
func CheckMethod(m Method) error {
	if len(m) == 0 || len(m) > 40 {
		return errs.E(errs.Invalid, "method must be 1-40 characters, e.g. web-form, app, paper")
	}
	for _, r := range m {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return errs.E(errs.Invalid, "method must be lower-case letters, digits and '-'")
		}
	}
	return nil
}

// InForce reports whether the newest record of a consent's history keeps
// it in force at t.
func InForce(newest Record, t time.Time) bool {
	return newest.Event == Given && (newest.Expires.IsZero() || t.Before(newest.Expires))
}

// Restriction is a data subject's restriction (art. 18) or objection
// (art. 21) of processing for a purpose: processing stops, data is kept.
type Restriction struct {
	Tenant  registry.TenantID  `json:"tenant"`
	Subject registry.SubjectID `json:"subject"`
	Purpose PurposeID          `json:"purpose"`
	Kind    RestrictionKind    `json:"kind"`
	Since   time.Time          `json:"since"`
}

// RestrictionKind is restriction or objection.
type RestrictionKind string

// The kinds of restriction.
const (
	Restricted RestrictionKind = "restriction"
	Objected   RestrictionKind = "objection"
)
