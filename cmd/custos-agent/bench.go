package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/agent"
	"github.com/custos-iot/custos/internal/footprint"
	"github.com/custos-iot/custos/internal/source/sim"
	"github.com/custos-iot/custos/internal/uplink"
)

// benchHouseholds names the simulated households that carry at least
// streams streams (three each). The hub must know their devices and
// streams, all served by the bench's connector.
func benchHouseholds(streams int) []string {
	n := (streams + 2) / 3
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("bench-%d", i+1)
	}
	return out
}

// benchResult is the bench's report; its JSON form is one line.
type benchResult struct {
	Streams      int     `json:"streams"`
	Households   int     `json:"households"`
	IntervalS    float64 `json:"interval_s"`
	WarmupS      float64 `json:"warmup_s"`
	DurationS    float64 `json:"duration_s"`
	ReadingsSent uint64  `json:"readings_sent"`
	BatchesSent  uint64  `json:"batches_sent"`
	SendFailures uint64  `json:"send_failures"`
	Rejected     uint64  `json:"batches_rejected"`
	SpoolBacklog int64   `json:"spool_backlog_batches"`
	RSSMB        float64 `json:"rss_mb"`
	RSSFinalMB   float64 `json:"rss_final_mb"`
	CPUPercent   float64 `json:"cpu_percent_of_one_core"`
	CPUSeconds   float64 `json:"cpu_s"`
	BinaryBytes  int64   `json:"binary_bytes"`
	GoVersion    string  `json:"go_version"`
	Platform     string  `json:"platform"`
}

func newBench() *cobra.Command {
	var hubURL, token, stateDir string
	var streams int
	var warmup, duration time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure this agent's footprint: 100 streams at 1 Hz through the spool to a hub",
		Long: `Run the footprint load — simulated households in real time, three streams each,
one reading per stream per second (--streams 100 runs 34 households, 102 streams) —
through the spool (fsync of every batch, the default) to a hub, and report this process's
resident memory and CPU use.

CPU is user+system time (getrusage) over wall time, measured for --duration after a
--warmup that is not measured, so enrolment and the TLS handshake are excluded. Resident
memory is read from /proc/self/status: rss_mb is the peak of the whole run (VmHWM,
enrolment included), rss_final_mb the resident set at the end (VmRSS). MB is 10^6 bytes.
Readings are sealed into one batch per second (one reading of every stream), so
readings_sent is the batches the hub acknowledged during the measurement times the
readings in a batch.

The hub must know the connector's devices and streams: for household bench-N, the
devices bench-N-pv, bench-N-meter and bench-N-heatpump with the streams of a simulated
household (see 'custos demo'). Either enrol a fresh connector with --hub and --token
(state is kept in a temporary directory, removed afterwards) or reuse an enrolled
--state-dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token == "" {
				token = os.Getenv("CUSTOS_ENROL_TOKEN")
			}
			if streams < 1 || duration <= 0 || warmup < 0 {
				return errors.New("--streams and --duration must be positive, --warmup not negative")
			}
			if stateDir == "" {
				if hubURL == "" || token == "" {
					return errors.New("--hub and --token (or CUSTOS_ENROL_TOKEN), or an enrolled --state-dir, are required")
				}
				dir, err := os.MkdirTemp("", "custos-agent-bench-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				stateDir = dir
			} else if !uplink.Enrolled(stateDir) && (hubURL == "" || token == "") {
				return fmt.Errorf("%s is not enrolled: give --hub and --token", stateDir)
			}
			res, err := runBench(cmd.Context(), benchOptions{
				hub: hubURL, token: token, stateDir: stateDir, streams: streams, warmup: warmup, duration: duration,
				log: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn})),
			})
			if res != nil {
				if perr := printBench(cmd.OutOrStdout(), res, asJSON); perr != nil && err == nil {
					err = perr
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&hubURL, "hub", "", "hub API URL, to enrol a fresh connector")
	f.StringVar(&token, "token", "", "single-use enrolment token (or CUSTOS_ENROL_TOKEN)")
	f.StringVar(&stateDir, "state-dir", "", "an enrolled state directory to reuse (default: a fresh temporary one)")
	f.IntVar(&streams, "streams", 100, "at least this many streams, three per simulated household")
	f.DurationVar(&warmup, "warmup", 5*time.Second, "unmeasured run before the measurement")
	f.DurationVar(&duration, "duration", 60*time.Second, "how long to measure")
	f.BoolVar(&asJSON, "json", false, "print one JSON line")
	return cmd
}

type benchOptions struct {
	hub, token, stateDir string
	streams              int
	warmup, duration     time.Duration
	log                  *slog.Logger
}

// runBench runs the agent with the footprint load and measures it. It
// returns a result whenever the measurement completed, with an error if
// nothing reached the hub.
func runBench(ctx context.Context, o benchOptions) (*benchResult, error) {
	households := benchHouseholds(o.streams)
	perBatch := 3 * len(households)
	cfg := agent.Config{
		Hub:        o.hub,
		StateDir:   o.stateDir,
		EnrolToken: o.token,
		// Every household emits its three readings at once, and a batch
		// is sealed between emits as soon as it holds perBatch readings:
		// one batch per second with one reading of every stream.
		Batch: agent.BatchConfig{MaxReadings: perBatch},
		Log:   o.log,
	}
	for i, h := range households {
		cfg.Simulators = append(cfg.Simulators, sim.Config{Household: h, Interval: sim.Duration(time.Second), Seed: uint64(i + 1)})
	}
	a, err := agent.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	wait := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return errors.New("bench interrupted")
		case err := <-done:
			return fmt.Errorf("agent stopped during the bench: %v", err)
		case <-t.C:
			return nil
		}
	}
	if err := wait(o.warmup); err != nil {
		return nil, err
	}
	before, err := footprint.Take()
	if err != nil {
		return nil, err
	}
	st0 := a.Stats()
	if err := wait(o.duration); err != nil {
		return nil, err
	}
	after, err := footprint.Take()
	if err != nil {
		return nil, err
	}
	st1 := a.Stats()
	mem, err := footprint.ReadMemory()
	if err != nil {
		return nil, err
	}
	stop()
	if err := <-done; err != nil {
		return nil, err
	}
	res := &benchResult{
		Streams:      perBatch,
		Households:   len(households),
		IntervalS:    1,
		WarmupS:      o.warmup.Seconds(),
		DurationS:    after.Wall.Sub(before.Wall).Seconds(),
		BatchesSent:  st1.Uplink.Sent - st0.Uplink.Sent,
		SendFailures: st1.Uplink.Failures - st0.Uplink.Failures,
		Rejected:     st1.Uplink.Rejected - st0.Uplink.Rejected,
		SpoolBacklog: st1.Spool.Records,
		RSSMB:        float64(mem.Peak) / 1e6,
		RSSFinalMB:   float64(mem.RSS) / 1e6,
		CPUPercent:   footprint.PercentOfOneCore(before, after),
		CPUSeconds:   (after.CPU - before.CPU).Seconds(),
		GoVersion:    runtime.Version(),
		Platform:     runtime.GOOS + "/" + runtime.GOARCH,
	}
	res.ReadingsSent = res.BatchesSent * uint64(perBatch)
	if exe, err := os.Executable(); err == nil {
		if fi, err := os.Stat(exe); err == nil {
			res.BinaryBytes = fi.Size()
		}
	}
	if res.BatchesSent == 0 {
		return res, fmt.Errorf("no batch reached the hub during the measurement (last error: %s)", st1.Uplink.LastError)
	}
	return res, nil
}

func printBench(w io.Writer, r *benchResult, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintf(w, `custos-agent footprint (%s, %s)
  load:      %d streams (%d simulated households) at 1 Hz, spool fsync every batch
  measured:  %.1f s after a %.1f s warm-up
  sent:      %d readings in %d batches (%d send failures, %d rejected, %d batches still spooled)
  CPU:       %.2f %% of one core (%.2f s user+system)
  memory:    %.1f MB resident at peak, %.1f MB at the end
  binary:    %.1f MB
`, r.Platform, r.GoVersion, r.Streams, r.Households, r.DurationS, r.WarmupS,
		r.ReadingsSent, r.BatchesSent, r.SendFailures, r.Rejected, r.SpoolBacklog,
		r.CPUPercent, r.CPUSeconds, r.RSSMB, r.RSSFinalMB, float64(r.BinaryBytes)/1e6)
	return err
}
