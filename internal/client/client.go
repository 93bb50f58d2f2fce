// Package client is the Go client of the hub's operator API, used by the
// operator CLI, the demo, benchmarks and tests.
//
// It speaks only HTTPS and trusts exactly the CA it is given. It must never
// print or log the operator token.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/collection"
	"github.com/custos-iot/custos/internal/consent"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/source/sim"
)

// Client calls the operator API.
type Client struct {
	// Base is the API URL, e.g. https://127.0.0.1:8443.
	Base string
	// Purpose is sent with every read of personal data: why it is read.
	// The hub allows a read only for a purpose the caller holds a grant
	// for. New sets it to DefaultPurpose.
	Purpose string
	token   string
	http    *http.Client
}

// DefaultPurpose is the purpose a new Client reads for.
const DefaultPurpose = "monitoring"

// New returns a client that trusts the CA certificates in caPEM.
func New(base, token string, caPEM []byte) (*Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("client: no CA certificate in the given PEM")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return &Client{Base: base, Purpose: DefaultPurpose, token: token, http: &http.Client{Transport: tr, Timeout: time.Minute}}, nil
}

// NewFromFile is New with the CA read from a PEM file.
func NewFromFile(base, token, caFile string) (*Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("client: read hub CA: %w", err)
	}
	return New(base, token, pem)
}

// Error is an error answered by the hub.
type Error struct {
	Status    int
	Message   string
	RequestID string
}

func (e *Error) Error() string {
	return fmt.Sprintf("hub: %s (HTTP %d, request %s)", e.Message, e.Status, e.RequestID)
}

// Do sends a JSON request and decodes the JSON answer into out (if non-nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach hub at %s: %w", c.Base, err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode >= 300 {
		var e api.ErrorBody
		json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return &Error{Status: resp.StatusCode, Message: e.Error, RequestID: e.RequestID}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Raw sends a request without a body and copies a successful answer to w.
// It returns the HTTP status.
func (c *Client) Raw(ctx context.Context, method, path string, w io.Writer) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, nil)
	if err != nil {
		return 0, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("reach hub at %s: %w", c.Base, err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode >= 300 {
		var e api.ErrorBody
		json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		return resp.StatusCode, &Error{Status: resp.StatusCode, Message: e.Error, RequestID: e.RequestID}
	}
	_, err = io.Copy(w, resp.Body)
	return resp.StatusCode, err
}

// CreateTenant creates a tenant.
func (c *Client) CreateTenant(ctx context.Context, name string) (t registry.Tenant, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants", map[string]string{"name": name}, &t)
	return
}

// CreateSubject creates a data subject with just a name.
func (c *Client) CreateSubject(ctx context.Context, t registry.TenantID, name string) (registry.Subject, error) {
	return c.CreateSubjectProfile(ctx, t, registry.Profile{Name: name})
}

// CreateSubjectProfile creates a data subject with its personal fields.
func (c *Client) CreateSubjectProfile(ctx context.Context, t registry.TenantID, p registry.Profile) (v registry.Subject, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/subjects", p, &v)
	return
}

// Subjects lists a tenant's data subjects.
func (c *Client) Subjects(ctx context.Context, t registry.TenantID) (v []registry.Subject, err error) {
	err = c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/subjects", nil, &v)
	return
}

// EraseSubject crypto-shreds a data subject and returns the evidence.
func (c *Client) EraseSubject(ctx context.Context, t registry.TenantID, s registry.SubjectID) (e Erasure, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/subjects/"+string(s)+"/erase", nil, &e)
	return
}

// Erasures lists a tenant's erasure evidence.
func (c *Client) Erasures(ctx context.Context, t registry.TenantID) (v []Erasure, err error) {
	err = c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/erasures", nil, &v)
	return
}

// Erasure is the evidence of an erasure, as the API returns it.
type Erasure struct {
	Subject      registry.SubjectID  `json:"subject"`
	Tenant       registry.TenantID   `json:"tenant"`
	Requested    time.Time           `json:"requested"`
	KeyDestroyed time.Time           `json:"key_destroyed"`
	Purged       time.Time           `json:"purged,omitzero"`
	Streams      []registry.StreamID `json:"streams"`
	Evidence     json.RawMessage     `json:"evidence"`
}

// Buckets are a stream's aggregates at a resolution.
type Buckets struct {
	Stream     registry.StreamID `json:"stream"`
	Key        string            `json:"key"`
	Unit       string            `json:"unit"`
	Resolution string            `json:"resolution"`
	Buckets    []struct {
		T     int64   `json:"t"`
		Count int64   `json:"count"`
		Sum   float64 `json:"sum"`
		Min   float64 `json:"min"`
		Max   float64 `json:"max"`
		Mean  float64 `json:"mean"`
		Delta float64 `json:"delta"`
	} `json:"buckets"`
}

// Aggregates reads a stream's buckets at a resolution (15m, 1h, 1d, 1mo)
// in [from, to) (Unix ms).
func (c *Client) Aggregates(ctx context.Context, t registry.TenantID, s registry.StreamID, res string, from, to int64) (b Buckets, err error) {
	q := url.Values{}
	q.Set("from", strconv.FormatInt(from, 10))
	q.Set("to", strconv.FormatInt(to, 10))
	q.Set("resolution", res)
	q.Set("purpose", c.Purpose)
	err = c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/streams/"+string(s)+"/readings?"+q.Encode(), nil, &b)
	return
}

// CreateSite creates a site of a subject.
func (c *Client) CreateSite(ctx context.Context, t registry.TenantID, subject registry.SubjectID, name string) (v registry.Site, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/sites", map[string]string{"subject": string(subject), "name": name}, &v)
	return
}

// CreateConnector creates a connector and its first enrolment token.
func (c *Client) CreateConnector(ctx context.Context, t registry.TenantID, name string) (v api.EnrolmentOffer, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/connectors", map[string]string{"name": name}, &v)
	return
}

// NewEnrolToken issues a fresh enrolment token for a connector.
func (c *Client) NewEnrolToken(ctx context.Context, t registry.TenantID, id registry.ConnectorID) (v api.EnrolmentOffer, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/connectors/"+string(id)+"/tokens", nil, &v)
	return
}

// RevokeConnector revokes a connector.
func (c *Client) RevokeConnector(ctx context.Context, t registry.TenantID, id registry.ConnectorID) (v registry.Connector, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/connectors/"+string(id)+"/revoke", nil, &v)
	return
}

// CreateDevice creates a device at a site, served by a connector.
func (c *Client) CreateDevice(ctx context.Context, t registry.TenantID, site registry.SiteID, conn registry.ConnectorID, name string) (v registry.Device, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/devices", map[string]string{"site": string(site), "connector": string(conn), "name": name}, &v)
	return
}

// CreateMeterDevice creates a device bound to a meter serial: readings its
// connector reports under another meter identity are quarantined.
func (c *Client) CreateMeterDevice(ctx context.Context, t registry.TenantID, site registry.SiteID, conn registry.ConnectorID, name, serial string) (v registry.Device, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/devices", map[string]string{"site": string(site), "connector": string(conn), "name": name, "meter_serial": serial}, &v)
	return
}

// ReplaceMeter records that a device's meter was replaced at at (zero:
// now) by one with serial ("" for one whose identity is not checked).
func (c *Client) ReplaceMeter(ctx context.Context, t registry.TenantID, dev registry.DeviceID, serial string, at time.Time) (v registry.Device, err error) {
	in := map[string]any{"meter_serial": serial}
	if !at.IsZero() {
		in["at"] = at
	}
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/devices/"+string(dev)+"/meter-replacements", in, &v)
	return
}

// CreateRoleStream creates a power stream with a role in its site's
// energy balance (import, export, production, load).
func (c *Client) CreateRoleStream(ctx context.Context, t registry.TenantID, dev registry.DeviceID, metric string, cat registry.Category, role registry.Role) (v registry.Stream, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/streams", map[string]string{"device": string(dev), "metric": metric, "category": string(cat), "unit": "W", "role": string(role)}, &v)
	return
}

// CreateStream creates a stream of a device.
func (c *Client) CreateStream(ctx context.Context, t registry.TenantID, dev registry.DeviceID, metric string, cat registry.Category, unit string) (v registry.Stream, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/streams", map[string]string{"device": string(dev), "metric": metric, "category": string(cat), "unit": unit}, &v)
	return
}

// Streams lists a tenant's streams.
func (c *Client) Streams(ctx context.Context, t registry.TenantID) (v []registry.Stream, err error) {
	err = c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/streams", nil, &v)
	return
}

// Connectors lists a tenant's connectors.
func (c *Client) Connectors(ctx context.Context, t registry.TenantID) (v []registry.Connector, err error) {
	err = c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/connectors", nil, &v)
	return
}

// Page is a page of readings with the stream's description.
type Page struct {
	Stream registry.StreamID `json:"stream"`
	Key    string            `json:"key"`
	Unit   string            `json:"unit"`
	series.Page
}

// Readings reads one page of a stream in [from, to) (Unix ms).
func (c *Client) Readings(ctx context.Context, t registry.TenantID, s registry.StreamID, from, to int64, limit int, cursor string) (p Page, err error) {
	q := url.Values{}
	q.Set("from", strconv.FormatInt(from, 10))
	q.Set("to", strconv.FormatInt(to, 10))
	q.Set("limit", strconv.Itoa(limit))
	q.Set("purpose", c.Purpose)
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	err = c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/streams/"+string(s)+"/readings?"+q.Encode(), nil, &p)
	return
}

// AllReadings reads every reading of a stream in [from, to), page by page.
func (c *Client) AllReadings(ctx context.Context, t registry.TenantID, s registry.StreamID, from, to int64) ([]series.Reading, error) {
	var out []series.Reading
	cursor := ""
	for {
		p, err := c.Readings(ctx, t, s, from, to, series.MaxLimit, cursor)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Readings...)
		if p.Next == "" {
			return out, nil
		}
		cursor = p.Next
	}
}

// Household is a provisioned simulated household.
type Household struct {
	Subject   registry.Subject
	Site      registry.Site
	Connector registry.Connector
	Token     string // the connector's enrolment token
	Streams   []registry.Stream
}

// AddHousehold provisions a data subject with a home, a connector and the
// devices and streams of a simulated household (see sim.Streams).
func (c *Client) AddHousehold(ctx context.Context, t registry.TenantID, name, member string) (h Household, err error) {
	if h.Subject, err = c.CreateSubject(ctx, t, member); err != nil {
		return h, err
	}
	if h.Site, err = c.CreateSite(ctx, t, h.Subject.ID, name); err != nil {
		return h, err
	}
	offer, err := c.CreateConnector(ctx, t, name+"-gateway")
	if err != nil {
		return h, err
	}
	h.Connector, h.Token = offer.Connector, offer.Token
	devices := map[string]registry.Device{}
	for _, s := range sim.Streams(name) {
		d, ok := devices[s[0]]
		if !ok {
			if d, err = c.CreateDevice(ctx, t, h.Site.ID, h.Connector.ID, s[0]); err != nil {
				return h, err
			}
			devices[s[0]] = d
		}
		st, err := c.CreateStream(ctx, t, d.ID, s[1], registry.Category(s[2]), s[3])
		if err != nil {
			return h, err
		}
		h.Streams = append(h.Streams, st)
	}
	return h, nil
}

// Checkpoint fetches the audit log's latest signed checkpoint. With
// ConsistencyProof it makes the hub a source for an audit witness; the
// witness verifies everything it gets.
func (c *Client) Checkpoint(ctx context.Context) ([]byte, error) {
	var b bytes.Buffer
	if _, err := c.Raw(ctx, "GET", "/v1/audit/checkpoint", &b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ConsistencyProof fetches the proof that the audit tree of size1 is a
// prefix of the tree of size2.
func (c *Client) ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error) {
	var p struct {
		Proof [][]byte `json:"proof"`
	}
	err := c.Do(ctx, "GET", fmt.Sprintf("/v1/audit/proof/consistency?from=%d&to=%d", size1, size2), nil, &p)
	return p.Proof, err
}

// Cosign hands a witness's cosigned audit checkpoint to the hub.
func (c *Client) Cosign(ctx context.Context, cosigned []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+"/v1/audit/cosign", bytes.NewReader(cosigned))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach hub at %s: %w", c.Base, err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode >= 300 {
		var e api.ErrorBody
		json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		return &Error{Status: resp.StatusCode, Message: e.Error, RequestID: e.RequestID}
	}
	return nil
}

// Grant adds an access grant in tenant t.
func (c *Client) Grant(ctx context.Context, t registry.TenantID, g api.GrantIn) (v api.GrantOut, err error) {
	err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/grants", g, &v)
	return
}

// Grants lists tenant t's grants.
func (c *Client) Grants(ctx context.Context, t registry.TenantID) (v []api.GrantOut, err error) {
	err = c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/grants", nil, &v)
	return
}

// RevokeGrant revokes grant id of tenant t; it takes effect on the next request.
func (c *Client) RevokeGrant(ctx context.Context, t registry.TenantID, id string) error {
	return c.Do(ctx, "DELETE", "/v1/tenants/"+string(t)+"/grants/"+url.PathEscape(id), nil, nil)
}

// GrantSelf grants the client's own token raw access to all of tenant t
// for the given purposes (DefaultPurpose if none): how an operator who runs
// a deployment gives themselves access, on the record. A purpose the tenant
// has not declared yet is declared first, with lawful basis "contract",
// every data category and raw resolution (for tests, demos and
// benchmarks; real deployments declare their purposes with their notices).
// It returns the grant.
func (c *Client) GrantSelf(ctx context.Context, t registry.TenantID, purposes ...string) (api.GrantOut, error) {
	var me struct {
		Principal string `json:"principal"`
	}
	if err := c.Do(ctx, "GET", "/v1/whoami", nil, &me); err != nil {
		return api.GrantOut{}, err
	}
	if len(purposes) == 0 {
		purposes = []string{DefaultPurpose}
	}
	for _, p := range purposes {
		err := c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/purposes/"+url.PathEscape(p), nil, nil)
		var ce *Error
		if errors.As(err, &ce) && ce.Status == 404 {
			cats := make([]registry.Category, len(registry.Categories))
			copy(cats, registry.Categories)
			err = c.Do(ctx, "POST", "/v1/tenants/"+string(t)+"/purposes", consent.Purpose{ID: consent.PurposeID(p), Basis: consent.BasisContract,
				Categories: cats, Recipients: []string{"the operator"}, RetentionDays: 365, Finest: rollup.Raw,
				Notice: "Declared by " + me.Principal + " for its own use."}, nil)
		}
		if err != nil {
			return api.GrantOut{}, err
		}
	}
	return c.Grant(ctx, t, api.GrantIn{Principal: me.Principal, Resource: "tenant:" + string(t), Finest: "raw", Purposes: purposes})
}

// Explain asks why principal may or may not read stream s at res for purpose.
func (c *Client) Explain(ctx context.Context, t registry.TenantID, principal string, s registry.StreamID, res, purpose string) (v api.Explanation, err error) {
	q := url.Values{}
	q.Set("principal", principal)
	q.Set("stream", string(s))
	q.Set("resolution", res)
	q.Set("purpose", purpose)
	err = c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/access/explain?"+q.Encode(), nil, &v)
	return
}

// CreateToken creates an operator API token; the answer holds its secret,
// shown this once.
func (c *Client) CreateToken(ctx context.Context, in api.TokenIn) (v api.TokenOut, err error) {
	err = c.Do(ctx, "POST", "/v1/tokens", in, &v)
	return
}

// Tokens lists the operator tokens the caller may see.
func (c *Client) Tokens(ctx context.Context) (v []api.TokenOut, err error) {
	err = c.Do(ctx, "GET", "/v1/tokens", nil, &v)
	return
}

// RevokeToken revokes an operator token.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.Do(ctx, "POST", "/v1/tokens/"+url.PathEscape(id)+"/revoke", nil, nil)
}

// WithToken returns a copy of c that authenticates with token.
func (c *Client) WithToken(token string) *Client {
	d := *c
	d.token = token
	return &d
}

// CollectionPolicy returns a stream's collection policy.
func (c *Client) CollectionPolicy(ctx context.Context, t registry.TenantID, s registry.StreamID) (v collection.Record, err error) {
	err = c.Do(ctx, "GET", "/v1/tenants/"+string(t)+"/streams/"+string(s)+"/policy", nil, &v)
	return
}

// SetCollectionPolicy sets a stream's collection policy, saying why.
func (c *Client) SetCollectionPolicy(ctx context.Context, t registry.TenantID, s registry.StreamID, p collection.Policy, reason string) (v collection.Record, err error) {
	err = c.Do(ctx, "PUT", "/v1/tenants/"+string(t)+"/streams/"+string(s)+"/policy", api.PolicyRequest{Send: p.Send, Finest: p.Finest, Reason: reason}, &v)
	return
}

// drainClose reads what is left of a body (a JSON answer's trailing
// newline, an error's rest) before closing it, so that the connection goes
// back to the pool instead of costing a new TLS handshake next time.
func drainClose(body io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	body.Close()
}
