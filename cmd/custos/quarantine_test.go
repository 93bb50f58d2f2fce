package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/uplink"
	"github.com/custos-iot/custos/internal/wire"
)

// TestQuarantineCLI: an enrolled connector posts a spike; the operator
// sees it with `custos quarantine list`, releases one entry and rejects
// another; `custos quarantine policy` shows and sets the tenant's policy.
func TestQuarantineCLI(t *testing.T) {
	ctx := context.Background()
	h, c, ten, hh, dev := cliHousehold(t, hub.Config{}, "Quarantine CLI Coop")
	meter := hh.Streams[1] // import_power_w
	post := func(start int64) {
		b := &wire.Batch{Series: []wire.Series{{Key: meter.Key, Readings: []wire.Reading{
			{Time: start, Value: 420 + float64(start%7_200_000)/100_000}, {Time: start + 300_000, Value: 2e6}, {Time: start + 600_000, Value: 433 + float64(start%7_200_000)/100_000}}}}}
		rand.Read(b.ID[:])
		body, err := wire.AppendBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := dev.Post(h.DeviceURL()+"/v1/batches", api.BatchContentType, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("post: %s", resp.Status)
		}
	}
	day := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	post(day)
	post(day + 3_600_000)

	out := mustCLI(t, "quarantine", "list")
	if !strings.Contains(out, "2 quarantined entries") || !strings.Contains(out, "limit: outside") || strings.Contains(out, "2e+06") {
		t.Fatalf("quarantine list (the overview opens no readings):\n%s", out)
	}
	if out := mustCLI(t, "quarantine", "list", "--stream", string(meter.ID), "--purpose", client.DefaultPurpose); !strings.Contains(out, "2e+06") {
		t.Fatalf("quarantine list --purpose:\n%s", out)
	}
	var page api.QuarantinePage
	if err := json.Unmarshal([]byte(mustCLI(t, "quarantine", "list", "--stream", string(meter.ID), "--purpose", client.DefaultPurpose, "--json")), &page); err != nil || len(page.Entries) != 2 || page.Entries[0].Readings[0].Value != 2e6 {
		t.Fatalf("quarantine list --json: %+v %v", page, err)
	}
	id := func(i int) string { return strconv.FormatInt(page.Entries[i].ID, 10) }
	if out := mustCLI(t, "quarantine", "release", id(0)); !strings.Contains(out, "released 1 entries (1 readings)") {
		t.Fatalf("release:\n%s", out)
	}
	if out := mustCLI(t, "quarantine", "reject", id(1)); !strings.Contains(out, "rejected 1 entries (1 readings)") {
		t.Fatalf("reject:\n%s", out)
	}
	if out := mustCLI(t, "quarantine", "list"); !strings.Contains(out, "0 quarantined entries") {
		t.Fatalf("after release and reject:\n%s", out)
	}
	rs, err := c.AllReadings(ctx, ten.ID, meter.ID, 0, 1<<50)
	if err != nil || len(rs) != 5 {
		t.Fatalf("readings after release and reject: %d %v, want 5", len(rs), err)
	}
	if _, err := cli(t, "quarantine", "release", "x1"); err == nil || !strings.Contains(err.Error(), "not a quarantine entry ID") {
		t.Fatalf("bad ID: %v", err)
	}
	if _, err := cli(t, "quarantine", "reject", id(1)); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("reject twice: %v", err)
	}

	if out := mustCLI(t, "quarantine", "policy"); !strings.Contains(out, "{}") {
		t.Fatalf("default policy:\n%s", out)
	}
	f := filepath.Join(t.TempDir(), "policy.json")
	os.WriteFile(f, []byte(`{"max_power_w": 5000, "off": ["frozen"]}`), 0o600)
	if out := mustCLI(t, "quarantine", "policy", "--set", f); !strings.Contains(out, `"max_power_w": 5000`) || !strings.Contains(out, `"frozen"`) {
		t.Fatalf("policy --set:\n%s", out)
	}
	os.WriteFile(f, []byte(`{"max_power_watts": 5000}`), 0o600)
	if _, err := cli(t, "quarantine", "policy", "--set", f); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("bad policy file: %v", err)
	}
}

// cliHousehold starts a hub for CLI tests (the CLI's environment pointing
// at it), creates a tenant that grants itself monitoring, and a household
// with an enrolled device client.
func cliHousehold(t *testing.T, cfg hub.Config, coop string) (*hub.Hub, *client.Client, registry.Tenant, client.Household, *http.Client) {
	t.Helper()
	h, c := hubtest.Start(t, cfg)
	t.Setenv("CUSTOS_HUB", h.APIURL())
	t.Setenv("CUSTOS_CA", h.CAFile())
	t.Setenv("CUSTOS_TOKEN", h.InitialToken)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, coop)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CUSTOS_TENANT", string(ten.ID))
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	hh, err := c.AddHousehold(ctx, ten.ID, "house-1", "Member One")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := uplink.Enrol(ctx, t.TempDir(), h.APIURL(), hh.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	dev := &http.Client{Transport: &http.Transport{TLSClientConfig: creds.TLSConfig("")}, Timeout: time.Minute}
	return h, c, ten, hh, dev
}
