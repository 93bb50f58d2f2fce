package main

// Crash-safety tests with real processes: the hub (custos serve) and an
// agent (custos-agent run) are built once and run as child processes, then
// killed with SIGKILL at random moments and restarted on the same ports,
// data directory and state directory. Every reading the simulator replays
// must end up stored at the hub exactly once.
//
// They take tens of seconds, so they are skipped with -short; CI runs them
// without -short (go test ./...). The seed of each test's random kill
// schedule is logged; CUSTOS_CRASH_SEED reruns a schedule.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/store"
	"github.com/custos-iot/custos/internal/uplink"
)

// crashStart is the first simulated timestamp of every crash test.
var crashStart = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// crashTicks is the number of intervals replayed: 3 streams × 34,000 =
// 102,000 readings per test.
const crashTicks = 34_000

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds custos and custos-agent once per test binary run (with
// -race if the test binary was built with it) and returns their paths.
func binaries(t *testing.T) (hubBin, agentBin string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "custos-crash-bin-")
		if buildErr != nil {
			return
		}
		args := []string{"build"}
		if raceEnabled() {
			args = append(args, "-race")
		}
		args = append(args, "-o", buildDir, "github.com/custos-iot/custos/cmd/custos", "github.com/custos-iot/custos/cmd/custos-agent")
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "custos"), filepath.Join(buildDir, "custos-agent")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// The listeners stay open until all are picked, so the ports differ.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// proc is a child process that is started, killed and restarted with the
// same arguments. Its stderr (and stdout) of every run is appended to one
// log file.
type proc struct {
	t       *testing.T
	name    string
	bin     string
	args    []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	runs int
}

func newProc(t *testing.T, name, bin string, args ...string) *proc {
	p := &proc{t: t, name: name, bin: bin, args: args, logPath: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- tail of %s log (%s) ---\n%s", p.name, p.logPath, tail(p.logPath, 40))
		}
		if b, _ := os.ReadFile(p.logPath); bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			t.Errorf("%s: data race reported; see the log:\n%s", p.name, tail(p.logPath, 80))
		}
	})
	return p
}

func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Fatalf("%s: already running", p.name)
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	p.runs++
	fmt.Fprintf(f, "=== %s run %d at %s\n", p.name, p.runs, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("%s: start: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
}

// kill sends SIGKILL and waits for the process to be gone. It is a no-op
// if the process is not running.
func (p *proc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
	p.cmd, p.done = nil, nil
}

// exited reports whether the process has ended on its own.
func (p *proc) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// crashHub is a hub process with a fixed data directory and fixed ports.
type crashHub struct {
	*proc
	dir    string
	apiURL string
	health *http.Client
}

// startCrashHub starts the hub binary on the embedded store, with extra
// arguments (e.g. a PostgreSQL DSN) appended.
func startCrashHub(ctx context.Context, t *testing.T, bin string, extra ...string) *crashHub {
	t.Helper()
	dir := t.TempDir()
	ports := freePorts(t, 2)
	apiAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	devAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	args := append([]string{"serve", "--data-dir", filepath.Join(dir, "data"),
		"--api-addr", apiAddr, "--device-addr", devAddr, "--name", "127.0.0.1",
		"--initial-token-file", filepath.Join(dir, "token"), "--log-level", "warn"}, extra...)
	h := &crashHub{
		proc:   newProc(t, "hub", bin, args...),
		dir:    dir,
		apiURL: "https://" + apiAddr,
	}
	h.start()
	h.waitHealthy(ctx)
	return h
}

// waitHealthy waits until the hub's API answers /v1/health.
func (h *crashHub) waitHealthy(ctx context.Context) {
	h.t.Helper()
	for {
		if h.health == nil {
			if pem, err := os.ReadFile(filepath.Join(h.dir, "data", "ca", "ca.pem")); err == nil {
				pool := x509.NewCertPool()
				if pool.AppendCertsFromPEM(pem) {
					h.health = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
						TLSClientConfig:   &tls.Config{RootCAs: pool},
						DisableKeepAlives: true,
					}}
				}
			}
		}
		if h.health != nil {
			resp, err := h.health.Get(h.apiURL + "/v1/health")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
		}
		if h.exited() {
			h.t.Fatalf("hub exited before answering /v1/health:\n%s", tail(h.logPath, 20))
		}
		if ctx.Err() != nil {
			h.t.Fatalf("hub did not answer /v1/health in time")
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// restart kills the hub with SIGKILL and starts it again on the same
// ports and data directory.
func (h *crashHub) restart(ctx context.Context) {
	h.t.Helper()
	h.kill()
	h.start()
	h.waitHealthy(ctx)
}

func (h *crashHub) client(t *testing.T) *client.Client {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(h.dir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.NewFromFile(h.apiURL, strings.TrimSpace(string(tok)), filepath.Join(h.dir, "data", "ca", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// crashSetup is a running hub with one provisioned household and an agent
// process (not started yet) replaying crashTicks intervals at rate ticks/s.
type crashSetup struct {
	hub      *crashHub
	agent    *proc
	stateDir string
	c        *client.Client
	tenant   registry.TenantID
	streams  []registry.Stream
	rng      *rand.Rand
}

func setupCrash(ctx context.Context, t *testing.T, rate float64) *crashSetup {
	t.Helper()
	if testing.Short() {
		t.Skip("crash test with real processes; skipped with -short (CI runs it)")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CUSTOS_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CUSTOS_CRASH_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("kill schedule seed %d (rerun with CUSTOS_CRASH_SEED=%d)", seed, seed)

	hubBin, agentBin := binaries(t)
	h := startCrashHub(ctx, t, hubBin)
	c := h.client(t)
	ten, err := c.CreateTenant(ctx, "Crash Coop")
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
	stateDir := filepath.Join(t.TempDir(), "agent")
	cfg := map[string]any{
		"hub":         h.apiURL,
		"state_dir":   stateDir,
		"enrol_token": hh.Token,
		"batch":       map[string]any{"max_readings": 600, "max_delay": "500ms"},
		"simulators": []map[string]any{{
			"household": hh.Site.Name, "interval": "1s", "start": crashStart,
			"ticks": crashTicks, "rate": rate, "seed": 7,
		}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return &crashSetup{
		hub:      h,
		agent:    newProc(t, "agent", agentBin, "run", "--config", cfgPath, "--log-level", "warn"),
		stateDir: stateDir,
		c:        c,
		tenant:   ten.ID,
		streams:  hh.Streams,
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
}

// startAgent starts the agent and waits until it has enrolled (or loaded
// its enrolment) and is running, so a kill never lands mid-enrolment.
func (s *crashSetup) startAgent(ctx context.Context, t *testing.T) {
	t.Helper()
	s.agent.start()
	// The certificate file is the sign of a finished enrolment.
	for !uplink.Enrolled(s.stateDir) {
		if s.agent.exited() {
			t.Fatalf("agent exited before enrolling")
		}
		if ctx.Err() != nil {
			t.Fatalf("agent did not enrol in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pause sleeps for a random 0.5-2 s (or until the deadline).
func (s *crashSetup) pause(ctx context.Context) time.Duration {
	d := 500*time.Millisecond + time.Duration(s.rng.Int64N(int64(1500*time.Millisecond)))
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	return d
}

// counts reads every stream back and returns, per stream, how often each
// timestamp is stored.
func (s *crashSetup) counts(ctx context.Context) ([]map[int64]int, error) {
	out := make([]map[int64]int, len(s.streams))
	for i, st := range s.streams {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		rs, err := s.c.AllReadings(rctx, s.tenant, st.ID, 0, 1<<50)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", st.Key, err)
		}
		m := make(map[int64]int, len(rs))
		for _, r := range rs {
			m[r.Time]++
		}
		out[i] = m
	}
	return out, nil
}

// waitDelivered polls until every stream holds at least crashTicks
// readings, then checks that each holds exactly the timestamps start,
// start+1s, ... once.
func (s *crashSetup) waitDelivered(ctx context.Context, t *testing.T) {
	t.Helper()
	for {
		cs, err := s.counts(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("timed out reading back: %v", err)
			}
			t.Logf("read back: %v; retrying", err)
		} else {
			short := ""
			for i, m := range cs {
				n := 0
				for _, k := range m {
					n += k
				}
				if n < crashTicks {
					short += fmt.Sprintf(" %s: %d of %d;", s.streams[i].Key, n, crashTicks)
				}
			}
			if short == "" {
				s.checkExactlyOnce(t, cs)
				return
			}
			if s.agent.exited() {
				t.Fatalf("agent exited; still missing:%s", short)
			}
			if ctx.Err() != nil {
				s.checkExactlyOnce(t, cs)
				t.Fatalf("timed out waiting for delivery:%s", short)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (s *crashSetup) checkExactlyOnce(t *testing.T, cs []map[int64]int) {
	t.Helper()
	t0 := crashStart.UnixMilli()
	for i, m := range cs {
		var lost, dup []int64
		nlost, ndup := 0, 0
		for k := range int64(crashTicks) {
			switch n := m[t0+k*1000]; {
			case n == 0:
				nlost++
				if len(lost) < 5 {
					lost = append(lost, k)
				}
			case n > 1:
				ndup += n - 1
				if len(dup) < 5 {
					dup = append(dup, k)
				}
			}
		}
		extra := 0
		for ts, n := range m {
			if ts < t0 || ts >= t0+crashTicks*1000 || (ts-t0)%1000 != 0 {
				extra += n
			}
		}
		if nlost > 0 || ndup > 0 || extra > 0 {
			t.Errorf("%s: %d lost (first ticks %v), %d duplicated (first ticks %v), %d unexpected timestamps",
				s.streams[i].Key, nlost, lost, ndup, dup, extra)
		}
	}
}

// TestCrashHub kills the hub with SIGKILL 3-4 times while an agent streams
// 102,000 readings to it, restarting it on the same ports and data
// directory each time, and checks every reading is stored exactly once.
func TestCrashHub(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := setupCrash(ctx, t, 3000)
	began := time.Now()
	s.startAgent(ctx, t)
	kills := 3 + s.rng.IntN(2)
	for i := range kills {
		d := s.pause(ctx)
		s.hub.restart(ctx)
		t.Logf("hub kill %d after %v; up again %v into the run", i+1, d.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	}
	s.waitDelivered(ctx, t)
	t.Logf("all readings delivered %v after the agent started", time.Since(began).Round(time.Millisecond))
	s.checkAudit(ctx, t)
}

// checkAudit: the audit log, killed with the hub, verifies offline from an
// export, and every batch the hub stored has its entry (a batch stored but
// not acknowledged before a kill is recorded when the agent resends it).
func (s *crashSetup) checkAudit(ctx context.Context, t *testing.T) {
	t.Helper()
	var bundle bytes.Buffer
	if _, err := s.c.Raw(ctx, "GET", "/v1/audit/export", &bundle); err != nil {
		t.Fatalf("audit export: %v", err)
	}
	key, err := os.ReadFile(filepath.Join(s.hub.dir, "data", "audit", "log.pub"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(bytes.NewReader(bundle.Bytes()), nil, strings.TrimSpace(string(key)), nil, 0)
	if err != nil {
		t.Fatalf("the audit log does not verify after the kills: %v", err)
	}
	b, err := audit.ReadBundle(bytes.NewReader(bundle.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for _, leaf := range b.Leaves {
		e, err := audit.ParseEntry(leaf)
		if err != nil {
			t.Fatal(err)
		}
		if e.Action == "ingest.batch" {
			recorded[strings.TrimPrefix(string(e.Resource), "batch/")] = true
		}
	}
	st, err := store.Open(ctx, store.Config{Path: filepath.Join(s.hub.dir, "data", "hub.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows, err := st.DB().QueryContext(ctx, `SELECT batch_id FROM batches`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	stored, missing := 0, 0
	for rows.Next() {
		var id []byte
		rows.Scan(&id)
		stored++
		if !recorded[fmt.Sprintf("%x", id)] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d stored batches have no audit entry", missing, stored)
	}
	t.Logf("audit log: %d entries verify; all %d stored batches recorded", rep.Entries, stored)
}

// TestCrashAgent kills the agent with SIGKILL 3-4 times while it streams
// 102,000 readings, restarting it with the same configuration and state
// directory, and checks every reading is stored exactly once.
func TestCrashAgent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := setupCrash(ctx, t, 3000)
	began := time.Now()
	s.startAgent(ctx, t)
	kills := 3 + s.rng.IntN(2)
	for i := range kills {
		d := s.pause(ctx)
		s.agent.kill()
		s.startAgent(ctx, t)
		t.Logf("agent kill %d after %v; restarted %v into the run", i+1, d.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	}
	s.waitDelivered(ctx, t)
	t.Logf("all readings delivered %v after the agent started", time.Since(began).Round(time.Millisecond))
}

// TestHubOutage stops the hub (SIGKILL) for 20 s while the agent keeps
// producing into its spool, restarts it and checks every reading is
// stored exactly once.
func TestHubOutage(t *testing.T) {
	const outage = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	// 34,000 ticks at 1,200/s take about 28 s: production goes on
	// throughout the outage and after it.
	s := setupCrash(ctx, t, 1200)
	began := time.Now()
	s.startAgent(ctx, t)
	s.pause(ctx)
	s.hub.kill()
	t.Logf("hub down %v into the run", time.Since(began).Round(time.Millisecond))
	select {
	case <-ctx.Done():
		t.Fatal("deadline during the outage")
	case <-time.After(outage):
	}
	if s.agent.exited() {
		t.Fatal("agent exited during the hub outage")
	}
	s.hub.start()
	s.hub.waitHealthy(ctx)
	t.Logf("hub up again %v into the run", time.Since(began).Round(time.Millisecond))
	s.waitDelivered(ctx, t)
	t.Logf("all readings delivered %v after the agent started", time.Since(began).Round(time.Millisecond))
}
