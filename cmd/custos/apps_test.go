package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
)

// TestAppCLI registers, lists and revokes apps through the CLI against a
// real hub.
func TestAppCLI(t *testing.T) {
	h, _ := hubtest.Start(t, hub.Config{})
	t.Setenv("CUSTOS_HUB", h.APIURL())
	t.Setenv("CUSTOS_CA", h.CAFile())
	t.Setenv("CUSTOS_TOKEN", h.InitialToken)
	t.Setenv("CUSTOS_TENANT", jsonField(t, mustCLI(t, "tenant", "create", "App Coop", "--json"), "id"))

	out := mustCLI(t, "app", "add", "meter-dashboard", "--scope", "read:monitoring")
	if !strings.Contains(out, "client_secret: cas_") || !strings.Contains(out, "shown this once") {
		t.Fatalf("app add shows no secret:\n%s", out)
	}
	var created struct {
		App          struct{ ID string } `json:"app"`
		ClientSecret string              `json:"client_secret"`
	}
	json.Unmarshal([]byte(mustCLI(t, "app", "add", "household", "--kind", "user", "--public", "--redirect-uri", "https://app.example/cb", "--json")), &created)
	if !strings.HasPrefix(created.App.ID, "app_") || created.ClientSecret != "" {
		t.Fatalf("public user app: %+v", created)
	}
	if _, err := cli(t, "app", "add", "bad", "--kind", "user"); err == nil || !strings.Contains(err.Error(), "redirect URI") {
		t.Errorf("user app without redirect URI: %v", err)
	}
	if _, err := cli(t, "app", "add", "bad", "--scope", "write"); err == nil || !strings.Contains(err.Error(), "scope") {
		t.Errorf("bad scope: %v", err)
	}
	mustCLI(t, "app", "revoke", created.App.ID)
	out = mustCLI(t, "app", "list")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || strings.Contains(out, "cas_") || !strings.Contains(lines[2], "T") {
		t.Errorf("app list:\n%s", out)
	}
}
