package selfupdate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/custos-iot/custos/internal/enrol"
)

// EnvTrial names the environment variable that makes an agent process a
// trial run: it holds the path of the marker file the new binary writes
// once it has synced with the hub. A trial run then stops cleanly.
const EnvTrial = "CUSTOS_UPDATE_TRIAL"

// MaxFailures is how often a release may fail its trial before this agent
// stops trying it. Between tries it waits RetryAfter times the failures.
const (
	MaxFailures = 3
	RetryAfter  = 6 * time.Hour
)

// state is <Dir>/state.json: the trial in progress, if any, and the
// releases that failed theirs.
type state struct {
	Pending *pending           `json:"pending,omitempty"`
	Failed  map[string]failure `json:"failed,omitempty"`
}

type pending struct {
	Version  string    `json:"version"`
	Previous string    `json:"previous"`
	Started  time.Time `json:"started"`
}

type failure struct {
	Count int       `json:"count"`
	Last  time.Time `json:"last"`
}

func loadState(dir string) (*state, error) {
	st := &state{Failed: map[string]failure{}}
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("selfupdate: state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("selfupdate: state %s: %w", filepath.Join(dir, "state.json"), err)
	}
	if st.Failed == nil {
		st.Failed = map[string]failure{}
	}
	return st, nil
}

func (st *state) save(dir string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return enrol.WriteFile(filepath.Join(dir, "state.json"), b, 0o600, false)
}

func (st *state) mayTry(version string, now time.Time) bool {
	f, ok := st.Failed[version]
	if !ok {
		return true
	}
	return f.Count < MaxFailures && now.Sub(f.Last) >= time.Duration(f.Count)*RetryAfter
}

// Stage writes data as <exe>.new, executable, and fsyncs it.
func Stage(exe string, data []byte) error {
	if err := enrol.WriteFile(exe+".new", data, 0o755, false); err != nil {
		return fmt.Errorf("selfupdate: stage: %w", err)
	}
	return nil
}

// Swap makes the staged <exe>.new the executable: it first keeps the
// current one as <exe>.prev (a hard link, or a copy where links fail),
// then renames <exe>.new over <exe> — the one atomic step: at every
// instant <exe> is a complete binary, old or new.
func Swap(exe string) error {
	prev := exe + ".prev"
	if err := os.Remove(prev); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("selfupdate: %w", err)
	}
	if err := os.Link(exe, prev); err != nil {
		b, rerr := os.ReadFile(exe)
		if rerr != nil {
			return fmt.Errorf("selfupdate: keep previous binary: %w", rerr)
		}
		if err := enrol.WriteFile(prev, b, 0o755, false); err != nil {
			return fmt.Errorf("selfupdate: keep previous binary: %w", err)
		}
	}
	if err := os.Rename(exe+".new", exe); err != nil {
		return fmt.Errorf("selfupdate: swap: %w", err)
	}
	syncDir(filepath.Dir(exe))
	return nil
}

// Restore puts <exe>.prev back as <exe> (atomically, by rename).
func Restore(exe string) error {
	if err := os.Rename(exe+".prev", exe); err != nil {
		return fmt.Errorf("selfupdate: restore previous binary: %w", err)
	}
	syncDir(filepath.Dir(exe))
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// Apply installs a verified update and proves it:
//
//  1. stage the binary as <exe>.new (fsynced) and record the trial in
//     <Dir>/state.json;
//  2. swap it in (the previous binary stays as <exe>.prev);
//  3. run the new binary as a child with EnvTrial set; it must sync with
//     the hub, write the marker and exit 0 within Timeout;
//  4. on success clear the trial; on failure (crash, non-zero exit, no
//     marker, timeout) restore <exe>.prev and count the failure.
//
// The caller must have stopped its own work first (the trial run opens the
// same spool) and, whatever Apply returns, restart by Exec — into the new
// binary after a success, into the restored one after a rollback. If ctx
// ends during the trial, the child is stopped and the previous binary
// restored.
func (a *Apply) Run(ctx context.Context, u *Update) error {
	if err := a.defaults(); err != nil {
		return err
	}
	st, err := loadState(a.Dir)
	if err != nil {
		return err
	}
	if err := Stage(a.Exe, u.Data); err != nil {
		return err
	}
	st.Pending = &pending{Version: u.Version, Previous: a.Previous, Started: a.Now().UTC()}
	if err := st.save(a.Dir); err != nil {
		return err
	}
	if err := Swap(a.Exe); err != nil {
		os.Remove(a.Exe + ".new")
		st.Pending = nil
		_ = st.save(a.Dir)
		return err
	}
	a.Log.Info("selfupdate: new binary in place; trial run", "version", u.Version, "previous", a.Previous, "timeout", a.Timeout)
	terr := a.trial(ctx, u.Version)
	st.Pending = nil
	if terr == nil {
		delete(st.Failed, u.Version)
		if err := st.save(a.Dir); err != nil {
			return err
		}
		a.Log.Info("selfupdate: trial passed", "version", u.Version)
		return nil
	}
	if err := Restore(a.Exe); err != nil {
		return errors.Join(terr, err)
	}
	if ctx.Err() == nil {
		f := st.Failed[u.Version]
		f.Count++
		f.Last = a.Now().UTC()
		st.Failed[u.Version] = f
	}
	if err := st.save(a.Dir); err != nil {
		return errors.Join(terr, err)
	}
	a.Log.Warn("selfupdate: trial failed; previous binary restored", "version", u.Version, "previous", a.Previous, "err", terr)
	return &RolledBack{Version: u.Version, Err: terr}
}

// RolledBack reports a release that failed its trial and was replaced by
// the previous binary.
type RolledBack struct {
	Version string
	Err     error
}

func (e *RolledBack) Error() string {
	return fmt.Sprintf("selfupdate: %s failed its trial and was rolled back: %v", e.Version, e.Err)
}

func (e *RolledBack) Unwrap() error { return e.Err }

// Apply configures the installation of an update.
type Apply struct {
	// Exe is the running binary's path (symlinks resolved). Required.
	Exe string
	// Args are the arguments for the trial run (usually os.Args[1:]).
	Args []string
	// Dir is the update state directory (Config.Dir). Required.
	Dir string
	// Previous is the running version.
	Previous string
	// Timeout bounds the trial: the new binary must report healthy within
	// it. Default 2 minutes.
	Timeout time.Duration
	// Stdout and Stderr receive the trial run's output. Default os.Stderr.
	Stdout, Stderr io.Writer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Log is the operational log. Default slog.Default().
	Log *slog.Logger
}

func (a *Apply) defaults() error {
	if a.Exe == "" || a.Dir == "" {
		return errors.New("selfupdate: executable and state directory are required")
	}
	if a.Timeout == 0 {
		a.Timeout = 2 * time.Minute
	}
	if a.Stdout == nil {
		a.Stdout = os.Stderr
	}
	if a.Stderr == nil {
		a.Stderr = os.Stderr
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.Log == nil {
		a.Log = slog.Default()
	}
	return nil
}

func (a *Apply) trial(ctx context.Context, version string) error {
	marker := filepath.Join(a.Dir, "trial-ok")
	os.Remove(marker)
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.Exe, a.Args...)
	cmd.Env = append(withoutTrial(os.Environ()), EnvTrial+"="+marker)
	cmd.Stdout, cmd.Stderr = a.Stdout, a.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second // then SIGKILL
	err := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("no healthy report within %s: %w", a.Timeout, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("trial run: %w", err)
	}
	b, err := os.ReadFile(marker)
	if err != nil {
		return errors.New("trial run exited without reporting healthy")
	}
	os.Remove(marker)
	if got := strings.TrimSpace(string(b)); got != version {
		return fmt.Errorf("trial run reported version %q, want %q", got, version)
	}
	return nil
}

func withoutTrial(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, EnvTrial+"=") })
}

// TrialMarker returns the marker path if this process is a trial run.
func TrialMarker() string { return os.Getenv(EnvTrial) }

// ReportHealthy is called by a trial run once it has synced with the hub:
// it writes version to the marker (durably).
func ReportHealthy(marker, version string) error {
	return enrol.WriteFile(marker, []byte(version+"\n"), 0o600, false)
}

// Recover finishes a trial that was interrupted (the agent was killed or
// the machine lost power during it): a staged binary that was never
// swapped in is removed; a swapped-in binary that never passed its trial
// is replaced by <exe>.prev. It reports whether it restored the previous
// binary, in which case the caller must Exec it.
func Recover(exe, dir string) (bool, error) {
	st, err := loadState(dir)
	if err != nil || st.Pending == nil {
		return false, err
	}
	p := st.Pending
	st.Pending = nil
	restored := false
	if _, err := os.Stat(exe + ".new"); err == nil {
		os.Remove(exe + ".new") // never swapped in
	} else if _, err := os.Stat(exe + ".prev"); err == nil {
		if err := Restore(exe); err != nil {
			return false, err
		}
		restored = true
		f := st.Failed[p.Version]
		f.Count++
		f.Last = p.Started
		st.Failed[p.Version] = f
	}
	return restored, st.save(dir)
}

// Exec replaces this process with exe, same arguments and environment
// (without EnvTrial), same process ID — so a supervisor such as systemd
// sees one service that kept running.
func Exec(exe string) error {
	return syscall.Exec(exe, os.Args, withoutTrial(os.Environ()))
}

// Executable returns the path of the running binary with symlinks
// resolved: the file that Swap replaces.
func Executable() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(p)
}
