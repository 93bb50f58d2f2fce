package update_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/selfupdate"
	"github.com/custos-iot/custos/internal/update"
)

func key(t *testing.T, dir, name string) *update.Signer {
	t.Helper()
	p := filepath.Join(dir, name+".key")
	if _, err := update.GenerateKey(p, nil); err != nil {
		t.Fatal(err)
	}
	s, err := update.LoadKey(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPublishRefusals(t *testing.T) {
	dir := t.TempDir()
	root, targets, rogue := key(t, dir, "root"), key(t, dir, "targets"), key(t, dir, "rogue")
	r := update.Open(filepath.Join(dir, "hub"), nil)
	if _, err := r.Publish(targets, update.TargetName("v1.0.0", "linux", "amd64"), []byte("x")); !errs.Is(errs.NotFound, err) {
		t.Fatalf("publish before init: %v", err)
	}
	if _, err := r.Init(root, targets); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Init(root, targets); !errs.Is(errs.Exists, err) {
		t.Fatalf("second init: %v", err)
	}
	if _, err := update.GenerateKey(filepath.Join(dir, "root.key"), nil); err == nil {
		t.Fatal("GenerateKey overwrote a key")
	}
	name := update.TargetName("v1.0.0", "linux", "amd64")
	for _, tc := range []struct {
		what   string
		signer *update.Signer
		name   string
		data   []byte
		kind   errs.Kind
	}{
		{"rogue targets key", rogue, name, []byte("bin"), errs.Invalid},
		{"root key as targets key", root, name, []byte("bin"), errs.Invalid},
		{"bad name", targets, "custos-agent_1.0_linux_amd64", []byte("bin"), errs.Invalid},
		{"path in name", targets, "../custos-agent_v1.0.0_linux_amd64", []byte("bin"), errs.Invalid},
		{"empty binary", targets, name, nil, errs.Invalid},
	} {
		if _, err := r.Publish(tc.signer, tc.name, tc.data); !errs.Is(tc.kind, err) {
			t.Errorf("%s: err %v, want %v", tc.what, err, tc.kind)
		}
	}
	if rels, _ := r.Releases(); len(rels) != 0 {
		t.Fatalf("a refused publish left %v", rels)
	}
	if _, err := r.Publish(targets, name, []byte("bin")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Publish(targets, name, []byte("other")); !errs.Is(errs.Exists, err) {
		t.Fatalf("republish: %v", err)
	}
	if _, err := r.RotateOnline(targets); !errs.Is(errs.Invalid, err) {
		t.Fatalf("rotation with the targets key: %v", err)
	}
}

func TestServedNames(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for name, want := range map[string]bool{
		"1.root.json": true, "12.targets.json": true, "3.snapshot.json": true, "timestamp.json": true,
		"targets/" + hash + ".custos-agent_v1.2.3_linux_arm64": true,
		"root.json": false, "../keys/timestamp.key": false, "keys/lock": false, "/etc/passwd": false,
		"targets/" + hash + ".custos-agent_v1.2.3_linux_arm64/..": false, "1.root.json/": false,
		"targets/" + hash[:10] + ".custos-agent_v1_linux_arm64": false, "update-root.json": false,
	} {
		if got := update.ValidServedName(name); got != want {
			t.Errorf("ValidServedName(%q) = %v, want %v", name, got, want)
		}
	}
}

func FuzzServedName(f *testing.F) {
	for _, s := range []string{"1.root.json", "timestamp.json", "targets/" + strings.Repeat("0", 64) + ".custos-agent_v1.0.0_linux_amd64", "../keys/x", "a/../../b"} {
		f.Add(s)
	}
	dir := f.TempDir()
	os.MkdirAll(filepath.Join(dir, "repository"), 0o755)
	r := update.Open(dir, nil)
	f.Fuzz(func(t *testing.T, name string) {
		if update.ValidServedName(name) && (strings.Contains(name, "..") || strings.HasPrefix(name, "/") || strings.Contains(name, "keys")) {
			t.Fatalf("%q accepted", name)
		}
		if f, err := r.Open(name); err == nil {
			f.Close()
			t.Fatalf("opened %q in an empty repository", name)
		}
	})
}

// TestRotateOnline: after the online keys are replaced, an agent that
// trusted root v1 follows the chain to v2 and still updates.
func TestRotateOnline(t *testing.T) {
	dir := t.TempDir()
	root, targets := key(t, dir, "root"), key(t, dir, "targets")
	r := update.Open(filepath.Join(dir, "hub"), nil)
	rootJSON, err := r.Init(root, targets)
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(dir, "root.json")
	os.WriteFile(rootFile, rootJSON, 0o644)
	srv := httptest.NewServer(http.StripPrefix("/v1/updates/", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		f, err := r.Open(req.URL.Path)
		if err != nil {
			http.NotFound(w, req)
			return
		}
		defer f.Close()
		http.ServeContent(w, req, "", time.Time{}, f)
	})))
	defer srv.Close()
	cfg := selfupdate.Config{RootFile: rootFile, Dir: t.TempDir(), URL: srv.URL + "/v1/updates", Version: "v1.0.0", GOOS: "linux", GOARCH: "amd64"}
	if _, err := selfupdate.Check(cfg); err != nil {
		t.Fatal(err)
	}
	v, err := r.RotateOnline(root)
	if err != nil || v != 2 {
		t.Fatalf("rotate: v%d, %v", v, err)
	}
	if _, err := r.Publish(targets, update.TargetName("v1.1.0", "linux", "amd64"), []byte("new agent")); err != nil {
		t.Fatal(err)
	}
	u, err := selfupdate.Check(cfg)
	if err != nil || u == nil || u.Version != "v1.1.0" {
		t.Fatalf("after rotation: %+v, %v", u, err)
	}
	// A fresh agent holding only root v1 follows the chain as well.
	cfg2 := cfg
	cfg2.Dir = t.TempDir()
	if u, err := selfupdate.Check(cfg2); err != nil || u == nil {
		t.Fatalf("fresh agent after rotation: %+v, %v", u, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "hub", "keys", "timestamp.key.old-1")); err != nil {
		t.Fatalf("old key not kept: %v", err)
	}
}
