package api

import (
	"net/http"
	"testing"

	"github.com/custos-iot/custos/internal/errs"
)

func TestStatus(t *testing.T) {
	for k, want := range map[errs.Kind]int{
		errs.Other:           http.StatusInternalServerError,
		errs.Invalid:         http.StatusBadRequest,
		errs.NotFound:        http.StatusNotFound,
		errs.Exists:          http.StatusConflict,
		errs.Conflict:        http.StatusConflict,
		errs.Unauthenticated: http.StatusUnauthorized,
		errs.Forbidden:       http.StatusForbidden,
		errs.TooLarge:        http.StatusRequestEntityTooLarge,
		errs.Unavailable:     http.StatusServiceUnavailable,
		errs.Integrity:       http.StatusInternalServerError,
	} {
		if got := status(k); got != want {
			t.Errorf("status(%v) = %d, want %d", k, got, want)
		}
	}
}

func TestUserMessage(t *testing.T) {
	inner := errs.E(errs.Op("store.X"), errs.NotFound, "stream not found")
	outer := errs.E(errs.Op("api.readings"), inner)
	if got := userMessage(outer); got != "stream not found" {
		t.Errorf("userMessage = %q", got)
	}
}
