package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
	"github.com/custos-iot/custos/internal/registry"
)

func start(t *testing.T) (*hub.Hub, *client.Client) { return hubtest.Start(t, hub.Config{}) }

// raw sends a request with an arbitrary body and token and returns the
// status and decoded error body.
func raw(t *testing.T, h *hub.Hub, token, method, path, body string) (int, api.ErrorBody) {
	t.Helper()
	c, err := client.NewFromFile(h.APIURL(), token, h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	var in any
	if body != "" {
		in = json.RawMessage(body)
	}
	err = c.Do(context.Background(), method, path, in, nil)
	if err == nil {
		return http.StatusOK, api.ErrorBody{}
	}
	ce, ok := err.(*client.Error)
	if !ok {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return ce.Status, api.ErrorBody{Error: ce.Message, RequestID: ce.RequestID}
}

func TestOperatorAPIErrors(t *testing.T) {
	h, c := start(t)
	ctx := context.Background()
	a, err := c.CreateTenant(ctx, "Coop A")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.CreateTenant(ctx, "Coop B")
	if err != nil {
		t.Fatal(err)
	}
	hb, err := c.AddHousehold(ctx, b.ID, "house-b", "Member B")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	tok := h.InitialToken
	rd := "/v1/tenants/" + string(b.ID) + "/streams/" + string(hb.Streams[0].ID) + "/readings?purpose=monitoring&"
	for _, tc := range []struct {
		name, token, method, path, body string
		status                          int
		msg                             string
	}{
		{"no token", "", "GET", "/v1/tenants", "", 401, "missing bearer token"},
		{"unknown token", "cop_nope", "GET", "/v1/tenants", "", 401, "unknown operator token"},
		{"unknown field", tok, "POST", "/v1/tenants", `{"name":"x","color":"red"}`, 400, `unknown field "color"`},
		{"wrong type", tok, "POST", "/v1/tenants", `{"name":7}`, 400, "wrong type"},
		{"empty name", tok, "POST", "/v1/tenants", `{"name":" "}`, 400, "tenant name must be"},
		{"duplicate tenant", tok, "POST", "/v1/tenants", `{"name":"Coop A"}`, 409, "already exists"},
		{"unknown tenant", tok, "GET", "/v1/tenants/ten_nope/streams", "", 404, "tenant not found"},
		{"bad category", tok, "POST", "/v1/tenants/" + string(a.ID) + "/streams", `{"device":"dev_x","metric":"m","category":"gossip","unit":"W"}`, 400, "unknown data category"},
		{"bad metric", tok, "POST", "/v1/tenants/" + string(a.ID) + "/streams", `{"device":"dev_x","metric":"Not Valid","category":"energy.consumption","unit":"W"}`, 400, "metric must be"},
		// Tenant isolation: B's stream through A's path does not exist.
		{"cross-tenant read", tok, "GET", "/v1/tenants/" + string(a.ID) + "/streams/" + string(hb.Streams[0].ID) + "/readings", "", 404, "stream not found"},
		{"cross-tenant revoke", tok, "POST", "/v1/tenants/" + string(a.ID) + "/connectors/" + string(hb.Connector.ID) + "/revoke", "", 404, "connector not found"},
		{"bad limit", tok, "GET", rd + "limit=0", "", 400, "limit must be between"},
		{"bad since", tok, "GET", "/v1/tenants/" + string(b.ID) + "/streams/" + string(hb.Streams[0].ID) + "/readings?since=yesterday", "", 400, "since must be"},
		{"bad from", tok, "GET", "/v1/tenants/" + string(b.ID) + "/streams/" + string(hb.Streams[0].ID) + "/readings?from=monday", "", 400, "from must be"},
		{"bad cursor", tok, "GET", rd + "cursor=zz", "", 400, "malformed cursor"},
		{"inverted range", tok, "GET", "/v1/tenants/" + string(b.ID) + "/streams/" + string(hb.Streams[0].ID) + "/readings?from=2000&to=1000", "", 400, "end of the range"},
		{"no purpose", tok, "GET", "/v1/tenants/" + string(b.ID) + "/streams/" + string(hb.Streams[0].ID) + "/readings", "", 400, "purpose is required"},
		{"purpose not granted", tok, "GET", "/v1/tenants/" + string(b.ID) + "/streams/" + string(hb.Streams[0].ID) + "/readings?purpose=marketing", "", 403, "no access"},
		{"bad grant resource", tok, "POST", "/v1/tenants/" + string(b.ID) + "/grants", `{"principal":"usr_x","resource":"stream","finest":"raw","purposes":["monitoring"]}`, 400, "resource must be kind:id"},
		{"grant without purpose", tok, "POST", "/v1/tenants/" + string(b.ID) + "/grants", `{"principal":"usr_x","resource":"stream:str_1","finest":"raw"}`, 400, "no purpose granted"},
		{"grant to nobody", tok, "POST", "/v1/tenants/" + string(b.ID) + "/grants", `{"resource":"stream:str_1","finest":"raw","purposes":["m"]}`, 400, "exactly one of principal and role"},
		{"revoke unknown grant", tok, "DELETE", "/v1/tenants/" + string(b.ID) + "/grants/grt_nope", "", 404, "no such grant"},
		{"unknown route", tok, "GET", "/v1/nope", "", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, body := raw(t, h, tc.token, tc.method, tc.path, tc.body)
			if st != tc.status {
				t.Fatalf("status %d, want %d (%q)", st, tc.status, body.Error)
			}
			if !strings.Contains(body.Error, tc.msg) {
				t.Errorf("error %q does not say %q", body.Error, tc.msg)
			}
			if tc.msg != "" && body.RequestID == "" {
				t.Error("error without request ID")
			}
		})
	}
	// The refused cross-tenant revoke changed nothing.
	cs, err := c.Connectors(ctx, registry.TenantID(b.ID))
	if err != nil || cs[0].Status == registry.ConnectorRevoked {
		t.Fatalf("B's connector after a cross-tenant revoke: %+v, %v", cs, err)
	}
}

// TestErrorsHideInternals: an unclassified failure shows the caller only
// its kind and request ID.
func TestErrorsHideInternals(t *testing.T) {
	h, c := start(t)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Coop")
	if err != nil {
		t.Fatal(err)
	}
	h.Store.DB().Exec("DROP TABLE subjects")
	st, body := raw(t, h, h.InitialToken, "GET", "/v1/tenants/"+string(ten.ID)+"/subjects", "")
	if st != 500 || strings.Contains(body.Error, "subjects") || !strings.Contains(body.Error, "request ID") {
		t.Fatalf("internal error leaked: %d %q", st, body.Error)
	}
}
