package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/custos-iot/custos/internal/errs"
)

// status maps an error kind to its HTTP status. It is the only place in
// Custos where that mapping happens.
func status(k errs.Kind) int {
	switch k {
	case errs.Invalid:
		return http.StatusBadRequest
	case errs.NotFound:
		return http.StatusNotFound
	case errs.Exists, errs.Conflict:
		return http.StatusConflict
	case errs.Unauthenticated:
		return http.StatusUnauthorized
	case errs.Forbidden:
		return http.StatusForbidden
	case errs.TooLarge:
		return http.StatusRequestEntityTooLarge
	case errs.Unavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error     string `json:"error"`
	RequestID string `json:"request_id"`
}

// writeError answers with err's status and a message fit for the caller.
// Messages of classified errors are written for users and carry no
// personal data or secrets; unclassified errors may hold internals, so the
// caller only sees the kind and the request ID, and the log gets the rest.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	k := errs.KindOf(err)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		k = errs.TooLarge
	}
	code := status(k)
	msg := err.Error()
	if k == errs.Other || k == errs.Unavailable {
		msg = k.String() + "; the hub's log has details under the request ID"
	}
	var e *errs.Error
	if errors.As(err, &e) && k != errs.Other && k != errs.Unavailable {
		msg = userMessage(err)
	}
	id := requestID(r)
	level := slog.LevelInfo
	if code >= 500 {
		level = slog.LevelError
	}
	a.log.Log(r.Context(), level, "request failed", "request_id", id, "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	writeJSON(w, code, ErrorBody{Error: msg, RequestID: id})
}

// userMessage strips the Op prefixes of nested errors: callers need the
// reason, not the call chain.
func userMessage(err error) string {
	for {
		var e *errs.Error
		if !errors.As(err, &e) {
			return err.Error()
		}
		if e.Err == nil {
			return e.Kind.String()
		}
		var inner *errs.Error
		if !errors.As(e.Err, &inner) {
			return e.Err.Error()
		}
		err = e.Err
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
