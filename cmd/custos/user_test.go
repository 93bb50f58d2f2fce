package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
)

func cliIn(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// TestUserCLI: add, list, passwd and disable users through the API.
func TestUserCLI(t *testing.T) {
	h, _ := hubtest.Start(t, hub.Config{})
	t.Setenv("CUSTOS_HUB", h.APIURL())
	t.Setenv("CUSTOS_CA", h.CAFile())
	t.Setenv("CUSTOS_TOKEN", h.InitialToken)
	t.Setenv("CUSTOS_TENANT", jsonField(t, mustCLI(t, "tenant", "create", "User Coop", "--json"), "id"))

	out, err := cliIn(t, "violet tractor moss lantern\n", "user", "add", "alice", "--role", "analyst", "--role", "tenant-admin", "--password", "--json")
	if err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	id := jsonField(t, out, "id")
	if !strings.HasPrefix(id, "usr_") {
		t.Fatalf("user add: %s", out)
	}
	if _, err := cliIn(t, "password\n", "user", "add", "bob", "--password"); err == nil || !strings.Contains(err.Error(), "password refused") {
		t.Errorf("weak password: %v", err)
	}
	if _, err := cliIn(t, "", "user", "add", "carol", "--password"); err == nil || !strings.Contains(err.Error(), "standard input") {
		t.Errorf("no password given: %v", err)
	}
	if out := mustCLI(t, "user", "list"); !strings.Contains(out, "alice") || !strings.Contains(out, "analyst,tenant-admin") {
		t.Errorf("user list:\n%s", out)
	}
	if out, err := cliIn(t, "granite otter velvet sunrise\n", "user", "passwd", id); err != nil || !strings.Contains(out, "changed") {
		t.Errorf("user passwd: %v\n%s", err, out)
	}
	if out := mustCLI(t, "user", "disable", id); !strings.Contains(out, "disabled") {
		t.Errorf("user disable:\n%s", out)
	}
	if _, err := cli(t, "user", "disable", "usr_nope"); err == nil || !strings.Contains(err.Error(), "user not found") {
		t.Errorf("unknown user: %v", err)
	}
}
