package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
)

// TestNoListeningSocket runs the real agent binary against a hub and checks,
// from /proc, that none of the agent's sockets is listening: connectors
// connect outwards only.
func TestNoListeningSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	if testing.Short() {
		t.Skip("builds and runs the agent binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "custos-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	h, c := hubtest.Start(t, hub.Config{DataDir: filepath.Join(dir, "hub")})
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
	cfg, _ := json.Marshal(map[string]any{
		"hub": h.APIURL(), "state_dir": filepath.Join(dir, "agent"), "enrol_token": hh.Token,
		"batch":      map[string]any{"max_delay": "200ms"},
		"simulators": []map[string]any{{"household": "house-1", "interval": "100ms"}},
	})
	cfgPath := filepath.Join(dir, "agent.json")
	os.WriteFile(cfgPath, cfg, 0o600)
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	// Wait until the agent has delivered readings, so its uplink is open.
	deadline := time.Now().Add(20 * time.Second)
	for {
		rs, err := c.AllReadings(ctx, ten.ID, hh.Streams[0].ID, 0, 1<<50)
		if err == nil && len(rs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agent delivered nothing")
		}
		time.Sleep(100 * time.Millisecond)
	}
	inodes := socketInodes(t, cmd.Process.Pid)
	if len(inodes) == 0 {
		t.Fatal("agent holds no sockets at all; the check would prove nothing")
	}
	for _, f := range []string{"tcp", "tcp6", "udp", "udp6"} {
		for inode, state := range socketStates(t, filepath.Join("/proc", itoa(cmd.Process.Pid), "net", f)) {
			if !inodes[inode] {
				continue
			}
			// TCP state 0A is LISTEN; an unconnected UDP socket (07) would receive from anyone.
			if (strings.HasPrefix(f, "tcp") && state == "0A") || (strings.HasPrefix(f, "udp") && state == "07") {
				t.Errorf("agent socket %s in %s is listening (state %s)", inode, f, state)
			}
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func socketInodes(t *testing.T, pid int) map[string]bool {
	fds, err := os.ReadDir(filepath.Join("/proc", itoa(pid), "fd"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc", itoa(pid), "fd", fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			out[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	return out
}

// socketStates maps socket inodes to their state in a /proc/net table.
func socketStates(t *testing.T, path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 9 {
			out[fields[9]] = fields[3]
		}
	}
	return out
}
