package api

import (
	"context"
	"net/http"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/seal"
)

// KeyJob is the progress of a background key job.
type KeyJob struct {
	// Kind is "rotate-kek" (rewrap every keyset under a new KEK) or "roll"
	// (new subject keys, data re-sealed, old keys retired).
	Kind string `json:"kind"`
	// State is "running", "done" or "failed".
	State string `json:"state"`
	// Phase is what a running job does now: "rewrap"; or, for a roll,
	// "list", "roll", "re-encrypt", "wait" (for cached keys to expire),
	// "verify" (walk again, then retire).
	Phase    string    `json:"phase,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// Done of Total: keysets rewrapped, or subjects finished.
	Done  int `json:"done"`
	Total int `json:"total"`
	// KEK is the new current KEK of a rotation.
	KEK string `json:"kek,omitempty"`
	// Resealed counts the stored values a roll moved to the new keys;
	// Retired the subjects whose old keys it destroyed; Skipped the subjects
	// erased meanwhile; Unreadable the values that could not be opened
	// (corrupt, or already erased) and were left alone.
	Resealed   int `json:"resealed,omitempty"`
	Retired    int `json:"retired,omitempty"`
	Skipped    int `json:"skipped,omitempty"`
	Unreadable int `json:"unreadable,omitempty"`
	// Error says why a job failed.
	Error string `json:"error,omitempty"`
}

// KeyJobs runs key rotation jobs in the background. The hub implements it.
type KeyJobs interface {
	// RotateKEK makes a new KEK version current and starts rewrapping
	// every keyset under it. Conflict if a rotation is running.
	RotateKEK(ctx context.Context) (KeyJob, error)
	// Roll starts rolling the keys of the named subjects, or of every
	// subject with all. Conflict if a roll is running.
	Roll(ctx context.Context, subjects []registry.SubjectID, all bool) (KeyJob, error)
	// Jobs returns the latest job of each kind.
	Jobs() []KeyJob
}

// KeyOverview is the body of GET /v1/keys: the key store's counts, the KEK
// versions this hub can unwrap with (current first), and the key jobs.
type KeyOverview struct {
	seal.Status
	KEKs []string `json:"keks"`
	Jobs []KeyJob `json:"jobs"`
}

func (a *API) keyJobs() (KeyJobs, error) {
	if a.cfg.KeyJobs == nil {
		return nil, errs.E(errs.Unavailable, "key rotation is not available on this hub")
	}
	return a.cfg.KeyJobs, nil
}

// keyOverview answers GET /v1/keys: the key store's counts, the KEK
// versions and the progress of key jobs.
func (a *API) keyOverview(w http.ResponseWriter, r *http.Request) error {
	st, err := a.cfg.Keys.Status(r.Context())
	if err != nil {
		return err
	}
	v := KeyOverview{Status: st, KEKs: a.cfg.Keys.KEKs(), Jobs: []KeyJob{}}
	if a.cfg.KeyJobs != nil {
		v.Jobs = append(v.Jobs, a.cfg.KeyJobs.Jobs()...)
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// rotateKEK answers POST /v1/keys/rotate-kek with the started job (202).
func (a *API) rotateKEK(w http.ResponseWriter, r *http.Request) error {
	j, err := a.keyJobs()
	if err != nil {
		return err
	}
	job, err := j.RotateKEK(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, job)
	return nil
}

// RollRequest is the body of POST /v1/keys/roll: subjects, or all.
type RollRequest struct {
	Subjects []registry.SubjectID `json:"subjects,omitempty"`
	All      bool                 `json:"all,omitempty"`
}

// rollKeys answers POST /v1/keys/roll with the started job (202).
func (a *API) rollKeys(w http.ResponseWriter, r *http.Request) error {
	j, err := a.keyJobs()
	if err != nil {
		return err
	}
	var in RollRequest
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	job, err := j.Roll(r.Context(), in.Subjects, in.All)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, job)
	return nil
}
