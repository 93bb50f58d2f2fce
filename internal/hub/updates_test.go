package hub_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
	"github.com/custos-iot/custos/internal/selfupdate"
	"github.com/custos-iot/custos/internal/update"
)

// TestUpdatesServed: the hub serves the repository that custos release
// writes into <data dir>/updates, publicly (no audit entry), and an agent
// verifies a release from it with the real TUF client.
func TestUpdatesServed(t *testing.T) {
	dataDir := t.TempDir()
	h, _ := hubtest.Start(t, hub.Config{DataDir: dataDir})
	pem, err := os.ReadFile(h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(name string) int {
		resp, err := hc.Get(h.APIURL() + "/v1/updates/" + name)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("timestamp.json"); code != http.StatusNotFound {
		t.Fatalf("no repository: HTTP %d, want 404", code)
	}

	keys := t.TempDir()
	var signers []*update.Signer
	for _, role := range []string{"root", "targets"} {
		p := filepath.Join(keys, role+".key")
		if _, err := update.GenerateKey(p, nil); err != nil {
			t.Fatal(err)
		}
		s, err := update.LoadKey(p)
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, s)
	}
	r := update.Open(filepath.Join(dataDir, "updates"), nil)
	rootJSON, err := r.Init(signers[0], signers[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Publish(signers[1], update.TargetName("v1.1.0", runtime.GOOS, runtime.GOARCH), []byte("agent v1.1.0")); err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(t.TempDir(), "root.json")
	os.WriteFile(rootFile, rootJSON, 0o644)

	before := h.Audit.Size()
	u, err := selfupdate.Check(selfupdate.Config{RootFile: rootFile, Dir: t.TempDir(), URL: h.APIURL() + "/v1/updates", Client: hc, Version: "v1.0.0"})
	if err != nil || u == nil || string(u.Data) != "agent v1.1.0" {
		t.Fatalf("check against the hub: %+v, %v", u, err)
	}
	for name, want := range map[string]int{"1.root.json": 200, "../keys/timestamp.key": 404, "update-root.json": 404} {
		if code := get(name); code != want {
			t.Errorf("GET /v1/updates/%s: HTTP %d, want %d", name, code, want)
		}
	}
	if got := h.Audit.Size() - before; got != 0 {
		t.Errorf("serving updates appended %d audit entries", got)
	}
}
