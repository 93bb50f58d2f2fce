package enrol

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoSigningSide enforces the architecture: enrol is linked into the
// agent, so it must not depend on the hub's CA.
func TestNoSigningSide(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/custos-iot/custos/internal/pki" {
			t.Fatal("internal/enrol depends on internal/pki")
		}
	}
}
