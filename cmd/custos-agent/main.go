// Command custos-agent is the Custos edge connector: it reads devices,
// spools their readings on disk and pushes them to the hub over mutual TLS.
// It only connects outwards and never listens on a port.
//
//	custos-agent enrol --hub URL --token TOKEN [--state-dir DIR]
//	custos-agent run --config agent.json
//	custos-agent bench (--hub URL --token TOKEN | --state-dir DIR) [--duration 60s] [--json]
//
// main only parses flags, handles signals and calls into internal/agent.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/agent"
	"github.com/custos-iot/custos/internal/selfupdate"
	"github.com/custos-iot/custos/internal/uplink"
)

// version is the release version, set at link time:
// go build -ldflags "-X main.version=v1.4.2" ./cmd/custos-agent.
// Without it the agent reports its module build version and never
// updates itself.
var version string

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "custos-agent",
		Short:         "Custos edge connector: devices in, batches out over mutual TLS",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var hubURL, token, stateDir string
	enrolCmd := &cobra.Command{
		Use:   "enrol",
		Short: "Enrol this device with a hub using a single-use token",
		Long: `Generate this device's key (it never leaves the device), send a certificate request
with the single-use enrolment token, and keep the certificate and the hub CA. The token
pins the hub CA's fingerprint, so a hub impersonator is refused. The token can also come
from CUSTOS_ENROL_TOKEN, which keeps it out of the process list.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token == "" {
				token = os.Getenv("CUSTOS_ENROL_TOKEN")
			}
			if hubURL == "" || token == "" {
				return errors.New("--hub and --token (or CUSTOS_ENROL_TOKEN) are required")
			}
			if uplink.Enrolled(stateDir) {
				return fmt.Errorf("%s already holds an enrolment; remove it to enrol again", stateDir)
			}
			c, err := uplink.Enrol(cmd.Context(), stateDir, hubURL, token, rand.Reader)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrolled as connector %s of tenant %s; certificate valid until %s; device endpoint %s\n",
				c.Connector, c.Tenant, c.Expiry().UTC().Format("2006-01-02 15:04:05Z"), c.DeviceURL)
			return nil
		},
	}
	enrolCmd.Flags().StringVar(&hubURL, "hub", "", "hub API URL, e.g. https://hub.example.org:8443")
	enrolCmd.Flags().StringVar(&token, "token", "", "single-use enrolment token (or CUSTOS_ENROL_TOKEN)")
	enrolCmd.Flags().StringVar(&stateDir, "state-dir", "agent-data", "directory for the device key, certificates and spool")

	var configFile, level string
	runCmd := &cobra.Command{
		Use:   "run",
		Short: "Run the connector",
		Long: `Run the configured sources, spool their readings on disk and push them to the hub.
Enrols on first start if the configuration (or CUSTOS_ENROL_TOKEN) holds a token. Stops
cleanly on SIGINT/SIGTERM; whatever a source emitted is in the spool by then.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := agent.LoadConfig(configFile)
			if err != nil {
				return err
			}
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(level)); err != nil {
				return errors.New("--log-level must be debug, info, warn or error")
			}
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
			cfg.Version = version
			cfg.Trial = selfupdate.TrialMarker()
			return run(cmd.Context(), cfg)
		},
	}
	runCmd.Flags().StringVar(&configFile, "config", "agent.json", "configuration file (JSON)")
	runCmd.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	root.AddCommand(enrolCmd, runCmd, newBench())
	return root
}

// run runs the agent and, when it stops for a verified release, installs
// it: swap, trial run, rollback if the trial fails, then re-exec whichever
// binary is in place (same process ID, so systemd sees one service).
func run(ctx context.Context, cfg agent.Config) error {
	var exe string
	if cfg.Update != nil && cfg.Trial == "" {
		var err error
		if exe, err = selfupdate.Executable(); err != nil {
			return err
		}
		restored, err := selfupdate.Recover(exe, agent.UpdateDir(cfg))
		if err != nil {
			return err
		}
		if restored {
			cfg.Log.Warn("agent: an interrupted update trial was rolled back; restarting the previous binary")
			return selfupdate.Exec(exe)
		}
	}
	a, err := agent.New(ctx, cfg)
	if err != nil {
		return err
	}
	cfg.Log.Info("agent running", "state_dir", cfg.StateDir, "version", version)
	err = a.Run(ctx)
	if cerr := a.Close(); err == nil {
		err = cerr
	}
	var ready *agent.UpdateReady
	if !errors.As(err, &ready) || ctx.Err() != nil {
		return err
	}
	ap := &selfupdate.Apply{Exe: exe, Args: os.Args[1:], Dir: agent.UpdateDir(cfg), Previous: version,
		Timeout: cfg.Update.Timeout(), Log: cfg.Log}
	var rb *selfupdate.RolledBack
	if err := ap.Run(ctx, ready.Update); err != nil && !errors.As(err, &rb) {
		cfg.Log.Error("agent: installing the update failed; restarting the running version", "err", err)
	}
	if ctx.Err() != nil {
		return nil
	}
	return selfupdate.Exec(exe)
}
