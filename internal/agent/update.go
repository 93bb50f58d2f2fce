package agent

import (
	"context"
	"path/filepath"
	"time"

	"github.com/custos-iot/custos/internal/selfupdate"
	"github.com/custos-iot/custos/internal/source/sim"
)

// UpdateConfig enables signed self-update.
type UpdateConfig struct {
	// RootFile is the update repository's trusted root.json, installed
	// with the agent (custos release init writes it). Required.
	RootFile string `json:"root_file"`
	// URL is the repository's base URL. Default: the device endpoint's
	// /v1/updates, fetched over the agent's mutual-TLS connection.
	URL string `json:"url,omitempty"`
	// Every is how often the agent checks. Default 6 h; the first check
	// runs a minute after start.
	Every sim.Duration `json:"every,omitempty"`
	// TrialTimeout is how long a new binary has to report healthy (one
	// health report the hub accepted) before it is rolled back. Default 2 min.
	TrialTimeout sim.Duration `json:"trial_timeout,omitempty"`
}

// UpdateReady is returned by Run when a verified newer release waits to be
// installed with selfupdate.Apply.
type UpdateReady struct{ Update *selfupdate.Update }

func (u *UpdateReady) Error() string { return "agent: stopped to install " + u.Update.Version }

// UpdateDir is where the agent keeps its verified update metadata and
// update state: <state dir>/update.
func UpdateDir(cfg Config) string {
	d := cfg.StateDir
	if d == "" {
		d = "agent-data"
	}
	return filepath.Join(d, "update")
}

// TrialTimeout is the configured trial deadline (default 2 minutes).
func (c *UpdateConfig) Timeout() time.Duration {
	if c == nil || c.TrialTimeout <= 0 {
		return 2 * time.Minute
	}
	return time.Duration(c.TrialTimeout)
}

func (a *Agent) version() string {
	if a.cfg.Version != "" {
		return a.cfg.Version
	}
	return Version()
}

// updateLoop checks for a newer release a minute after start and then
// every Update.Every. When one is verified it stops the agent, so that
// Run returns UpdateReady. Trial runs never check.
func (a *Agent) updateLoop(ctx context.Context) {
	uc := a.cfg.Update
	if uc == nil || a.cfg.Trial != "" {
		return
	}
	every := time.Duration(uc.Every)
	if every <= 0 {
		every = 6 * time.Hour
	}
	url := uc.URL
	if url == "" {
		url = a.device + "/v1/updates"
	}
	wait := min(time.Minute, every)
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = every
		u, err := selfupdate.Check(selfupdate.Config{
			RootFile: uc.RootFile, Dir: UpdateDir(a.cfg), URL: url, Client: a.client, Version: a.version(),
		})
		if err != nil {
			a.cfg.Log.Warn("agent: update check failed; will retry", "err", err)
			continue
		}
		if u == nil {
			a.cfg.Log.Debug("agent: no newer release", "version", a.version())
			continue
		}
		a.cfg.Log.Info("agent: verified a newer release; stopping to install it", "version", u.Version, "running", a.version())
		a.mu.Lock()
		a.ready = u
		a.mu.Unlock()
		a.stop()
		return
	}
}

// trialPassed is called after a health report the hub accepted.
func (a *Agent) trialPassed() {
	if a.cfg.Trial == "" {
		return
	}
	if err := selfupdate.ReportHealthy(a.cfg.Trial, a.version()); err != nil {
		a.cfg.Log.Error("agent: writing the trial marker failed", "err", err)
		return
	}
	a.cfg.Log.Info("agent: trial run synced with the hub; stopping", "version", a.version())
	a.stop()
}
