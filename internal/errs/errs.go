// Package errs defines the error kinds shared by every Custos package.
//
// A domain package reports what went wrong as a Kind; only the HTTP adapter
// (internal/api) turns a Kind into a status code, in exactly one function.
// Errors built here must never carry payloads, personal data or key material:
// IDs and short reasons only.
package errs

import (
	"errors"
	"strings"
)

// Kind classifies an error by what the caller should do about it.
type Kind uint8

// The kinds. Their order is part of no contract; compare by name.
const (
	Other           Kind = iota // unclassified: a bug or an unexpected failure; retry may help
	Invalid                     // the request is malformed; do not retry it unchanged
	NotFound                    // the named thing does not exist (or is not visible to the caller)
	Exists                      // the thing already exists
	Unauthenticated             // no or bad credentials
	Forbidden                   // authenticated, but not allowed
	Conflict                    // the state does not allow it now (e.g. a token already used)
	TooLarge                    // the request exceeds a size limit
	Unavailable                 // a dependency is down; retry later
	Integrity                   // stored data failed an integrity check
)

var kindNames = [...]string{
	Other:           "other error",
	Invalid:         "invalid request",
	NotFound:        "not found",
	Exists:          "already exists",
	Unauthenticated: "unauthenticated",
	Forbidden:       "forbidden",
	Conflict:        "conflict",
	TooLarge:        "too large",
	Unavailable:     "unavailable",
	Integrity:       "integrity error",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown kind"
}

// Op names the operation that failed, e.g. "ingest.Store".
type Op string

// Error is a Custos error: an operation, a kind and an underlying cause.
type Error struct {
	Op   Op
	Kind Kind
	Err  error
}

// E builds an *Error from its arguments, in any order: an Op, a Kind, an
// error, or a string (which becomes the cause's message). If the kind is not
// given it is taken from the wrapped *Error, if any.
func E(args ...any) error {
	e := &Error{}
	for _, a := range args {
		switch a := a.(type) {
		case Op:
			e.Op = a
		case Kind:
			e.Kind = a
		case error:
			e.Err = a
		case string:
			e.Err = errors.New(a)
		}
	}
	if e.Kind == Other {
		var inner *Error
		if errors.As(e.Err, &inner) {
			e.Kind = inner.Kind
		}
	}
	return e
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Op != "" {
		b.WriteString(string(e.Op))
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString(e.Kind.String())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf reports the kind of err: the outermost classified *Error in its
// chain, or Other.
func KindOf(err error) Kind {
	for err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return Other
		}
		if e.Kind != Other {
			return e.Kind
		}
		err = e.Err
	}
	return Other
}

// Is reports whether err is of kind k.
func Is(k Kind, err error) bool { return err != nil && KindOf(err) == k }
