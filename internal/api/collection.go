package api

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/custos-iot/custos/internal/collection"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/ingest"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// PolicyRequest sets a stream's collection policy.
type PolicyRequest struct {
	Send   bool              `json:"send"`
	Finest rollup.Resolution `json:"finest"`
	Reason string            `json:"reason"`
}

// streamPolicy serves a stream's collection policy with its version as
// the ETag.
func (a *API) streamPolicy(w http.ResponseWriter, r *http.Request) error {
	rec, err := a.cfg.Store.CollectionPolicy(r.Context(), pathTenant(r), registry.StreamID(r.PathValue("stream")))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", rec.ETag())
	writeJSON(w, http.StatusOK, rec)
	return nil
}

// setStreamPolicy sets a stream's collection policy. With If-Match (the
// ETag of a GET), it fails with 409 if the policy changed in between.
func (a *API) setStreamPolicy(w http.ResponseWriter, r *http.Request) error {
	var in PolicyRequest
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	ifVersion := int64(-1)
	if m := r.Header.Get("If-Match"); m != "" {
		v, err := strconv.ParseInt(strings.Trim(m, `"`), 10, 64)
		if err != nil || v < 0 {
			return errs.E(errs.Invalid, `If-Match must be a policy ETag such as "3"`)
		}
		ifVersion = v
	}
	rec, err := a.cfg.Store.SetCollectionPolicyIf(r.Context(), pathTenant(r), registry.StreamID(r.PathValue("stream")),
		collection.Policy{Send: in.Send, Finest: in.Finest}, in.Reason, ifVersion)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", rec.ETag())
	writeJSON(w, http.StatusOK, rec)
	return nil
}

// connectorPolicy serves a connector the collection policy of each of its
// streams. The document's version is its ETag: a connector that sends it
// back in If-None-Match gets 304 Not Modified while nothing changed.
func (a *API) connectorPolicy(w http.ResponseWriter, r *http.Request, id ingest.Identity) error {
	list, err := a.cfg.Store.ConnectorStreams(r.Context(), id.Connector)
	if err != nil {
		return err
	}
	pols, err := a.cfg.Store.ConnectorCollectionPolicies(r.Context(), id.Connector)
	if err != nil {
		return err
	}
	var out []collection.StreamPolicy
	for _, s := range list {
		if s.Tenant != id.Tenant {
			continue
		}
		p := collection.Default
		if rec, ok := pols[s.ID]; ok {
			p = rec.Policy
		}
		out = append(out, collection.StreamPolicy{Key: s.Key, Policy: p, Kind: collection.KindOf(s.Unit)})
	}
	doc := collection.NewDocument(out)
	if doc.Streams == nil {
		doc.Streams = []collection.StreamPolicy{}
	}
	etag := `"` + doc.Version + `"`
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	writeJSON(w, http.StatusOK, doc)
	return nil
}
