package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/bench"
)

func newBench() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "End-to-end benchmarks on this machine (loopback only)"}
	var cfg bench.IngestConfig
	var asJSON bool
	var cpuProfile string
	ingest := &cobra.Command{
		Use:   "ingest",
		Short: "Simulated connectors push batches over mutual TLS to a fresh hub",
		Long: `Start a fresh hub, enrol N simulated connectors and let each push batches of readings
over mutual TLS on loopback for the given duration. Prints throughput, batch latency,
bytes on disk per reading, and a baseline measured in the same run: the same readings
appended to a plain file with the same group-commit fsync policy (the disk's limit).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !asJSON {
				cfg.Progress = cmd.ErrOrStderr()
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				cfg.CPUProfile = f
			}
			res, err := bench.Ingest(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if !asJSON {
				printIngest(w, res)
			}
			if asJSON || os.Getenv("CUSTOS_BENCH_JSON") != "" {
				return json.NewEncoder(w).Encode(res)
			}
			return nil
		},
	}
	f := ingest.Flags()
	f.IntVar(&cfg.Connectors, "connectors", 100, "simulated connectors")
	f.IntVar(&cfg.Batch, "batch", 1000, "readings per batch")
	f.IntVar(&cfg.Streams, "streams", 10, "streams per connector")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to offer load")
	f.Float64Var(&cfg.Rate, "rate", 0, "offer this many readings/s in total (paced, open loop); 0 saturates")
	f.StringVar(&cfg.Dir, "dir", "", "data directory (default: a temporary one, removed afterwards)")
	f.StringVar(&cfg.PostgresDSN, "postgres-dsn", "", "run the hub on PostgreSQL at this DSN")
	f.BoolVar(&asJSON, "json", false, "print one JSON line")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the load phase (hub and connectors) to this file")
	cmd.AddCommand(ingest)
	return cmd
}

func printIngest(w io.Writer, r bench.IngestResult) {
	fmt.Fprintf(w, `
ingest: %d connectors x %d readings per batch, %d streams each, %.1f s, store %s
  acknowledged     %d readings (%d stored, %d failed requests)
  throughput       %.0f readings/s
  batch latency    p50 %.1f ms, p99 %.1f ms
  disk             %.2f bytes per reading
  baseline         %.0f readings/s: plain file, fdatasync after every batch (ratio %.2f)
  grouped          %.0f readings/s: plain file, one fdatasync per group of pending batches (ratio %.2f)
`, r.Connectors, r.Batch, r.Streams, r.DurationS, r.Store, r.Readings, r.StoredReadings, r.Errors,
		r.ReadingsPerSec, r.P50BatchMS, r.P99BatchMS, r.DiskBytesPerReading, r.BaselinePerSec, r.RatioToBaseline, r.GroupedPerSec, r.RatioToGrouped)
	if r.OfferedPerSec > 0 {
		fmt.Fprintf(w, "  offered          %.0f readings/s (paced)\n", r.OfferedPerSec)
	}
}
