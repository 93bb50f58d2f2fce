package client

import (
	"context"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/series"
)

// Rectification is a rectification request to open (GDPR art. 16).
type Rectification struct {
	Subject     registry.SubjectID
	Stream      registry.StreamID
	RequestedBy rights.Requester
	// Grounds says why the readings are inaccurate.
	Grounds     string
	Corrections []series.Correction
	Delete      []series.TimeRange
}

// CorrectionsPerPart is how many corrections one request body carries
// (about 30 bytes of JSON each, well under the hub's 1 MiB per body).
const CorrectionsPerPart = 20_000

func rightsPath(t registry.TenantID, s registry.SubjectID) string {
	return "/v1/tenants/" + string(t) + "/subjects/" + string(s) + "/rights"
}

// RequestRectification opens a rectification request and submits its
// corrections in parts of CorrectionsPerPart, calling progress (if set)
// after each part with the corrections submitted so far and their total.
// If a part fails, the request stays open with the parts before it; the
// error says which. The request is applied by FulfilRightsRequest.
func (c *Client) RequestRectification(ctx context.Context, t registry.TenantID, in Rectification, progress func(done, total int)) (rights.Request, error) {
	type body struct {
		Kind        rights.Kind         `json:"kind"`
		RequestedBy rights.Requester    `json:"requested_by"`
		Stream      registry.StreamID   `json:"stream"`
		Grounds     string              `json:"grounds"`
		Corrections []series.Correction `json:"corrections,omitempty"`
		Delete      []series.TimeRange  `json:"delete,omitempty"`
	}
	cs := in.Corrections
	first := cs[:min(len(cs), CorrectionsPerPart)]
	var req rights.Request
	if err := c.Do(ctx, "POST", rightsPath(t, in.Subject), body{Kind: rights.Rectification, RequestedBy: in.RequestedBy, Stream: in.Stream, Grounds: in.Grounds,
		Corrections: first, Delete: in.Delete}, &req); err != nil {
		return req, err
	}
	done := len(first)
	if progress != nil {
		progress(done, len(cs))
	}
	for done < len(cs) {
		part := cs[done:min(done+CorrectionsPerPart, len(cs))]
		if err := c.Do(ctx, "POST", rightsPath(t, in.Subject)+"/"+string(req.ID)+"/corrections", map[string]any{"corrections": part}, &req); err != nil {
			return req, err
		}
		done += len(part)
		if progress != nil {
			progress(done, len(cs))
		}
	}
	return req, nil
}

// FulfilRightsRequest carries out a rights request: it builds an access or
// portability archive, erases, or applies a rectification.
func (c *Client) FulfilRightsRequest(ctx context.Context, t registry.TenantID, s registry.SubjectID, id rights.RequestID) (r rights.Request, err error) {
	err = c.Do(ctx, "POST", rightsPath(t, s)+"/"+string(id)+"/fulfil", nil, &r)
	return
}
