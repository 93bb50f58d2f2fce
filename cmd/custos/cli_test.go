package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
)

// cli runs the custos command in-process with args and returns its output.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := cli(t, args...)
	if err != nil {
		t.Fatalf("custos %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func jsonField(t *testing.T, out, field string) string {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("not JSON: %q", out)
	}
	s, _ := v[field].(string)
	return s
}

// TestOperatorCLI walks the registry through the CLI against a real hub:
// tenant, subject, site, connector (with its enrolment token), device,
// stream, lists, revocation, and the errors a user sees.
func TestOperatorCLI(t *testing.T) {
	h, _ := hubtest.Start(t, hub.Config{})
	t.Setenv("CUSTOS_HUB", h.APIURL())
	t.Setenv("CUSTOS_CA", h.CAFile())

	t.Setenv("CUSTOS_TOKEN", "")
	if _, err := cli(t, "tenant", "list"); err == nil || !strings.Contains(err.Error(), "CUSTOS_TOKEN") {
		t.Fatalf("without a token: %v", err)
	}
	t.Setenv("CUSTOS_TOKEN", "cop_wrong")
	if _, err := cli(t, "tenant", "list"); err == nil || !strings.Contains(err.Error(), "unknown operator token") {
		t.Fatalf("wrong token: %v", err)
	}
	t.Setenv("CUSTOS_TOKEN", h.InitialToken)

	ten := jsonField(t, mustCLI(t, "tenant", "create", "CLI Coop", "--json"), "id")
	t.Setenv("CUSTOS_TENANT", ten)
	sub := jsonField(t, mustCLI(t, "subject", "create", "Member One", "--json"), "id")
	site := jsonField(t, mustCLI(t, "site", "create", "home-1", "--subject", sub, "--json"), "id")
	out := mustCLI(t, "connector", "add", "gw-1")
	if !strings.Contains(out, "cet1_") || !strings.Contains(out, "single use") {
		t.Fatalf("connector add prints no enrolment token:\n%s", out)
	}
	var offer struct {
		Connector struct{ ID string } `json:"connector"`
	}
	json.Unmarshal([]byte(mustCLI(t, "connector", "token", strings.Fields(out)[1], "--json")), &offer)
	if offer.Connector.ID == "" {
		t.Fatalf("connector token --json: no connector")
	}
	dev := jsonField(t, mustCLI(t, "device", "add", "meter-1", "--site", site, "--connector", offer.Connector.ID, "--json"), "id")
	mustCLI(t, "stream", "add", "--device", dev, "--metric", "import_power_w", "--category", "energy.consumption", "--unit", "W")
	if out := mustCLI(t, "device", "replace-meter", dev, "--meter-serial", "E0044007000000001", "--at", "2026-06-01T11:00:00Z"); !strings.Contains(out, "E0044007000000001") || !strings.Contains(out, "2026-06-01T11:00:00Z") {
		t.Errorf("replace-meter:\n%s", out)
	}
	for _, list := range [][]string{{"tenant", "list"}, {"subject", "list"}, {"site", "list"}, {"connector", "list"}, {"device", "list"}, {"stream", "list"}} {
		out := mustCLI(t, list...)
		if len(strings.Split(strings.TrimSpace(out), "\n")) < 2 {
			t.Errorf("%v lists nothing:\n%s", list, out)
		}
	}
	if out := mustCLI(t, "stream", "list"); !strings.Contains(out, "meter-1/import_power_w") {
		t.Errorf("stream list lacks the key:\n%s", out)
	}
	if out := mustCLI(t, "connector", "revoke", offer.Connector.ID); !strings.Contains(out, "revoked") {
		t.Errorf("revoke:\n%s", out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"stream", "add", "--device", dev, "--metric", "x", "--category", "gossip"}, "unknown data category"},
		{[]string{"connector", "token", offer.Connector.ID}, "connector is revoked"},
		{[]string{"read", "str_nope"}, "stream not found"},
		{[]string{"read", "str_nope", "--from", "yesterday"}, "--from must be RFC 3339"},
		{[]string{"device", "add", "Bad Name", "--site", site, "--connector", offer.Connector.ID}, "device name must be"},
		{[]string{"device", "replace-meter", dev, "--at", "yesterday"}, "--at: want RFC 3339"},
		{[]string{"device", "replace-meter", dev, "--at", "2026-05-01T00:00:00Z"}, "replaced later already"},
	} {
		if _, err := cli(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("custos %s: got %v, want an error saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	t.Setenv("CUSTOS_TENANT", "")
	if _, err := cli(t, "stream", "list"); err == nil || !strings.Contains(err.Error(), "--tenant") {
		t.Errorf("without a tenant: %v", err)
	}
}

// TestAuditCLI: export the audit log through the API, verify it offline
// with only the public key (and see a tampered copy fail), and run a
// witness twice against the hub.
func TestAuditCLI(t *testing.T) {
	dir := t.TempDir()
	wkey := filepath.Join(dir, "witness.key")
	mustCLI(t, "audit", "witness", "--new-key", "witness.example/w1", "--key", wkey)
	wpub, err := os.ReadFile(wkey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := hubtest.Start(t, hub.Config{DataDir: filepath.Join(dir, "hub"), AuditWitnesses: []string{strings.TrimSpace(string(wpub))}})
	t.Setenv("CUSTOS_HUB", h.APIURL())
	t.Setenv("CUSTOS_CA", h.CAFile())
	t.Setenv("CUSTOS_TOKEN", h.InitialToken)
	mustCLI(t, "tenant", "create", "Audited Coop")
	mustCLI(t, "tenant", "list")

	bundle := filepath.Join(dir, "audit.bundle")
	mustCLI(t, "audit", "export", "--out", bundle)
	pub := "@" + filepath.Join(dir, "hub", "audit", "log.pub")
	if out := mustCLI(t, "audit", "verify", "--bundle", bundle, "--key", pub); !strings.HasPrefix(out, "ok:") {
		t.Fatalf("verify: %s", out)
	}
	b, _ := os.ReadFile(bundle)
	b[len(b)/2] ^= 1
	os.WriteFile(bundle, b, 0o600)
	if out, err := cli(t, "audit", "verify", "--bundle", bundle, "--key", pub); err == nil || !strings.Contains(out, "PROBLEM") {
		t.Fatalf("tampered export: %v\n%s", err, out)
	}

	state := filepath.Join(dir, "witness.state")
	for i := range 2 {
		out := mustCLI(t, "audit", "witness", "--log-key", pub, "--key", wkey, "--state", state, "--post")
		if !strings.Contains(out, "witness.example/w1") {
			t.Fatalf("witness run %d: no cosignature in\n%s", i, out)
		}
		mustCLI(t, "tenant", "list") // the log grows between runs
		if _, err := h.Audit.Sign(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// The hub serves the cosigned checkpoint; a verifier can require a
	// quorum of one known witness.
	c, err := client.NewFromFile(h.APIURL(), "", h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	var cos bytes.Buffer
	if _, err := c.Raw(context.Background(), "GET", "/v1/audit/checkpoint/cosigned", &cos); err != nil {
		t.Fatal(err)
	}
	lv, _ := audit.NewVerifier(h.AuditKey)
	wv, _ := audit.NewVerifier(strings.TrimSpace(string(wpub)))
	if _, n, err := audit.VerifyCheckpoint(cos.Bytes(), lv, []note.Verifier{wv}, 1); err != nil || n != 1 {
		t.Fatalf("cosigned checkpoint: %d witnesses, %v", n, err)
	}
	// A checkpoint cosigned by a witness the hub does not know is refused.
	other := filepath.Join(dir, "other.key")
	mustCLI(t, "audit", "witness", "--new-key", "other.example/w9", "--key", other)
	if _, err := cli(t, "audit", "witness", "--log-key", pub, "--key", other, "--state", filepath.Join(dir, "other.state"), "--post"); err == nil || !strings.Contains(err.Error(), "no cosignature by a witness this hub knows") {
		t.Fatalf("unknown witness: %v", err)
	}
}
