package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/update"
)

// TestSelfUpdateEndToEnd runs the real custos-agent binary, built as
// v1.0.0, against a real hub whose update repository offers v1.1.0: the
// agent must verify it over its mutual-TLS connection, swap its binary,
// pass the trial run and re-exec itself (same PID) into v1.1.0. Then a
// v1.2.0 that crashes at start is published: the agent must roll back to
// v1.1.0 and keep running.
func TestSelfUpdateEndToEnd(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc to see which binary the agent process runs")
	}
	if testing.Short() {
		t.Skip("builds the agent three times and runs it against a hub")
	}
	start := time.Now()
	dir := t.TempDir()
	build := func(out, pkg, version string) []byte {
		t.Helper()
		p := filepath.Join(dir, out)
		if b, err := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", p, pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s %s: %v\n%s", pkg, version, err, b)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v100 := build("v1.0.0", ".", "v1.0.0")
	v110 := build("v1.1.0", ".", "v1.1.0")
	v120 := build("v1.2.0", "./testdata/failagent", "v1.2.0")
	t.Logf("three builds: %s", time.Since(start).Round(time.Millisecond))

	// The update repository, as custos release keygen + init would make it.
	hubDir := filepath.Join(dir, "hub")
	var keys []*update.Signer
	for _, role := range []string{"root", "targets"} {
		p := filepath.Join(dir, "keys", role+".key")
		if _, err := update.GenerateKey(p, nil); err != nil {
			t.Fatal(err)
		}
		k, err := update.LoadKey(p)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	root, targets := keys[0], keys[1]
	repo := update.Open(filepath.Join(hubDir, "updates"), nil)
	rootJSON, err := repo.Init(root, targets)
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(dir, "update-root.json")
	if err := os.WriteFile(rootFile, rootJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	publish := func(version string, bin []byte) {
		t.Helper()
		if _, err := repo.Publish(targets, update.TargetName(version, runtime.GOOS, runtime.GOARCH), bin); err != nil {
			t.Fatal(err)
		}
	}
	publish("v1.1.0", v110)

	h, c := hubtest.Start(t, hub.Config{DataDir: hubDir})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	hh, err := c.AddHousehold(ctx, ten.ID, "house-1", "Member")
	if err != nil {
		t.Fatal(err)
	}

	// The agent runs from a copy of v1.0.0 in its own directory (the
	// directory it must be able to write to replace itself).
	bin := filepath.Join(dir, "agent-bin", "custos-agent")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	if err := os.WriteFile(bin, v100, 0o755); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "agent")
	cfg, _ := json.Marshal(map[string]any{
		"hub": h.APIURL(), "state_dir": stateDir, "enrol_token": hh.Token,
		"health_every": "1s",
		"batch":        map[string]any{"max_delay": "200ms"},
		"simulators":   []map[string]any{{"household": "house-1", "interval": "200ms"}},
		// No url: the default, the device endpoint over mutual TLS.
		"update": map[string]any{"root_file": rootFile, "every": "1s", "trial_timeout": "30s"},
	})
	cfgPath := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	var logBuf syncBuffer
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("agent output:\n%s", logBuf.String())
		}
	})
	pid := cmd.Process.Pid
	procExe := filepath.Join("/proc", strconv.Itoa(pid), "exe")

	// waitFor polls cond (generous deadline: a loaded 2-core machine).
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !cond() {
			select {
			case err := <-exited:
				t.Fatalf("waiting for %s: the agent exited: %v", what, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: timed out", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	health := func() *registry.Health {
		cs, err := c.Connectors(ctx, ten.ID)
		if err != nil || len(cs) != 1 {
			return nil
		}
		return cs[0].Health
	}
	// runs reports whether the agent process (its original PID) runs the
	// file at path.
	runs := func(path string) bool {
		a, err1 := os.Stat(procExe)
		b, err2 := os.Stat(path)
		return err1 == nil && err2 == nil && os.SameFile(a, b)
	}
	sum := func(b []byte) [32]byte { return sha256.Sum256(b) }
	fileSum := func(path string) [32]byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return sum(b)
	}

	// v1.0.0 -> v1.1.0.
	t0 := time.Now()
	waitFor("the hub to see v1.1.0 from the re-exec'd agent", func() bool {
		hl := health()
		return hl != nil && hl.Version == "v1.1.0" && runs(bin)
	})
	swapped := time.Now()
	if fileSum(bin) != sum(v110) {
		t.Fatal("the agent's binary on disk is not v1.1.0")
	}
	if fileSum(bin+".prev") != sum(v100) {
		t.Fatal("<exe>.prev is not v1.0.0")
	}
	// The process with the original PID now reports on its own (the trial
	// child reported first): wait for a report made after the swap.
	waitFor("a health report of the re-exec'd v1.1.0", func() bool {
		hl := health()
		return hl != nil && hl.Version == "v1.1.0" && hl.Reported.After(swapped)
	})
	st := readState(t, stateDir)
	if st.Pending != nil || len(st.Failed) != 0 {
		t.Fatalf("update state after a passed trial: %+v", st)
	}
	t.Logf("v1.0.0 -> v1.1.0 installed, trial passed, re-exec'd: %s after start", time.Since(t0).Round(time.Millisecond))

	// v1.1.0 -> v1.2.0 (crashes at start) -> rolled back to v1.1.0.
	t1 := time.Now()
	publish("v1.2.0", v120)
	waitFor("the v1.2.0 trial to fail", func() bool {
		st := readState(t, stateDir)
		return st.Pending == nil && st.Failed["v1.2.0"].Count == 1
	})
	// Run returned to install v1.2.0, so only a re-exec'd agent reports
	// health again (the trial child is the broken release).
	rolledBack := time.Now()
	waitFor("the hub to see v1.1.0 again after the rollback", func() bool {
		hl := health()
		return hl != nil && hl.Version == "v1.1.0" && hl.Reported.After(rolledBack) && runs(bin)
	})
	if fileSum(bin) != sum(v110) {
		t.Fatal("after the rollback the agent's binary on disk is not v1.1.0")
	}
	if _, err := os.Stat(bin + ".prev"); err == nil {
		t.Error("<exe>.prev still exists after the rollback (it should have been renamed back)")
	}
	if !bytes.Contains([]byte(logBuf.String()), []byte("failagent: this release is broken")) {
		t.Error("the v1.2.0 trial never ran (its output is missing)")
	}
	t.Logf("v1.2.0 rolled back to v1.1.0: %s after publishing; whole test %s",
		time.Since(t1).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	// And the agent keeps delivering readings.
	before := countReadings(t, c, ten.ID, hh.Streams[0].ID)
	waitFor("readings after the rollback", func() bool {
		return countReadings(t, c, ten.ID, hh.Streams[0].ID) > before
	})
}

type updateState struct {
	Pending *json.RawMessage `json:"pending"`
	Failed  map[string]struct {
		Count int `json:"count"`
	} `json:"failed"`
}

// readState reads <state dir>/update/state.json (the format is
// internal/selfupdate's; a missing file is the empty state).
func readState(t *testing.T, stateDir string) updateState {
	t.Helper()
	var st updateState
	b, err := os.ReadFile(filepath.Join(stateDir, "update", "state.json"))
	if err != nil {
		return st
	}
	if err := json.Unmarshal(b, &st); err != nil {
		// Written atomically (rename), so a partial file is a bug.
		t.Fatalf("state.json: %v\n%s", err, b)
	}
	return st
}

func countReadings(t *testing.T, c *client.Client, ten registry.TenantID, s registry.StreamID) int {
	t.Helper()
	rs, err := c.AllReadings(context.Background(), ten, s, 0, 1<<50)
	if err != nil {
		return 0
	}
	return len(rs)
}

// syncBuffer collects the agent's output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
