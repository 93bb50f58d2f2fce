package api

import (
	"net/http"
	"os"
	"strings"

	"github.com/custos-iot/custos/internal/errs"
)

// UpdateFiles is the hub's TUF repository of agent releases, read-only.
type UpdateFiles interface {
	// Open opens a served file by its name relative to /v1/updates/.
	// Unknown or malformed names are errs.NotFound.
	Open(name string) (*os.File, error)
}

// updateFile serves the agent update repository (TUF metadata and
// binaries). It is public on the API — the files are signed, and hold
// nothing personal — and served on the device endpoint too, where agents
// fetch it over the mutual-TLS connection they already have.
func (a *API) updateFile(w http.ResponseWriter, r *http.Request) error {
	const op errs.Op = "api.updates"
	if a.cfg.Updates == nil {
		return errs.E(op, errs.NotFound, "this hub hosts no agent updates")
	}
	name := r.PathValue("file")
	f, err := a.cfg.Updates.Open(name)
	if err != nil {
		return errs.E(op, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return errs.E(op, err)
	}
	if strings.HasSuffix(name, ".json") {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache") // timestamp.json changes in place
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return nil
}
