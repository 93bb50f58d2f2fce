package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/source/sim"
)

// TestBench runs the stripped agent binary's footprint bench against an
// in-process hub and checks its report against what reached the hub.
// CUSTOS_AGENT_BENCH_DURATION sets the measured time (default 8s); with
// 60s and -v it is the footprint benchmark of the README.
func TestBench(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	if testing.Short() {
		t.Skip("builds and runs the agent binary for seconds")
	}
	duration := "8s"
	if d := os.Getenv("CUSTOS_AGENT_BENCH_DURATION"); d != "" {
		duration = d
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "custos-agent")
	if out, err := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	h, c := hubtest.Start(t, hub.Config{DataDir: filepath.Join(dir, "hub")})
	ctx := context.Background()
	ten, streams, token := provisionBench(ctx, t, c, 100)

	cmd := exec.Command(bin, "bench", "--hub", h.APIURL(), "--token", token, "--duration", duration, "--warmup", "3s", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	t.Logf("%s", stdout.Bytes())
	var res map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("bench output is not one JSON object: %v\n%s", err, stdout.String())
	}
	for _, k := range []string{"rss_mb", "rss_final_mb", "cpu_percent_of_one_core", "streams", "readings_sent", "duration_s", "binary_bytes"} {
		if _, ok := res[k].(float64); !ok {
			t.Errorf("%s missing or not a number in %s", k, stdout.String())
		}
	}
	num := func(k string) float64 { v, _ := res[k].(float64); return v }
	if num("streams") < 100 || num("streams") != float64(len(streams)) {
		t.Errorf("streams = %v, want the %d provisioned", num("streams"), len(streams))
	}
	if d, _ := time.ParseDuration(duration); num("duration_s") < d.Seconds()*0.9 || num("duration_s") > d.Seconds()*1.5 {
		t.Errorf("duration_s = %v for --duration %s", num("duration_s"), duration)
	}
	if num("rss_mb") <= 0 || num("rss_final_mb") <= 0 || num("rss_final_mb") > num("rss_mb") {
		t.Errorf("rss_mb = %v, rss_final_mb = %v: want 0 < final <= peak", num("rss_mb"), num("rss_final_mb"))
	}
	if cpu := num("cpu_percent_of_one_core"); cpu <= 0 || cpu > 200 {
		t.Errorf("cpu_percent_of_one_core = %v, want in (0, 200]", cpu)
	}
	if fi, err := os.Stat(bin); err != nil || num("binary_bytes") != float64(fi.Size()) {
		t.Errorf("binary_bytes = %v, want the size of %s", num("binary_bytes"), bin)
	}
	// Readings at 1 Hz for the measured time; some may still be in flight.
	sent := num("readings_sent")
	if want := num("streams") * (num("duration_s") - 2); sent < want {
		t.Errorf("readings_sent = %v, want at least %v", sent, want)
	}
	var atHub int
	for _, s := range streams {
		rs, err := c.AllReadings(ctx, ten, s, 0, 1<<50)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			t.Errorf("stream %s received nothing", s)
		}
		atHub += len(rs)
	}
	if float64(atHub) < sent {
		t.Errorf("hub holds %d readings, the bench says it sent %v", atHub, sent)
	}
}

// provisionBench creates a tenant with one connector serving the
// households the bench simulates for the given number of streams.
func provisionBench(ctx context.Context, t *testing.T, c *client.Client, streams int) (registry.TenantID, []registry.StreamID, string) {
	t.Helper()
	ten, err := c.CreateTenant(ctx, "Bench")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	offer, err := c.CreateConnector(ctx, ten.ID, "bench-gateway")
	if err != nil {
		t.Fatal(err)
	}
	var ids []registry.StreamID
	for i, name := range benchHouseholds(streams) {
		subj, err := c.CreateSubject(ctx, ten.ID, "Member "+name)
		if err != nil {
			t.Fatal(err)
		}
		site, err := c.CreateSite(ctx, ten.ID, subj.ID, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sim.Streams(name) {
			d, err := c.CreateDevice(ctx, ten.ID, site.ID, offer.Connector.ID, s[0])
			if err != nil {
				t.Fatalf("household %d: %v", i, err)
			}
			st, err := c.CreateStream(ctx, ten.ID, d.ID, s[1], registry.Category(s[2]), s[3])
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, st.ID)
		}
	}
	return ten.ID, ids, offer.Token
}
