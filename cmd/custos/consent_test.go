package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
)

// TestDatamapJSON: custos datamap --json prints the map as one JSON line
// with every store's categories and handlers.
func TestDatamapJSON(t *testing.T) {
	out := mustCLI(t, "datamap", "--json")
	if strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("not one line: %q", out)
	}
	var d struct {
		Stores []struct {
			Name       string   `json:"name"`
			Categories []string `json:"categories"`
			Export     bool     `json:"export"`
			Erase      bool     `json:"erase"`
		} `json:"stores"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil || len(d.Stores) < 5 {
		t.Fatalf("%v %q", err, out)
	}
	for _, s := range d.Stores {
		if !s.Export || !s.Erase || len(s.Categories) == 0 {
			t.Errorf("store %+v", s)
		}
	}
}

// TestConsentCLI: purpose, consent with a receipt verified offline, and a
// rights export to a zip, through the CLI against a real hub.
func TestConsentCLI(t *testing.T) {
	dir := t.TempDir()
	h, _ := hubtest.Start(t, hub.Config{DataDir: filepath.Join(dir, "hub")})
	t.Setenv("CUSTOS_HUB", h.APIURL())
	t.Setenv("CUSTOS_CA", h.CAFile())
	t.Setenv("CUSTOS_TOKEN", h.InitialToken)
	ten := jsonField(t, mustCLI(t, "tenant", "create", "CLI Coop", "--json"), "id")
	t.Setenv("CUSTOS_TENANT", ten)
	sub := jsonField(t, mustCLI(t, "subject", "create", "Member C", "--json"), "id")
	mustCLI(t, "purpose", "add", "monitoring", "--basis", "consent", "--category", "energy.consumption", "--finest", "raw", "--notice", "We monitor your consumption.")
	if out := mustCLI(t, "purpose", "notice", "monitoring"); !strings.Contains(out, "We monitor") {
		t.Errorf("notice: %q", out)
	}
	receipt := filepath.Join(dir, "receipt.txt")
	mustCLI(t, "consent", "give", sub, "monitoring", "--method", "paper", "--receipt", receipt)
	out := mustCLI(t, "consent", "verify-receipt", receipt, "--key-file", filepath.Join(dir, "hub", "consent", "receipt.pub"))
	if !strings.Contains(out, "receipt OK") || !strings.Contains(out, "given") {
		t.Errorf("verify: %q", out)
	}
	b, _ := os.ReadFile(receipt)
	os.WriteFile(receipt, []byte(strings.Replace(string(b), "method paper", "method verbal", 1)), 0o600)
	if _, err := cli(t, "consent", "verify-receipt", receipt, "--key-file", filepath.Join(dir, "hub", "consent", "receipt.pub")); err == nil {
		t.Error("an altered receipt verified")
	}
	mustCLI(t, "consent", "withdraw", sub, "monitoring")
	if out := mustCLI(t, "consent", "list", sub); !strings.Contains(out, "withdrawn") {
		t.Errorf("list: %q", out)
	}
	zip := filepath.Join(dir, "export.zip")
	out = mustCLI(t, "rights", "export", sub, "-o", zip)
	if !strings.Contains(out, "100%") || !strings.Contains(out, "stores") {
		t.Errorf("export output: %q", out)
	}
	if fi, err := os.Stat(zip); err != nil || fi.Size() == 0 {
		t.Errorf("archive: %v", err)
	}
	if out := mustCLI(t, "rights", "list", sub); !strings.Contains(out, "portability") || !strings.Contains(out, "done") {
		t.Errorf("rights list: %q", out)
	}
}
