package custos_test

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath string
	Doc        string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T, args ...string) []pkg {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-json"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var ps []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

const mod = "github.com/custos-iot/custos/"

// TestPackageDocs: every package says what it owns.
func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t, "./...") {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment", p.ImportPath)
		}
	}
}

// TestAgentStaysSmall: the edge agent links nothing of the hub's server
// side — no database, no HTTP API, no CA signing.
func TestAgentStaysSmall(t *testing.T) {
	forbidden := []string{
		mod + "internal/store", mod + "internal/api", mod + "internal/pki", mod + "internal/hub",
		mod + "internal/ingest", mod + "internal/bench", mod + "internal/update",
		"modernc.org/sqlite", "github.com/jackc/pgx/v5", "github.com/pressly/goose/v3",
	}
	for _, p := range listPackages(t, "./cmd/custos-agent") {
		for _, d := range p.Deps {
			if slices.Contains(forbidden, d) {
				t.Errorf("custos-agent depends on %s", d)
			}
		}
	}
}

// TestLayering: domain packages never import adapters or composition
// roots, and only cmd/ and the bench harness import the roots.
func TestLayering(t *testing.T) {
	adapters := []string{"internal/store", "internal/api", "internal/hub", "internal/agent", "internal/client", "internal/bench"}
	domain := []string{"internal/errs", "internal/registry", "internal/series", "internal/ingest", "internal/wire",
		"internal/spool", "internal/enrol", "internal/pki", "internal/source", "internal/source/sim", "internal/uplink",
		"internal/rollup", "internal/seal", "internal/access", "internal/audit", "internal/plausibility",
		"internal/source/p1", "internal/source/mqtt", "internal/source/opcua", "internal/footprint",
		"internal/update", "internal/selfupdate", "internal/identity", "internal/collection"}
	roots := map[string][]string{
		mod + "internal/hub":   {mod + "cmd/custos", mod + "internal/bench", mod + "internal/hubtest"},
		mod + "internal/agent": {mod + "cmd/custos", mod + "cmd/custos-agent"},
	}
	for _, p := range listPackages(t, "./...") {
		rel := strings.TrimPrefix(p.ImportPath, mod)
		for _, imp := range p.Imports {
			if slices.Contains(domain, rel) {
				for _, a := range adapters {
					if imp == mod+a {
						t.Errorf("domain package %s imports adapter %s", rel, a)
					}
				}
			}
			if allowed, ok := roots[imp]; ok && !slices.Contains(allowed, p.ImportPath) {
				t.Errorf("%s imports the composition root %s", rel, strings.TrimPrefix(imp, mod))
			}
		}
	}
}
