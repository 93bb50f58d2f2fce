package client

import (
	"context"
	"net/url"
	"strconv"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
)

// Quarantine lists one page of a tenant's quarantine, oldest first; stream
// narrows it to one stream, after is the previous page's Next ("" for the
// first page), limit the entries (0 for the hub's default).
func (c *Client) Quarantine(ctx context.Context, t registry.TenantID, stream registry.StreamID, purpose, after string, limit int) (p api.QuarantinePage, err error) {
	q := url.Values{}
	if stream != "" {
		q.Set("stream", string(stream))
	}
	if purpose != "" {
		q.Set("purpose", purpose)
	}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	err = c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/quarantine?"+q.Encode(), nil, &p)
	return
}

// ReleaseQuarantine moves quarantined blocks into their streams.
func (c *Client) ReleaseQuarantine(ctx context.Context, t registry.TenantID, ids []int64) (r api.QuarantineResult, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/quarantine/release", api.QuarantineIDs{IDs: ids}, &r)
	return
}

// RejectQuarantine deletes quarantined blocks for good.
func (c *Client) RejectQuarantine(ctx context.Context, t registry.TenantID, ids []int64) (r api.QuarantineResult, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/quarantine/reject", api.QuarantineIDs{IDs: ids}, &r)
	return
}

// PlausibilityPolicy returns a tenant's plausibility policy.
func (c *Client) PlausibilityPolicy(ctx context.Context, t registry.TenantID) (p plausibility.Policy, err error) {
	err = c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/plausibility", nil, &p)
	return
}

// SetPlausibilityPolicy replaces a tenant's plausibility policy.
func (c *Client) SetPlausibilityPolicy(ctx context.Context, t registry.TenantID, p plausibility.Policy) (out plausibility.Policy, err error) {
	err = c.Do(ctx, "PUT", "/v1/tenants/"+string(t)+"/plausibility", p, &out)
	return
}
