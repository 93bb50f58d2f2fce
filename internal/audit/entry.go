package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Named identities and labels of an entry. They hold IDs and short labels
// only — never data values.
type (
	// PrincipalID is the pseudonymous ID of who acted: a user, an app, a
	// connector, an operator.
	PrincipalID string
	// SubjectID is the pseudonymous ID of the data subject whose data was
	// touched, if any.
	SubjectID string
	// RequestID ties an entry to the request that caused it.
	RequestID string
	// Action names what was done, e.g. "series.read", "grant.create", "login".
	Action string
	// Resource names what it was done to, e.g. "stream/meter-1/import_power_w".
	Resource string
	// Resolution is the granted resolution of a read, e.g. "15m"; empty otherwise.
	Resolution string
	// Purpose is the purpose the access was made for, e.g. "billing".
	Purpose string
	// Outcome is how the request was decided.
	Outcome string
)

// The usual outcomes.
const (
	Allowed Outcome = "allowed" // the action was authorised and performed
	Denied  Outcome = "denied"  // the action was refused by policy
	Failed  Outcome = "failed"  // the action was authorised but failed
)

// EntryVersion is the version byte of the leaf encoding written by this package.
const EntryVersion = 1

// MaxFieldLen is the longest a single entry field may be, in bytes.
const MaxFieldLen = 1024

// MaxLeafLen is the longest an encoded entry can be.
const MaxLeafLen = 1 + 8 + numFields*(2+MaxFieldLen)

const numFields = 8

// ErrMalformedEntry is returned by [ParseEntry] and [Entry.MarshalBinary]
// for bytes or fields that are not a valid entry. The caller should treat
// the leaf as corrupt (when parsing) or fix the entry (when encoding).
var ErrMalformedEntry = errors.New("malformed audit entry")

// Entry is one record of the audit log: the leaf of the Merkle tree.
//
// Principal, Action and Outcome are required. Every field is an ID or a
// short label of at most [MaxFieldLen] bytes of UTF-8 without control
// characters.
type Entry struct {
	// When is the time the entry was sequenced, in Unix milliseconds. [Log]
	// sets it (the caller's value is replaced), so that timestamps never
	// decrease along the log.
	When       int64
	Principal  PrincipalID
	Action     Action
	Resource   Resource
	Resolution Resolution
	Purpose    Purpose
	Outcome    Outcome
	Request    RequestID
	// Subject is the data subject whose data was touched; empty if none.
	// It lets a subject ask "who accessed my data".
	Subject SubjectID
}

func (e Entry) fields() [numFields]string {
	return [numFields]string{string(e.Principal), string(e.Action), string(e.Resource), string(e.Resolution),
		string(e.Purpose), string(e.Outcome), string(e.Request), string(e.Subject)}
}

var fieldNames = [numFields]string{"principal", "action", "resource", "resolution", "purpose", "outcome", "request", "subject"}

// Validate reports whether e can be encoded.
func (e Entry) Validate() error {
	if e.When < 0 {
		return fmt.Errorf("%w: negative time", ErrMalformedEntry)
	}
	f := e.fields()
	for i, s := range f {
		if err := checkField(s); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrMalformedEntry, fieldNames[i], err)
		}
	}
	for _, i := range []int{0, 1, 5} {
		if f[i] == "" {
			return fmt.Errorf("%w: %s is required", ErrMalformedEntry, fieldNames[i])
		}
	}
	return nil
}

func checkField(s string) error {
	if len(s) > MaxFieldLen {
		return fmt.Errorf("longer than %d bytes", MaxFieldLen)
	}
	if !utf8.ValidString(s) {
		return errors.New("not UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return errors.New("control character")
		}
	}
	return nil
}

// MarshalBinary returns the canonical encoding of e, version 1:
//
//	version  1 byte, = 1
//	when     8 bytes, big-endian, Unix milliseconds (non-negative)
//	8 fields principal, action, resource, resolution, purpose, outcome,
//	         request, subject — each a 2-byte big-endian length then UTF-8
//
// Every valid entry has exactly one encoding and every encoding exactly one
// entry: [ParseEntry] accepts nothing else.
func (e Entry) MarshalBinary() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	f := e.fields()
	n := 9
	for _, s := range f {
		n += 2 + len(s)
	}
	b := make([]byte, 0, n)
	b = append(b, EntryVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(e.When))
	for _, s := range f {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return b, nil
}

// ParseEntry decodes a leaf written by [Entry.MarshalBinary]. It accepts
// only canonical encodings of valid entries, and fails with an error
// wrapping [ErrMalformedEntry] otherwise.
func ParseEntry(leaf []byte) (Entry, error) {
	var e Entry
	err := parseLeaf(leaf, &e)
	return e, err
}

// parseLeaf checks leaf and, if e is non-nil, fills it in. With e nil it
// allocates nothing, for the offline verifier's hot loop; it returns the
// entry's time either way.
func parseLeaf(leaf []byte, e *Entry) error {
	if len(leaf) < 9 {
		return fmt.Errorf("%w: %d bytes is too short", ErrMalformedEntry, len(leaf))
	}
	if leaf[0] != EntryVersion {
		return fmt.Errorf("%w: unknown version %d", ErrMalformedEntry, leaf[0])
	}
	when := int64(binary.BigEndian.Uint64(leaf[1:9]))
	if when < 0 {
		return fmt.Errorf("%w: negative time", ErrMalformedEntry)
	}
	var f [numFields]string
	rest := leaf[9:]
	for i := range numFields {
		if len(rest) < 2 {
			return fmt.Errorf("%w: %s: truncated", ErrMalformedEntry, fieldNames[i])
		}
		n := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if n > len(rest) {
			return fmt.Errorf("%w: %s: truncated", ErrMalformedEntry, fieldNames[i])
		}
		if err := checkFieldBytes(rest[:n]); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrMalformedEntry, fieldNames[i], err)
		}
		if e != nil {
			f[i] = string(rest[:n])
		} else if n > 0 {
			f[i] = "x" // presence only, for the required-field check
		}
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformedEntry, len(rest))
	}
	for _, i := range []int{0, 1, 5} {
		if f[i] == "" {
			return fmt.Errorf("%w: %s is required", ErrMalformedEntry, fieldNames[i])
		}
	}
	if e != nil {
		*e = Entry{When: when, Principal: PrincipalID(f[0]), Action: Action(f[1]), Resource: Resource(f[2]),
			Resolution: Resolution(f[3]), Purpose: Purpose(f[4]), Outcome: Outcome(f[5]), Request: RequestID(f[6]),
			Subject: SubjectID(f[7])}
	}
	return nil
}

func checkFieldBytes(b []byte) error {
	if len(b) > MaxFieldLen {
		return fmt.Errorf("longer than %d bytes", MaxFieldLen)
	}
	if !utf8.Valid(b) {
		return errors.New("not UTF-8")
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return errors.New("control character")
		}
	}
	return nil
}

// leafTime returns the time of a leaf already checked by parseLeaf.
func leafTime(leaf []byte) int64 { return int64(binary.BigEndian.Uint64(leaf[1:9])) }
