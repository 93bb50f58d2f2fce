package selfupdate_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/selfupdate"
)

// buildFake links testdata/fakeagent with a version and a trial behaviour.
func buildFake(t *testing.T, dir, version, mode string) []byte {
	t.Helper()
	out := filepath.Join(dir, "fake-"+version)
	cmd := exec.Command("go", "build", "-o", out,
		"-ldflags", "-X main.version="+version+" -X main.mode="+mode,
		"./testdata/fakeagent")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSwapTrialRollback runs real processes: v1.0.0 updates itself to
// v1.1.0 (trial passes, exec into it), then v1.2.0 crashes in its trial
// and v1.3.0 hangs in its trial: both are rolled back to v1.1.0, which
// then stays put.
func TestSwapTrialRollback(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	r := newRepo(t, time.Now()) // the fake agents use the real clock
	bins := t.TempDir()
	v10 := buildFake(t, bins, "v1.0.0", "ok")
	v11 := buildFake(t, bins, "v1.1.0", "ok")
	v12 := buildFake(t, bins, "v1.2.0", "crash")
	v13 := buildFake(t, bins, "v1.3.0", "hang")

	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer health.Close()
	home := t.TempDir()
	exe := filepath.Join(home, "custos-agent")
	if err := os.WriteFile(exe, v10, 0o755); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(home, "log")
	run := func(timeout string) []string {
		t.Helper()
		os.Remove(logFile)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, exe)
		cmd.Env = append(os.Environ(), "FAKE_LOG="+logFile, "FAKE_DIR="+filepath.Join(home, "update"),
			"FAKE_ROOT="+r.rootFile, "FAKE_URL="+r.srv.URL+"/v1/updates", "FAKE_HEALTH="+health.URL,
			"FAKE_TIMEOUT="+timeout)
		out, err := cmd.CombinedOutput()
		b, _ := os.ReadFile(logFile)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if err != nil {
			t.Fatalf("agent: %v\n%s\nlog:\n%s", err, out, b)
		}
		return lines
	}
	expect := func(got []string, want ...string) {
		t.Helper()
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("process log:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
	same := func(path string, want []byte, what string) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s is not %s (err %v)", path, what, err)
		}
	}

	// Nothing published: nothing happens.
	expect(run("1m"), "start v1.0.0", "up to date v1.0.0")

	// Happy path: swap, trial, exec into the new binary.
	r.publish("v1.1.0", v11)
	expect(run("1m"), "start v1.0.0", "trial v1.1.0", "updated v1.0.0 -> v1.1.0", "start v1.1.0", "up to date v1.1.0")
	same(exe, v11, "v1.1.0")
	same(exe+".prev", v10, "v1.0.0")

	// A release that crashes in its trial is rolled back, and not retried
	// at once.
	r.publish("v1.2.0", v12)
	expect(run("1m"), "start v1.1.0", "trial v1.2.0", "rolled back v1.2.0", "start v1.1.0", "up to date v1.1.0")
	same(exe, v11, "v1.1.0 (restored)")

	// A release that never reports healthy is stopped at the deadline and
	// rolled back.
	r.publish("v1.3.0", v13)
	expect(run("3s"), "start v1.1.0", "trial v1.3.0", "rolled back v1.3.0", "start v1.1.0", "up to date v1.1.0")
	same(exe, v11, "v1.1.0 (restored)")
	if _, err := os.Stat(exe + ".new"); !os.IsNotExist(err) {
		t.Fatalf("staged binary left behind: %v", err)
	}
}

// TestRecoverInterruptedTrial: the machine lost power during a trial. The
// next start restores the previous binary (swapped) or drops the staged
// one (not yet swapped).
func TestRecoverInterruptedTrial(t *testing.T) {
	for _, swapped := range []bool{true, false} {
		dir := t.TempDir()
		exe := filepath.Join(dir, "custos-agent")
		stateDir := filepath.Join(dir, "update")
		os.WriteFile(exe, []byte("old"), 0o755)
		if err := selfupdate.Stage(exe, []byte("new")); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(stateDir, 0o700)
		os.WriteFile(filepath.Join(stateDir, "state.json"), []byte(`{"pending":{"version":"v2.0.0","previous":"v1.0.0","started":"2026-03-01T00:00:00Z"}}`), 0o600)
		if swapped {
			if err := selfupdate.Swap(exe); err != nil {
				t.Fatal(err)
			}
		}
		restored, err := selfupdate.Recover(exe, stateDir)
		if err != nil || restored != swapped {
			t.Fatalf("swapped %v: restored %v, err %v", swapped, restored, err)
		}
		if b, _ := os.ReadFile(exe); string(b) != "old" {
			t.Fatalf("swapped %v: executable is %q after recovery", swapped, b)
		}
		if _, err := os.Stat(exe + ".new"); !os.IsNotExist(err) {
			t.Fatalf("swapped %v: staged file left: %v", swapped, err)
		}
		// Recovery is done once.
		if restored, err := selfupdate.Recover(exe, stateDir); err != nil || restored {
			t.Fatalf("second recover: %v, %v", restored, err)
		}
	}
}
