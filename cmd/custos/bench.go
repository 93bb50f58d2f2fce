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
	f.BoolVar(&cfg.ComparePlaintext, "compare-plaintext", false, "first run the same load against a hub that does not seal, and report both")
	f.DurationVar(&cfg.SiteGrace, "site-grace", 0, "hold of site-role streams before the site balance check (default the hub's 2m; e.g. 1ms to measure the check in the compactor during the run)")
	f.BoolVar(&cfg.ComparePlausibility, "compare-plausibility", false, "run the same load with the plausibility checks off and on (off, on, on, off) and report the means and their ratio")
	f.Float64Var(&cfg.Rate, "rate", 0, "offer this many readings/s in total (paced, open loop); 0 saturates")
	f.StringVar(&cfg.Dir, "dir", "", "data directory (default: a temporary one, removed afterwards)")
	f.StringVar(&cfg.PostgresDSN, "postgres-dsn", "", "run the hub on PostgreSQL at this DSN")
	f.BoolVar(&asJSON, "json", false, "print one JSON line")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the load phase (hub and connectors) to this file")
	cmd.AddCommand(ingest, newBenchQuery(), newBenchErase(), newBenchAudit(), newBenchAuthz())
	return cmd
}

func newBenchQuery() *cobra.Command {
	var dir string
	var n int
	var asJSON bool
	c := &cobra.Command{
		Use:   "query",
		Short: "Read latency through the API: a year of daily rollups of a household, a day of raw 1 s readings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			progress := cmd.ErrOrStderr()
			if asJSON {
				progress = io.Discard
			}
			r, err := bench.Query(cmd.Context(), dir, n, progress)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\nquery: %d queries each, sealed store\n                                          store read path        through the HTTPS API\n  a year of daily rollups (3 streams)     p50 %6.2f p99 %6.2f   p50 %6.2f p99 %6.2f ms\n  a day of raw 1 s readings (%d)       p50 %6.2f p99 %6.2f   p50 %6.2f p99 %6.2f ms\n",
				r.Queries, r.P50DailyYearMS, r.P99DailyYearMS, r.APIP50DailyYearMS, r.APIP99DailyYearMS,
				r.RawDayReadings, r.P50RawDayMS, r.P99RawDayMS, r.APIP50RawDayMS, r.APIP99RawDayMS)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "data directory (default: a temporary one, removed afterwards)")
	c.Flags().IntVar(&n, "queries", 200, "queries of each kind")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON line")
	return c
}

func newBenchErase() *cobra.Command {
	var dir string
	var large int
	var asJSON bool
	c := &cobra.Command{
		Use:   "erase",
		Short: "Erasure time for a subject with 1,000 readings and one with many (default 10 million)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			progress := cmd.ErrOrStderr()
			if asJSON {
				progress = io.Discard
			}
			r, err := bench.Erase(cmd.Context(), dir, large, progress)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\nerase: %d readings in %.2f ms, %d readings in %.2f ms (ratio %.2f)\n",
				r.SmallReadings, r.EraseSmallMS, r.LargeReadings, r.EraseLargeMS, r.Ratio)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "data directory (default: a temporary one, removed afterwards)")
	c.Flags().IntVar(&large, "large", 10_000_000, "readings of the large subject")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON line")
	return c
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
	if r.PlaintextPerSec > 0 {
		fmt.Fprintf(w, "  sealing off      %.0f readings/s (same load, first run); sealed runs at %.2f of it\n", r.PlaintextPerSec, r.SealedToPlaintext)
	}
	if r.Plausibility {
		fmt.Fprintf(w, "  plausibility     on: %d readings quarantined\n", r.Quarantined)
	}
	if r.PlausibilityOffPerSec > 0 {
		fmt.Fprintf(w, "  checks off/on    %.0f / %.0f readings/s (means of runs off, on, on, off: %.0f); with checks runs at %.3f of without\n", r.PlausibilityOffPerSec, r.PlausibilityOnPerSec, r.PlausibilityRuns, r.PlausibilityRatio)
	}
	if r.OfferedPerSec > 0 {
		fmt.Fprintf(w, "  offered          %.0f readings/s (paced)\n", r.OfferedPerSec)
	}
}

func newBenchAuthz() *cobra.Command {
	var dir string
	var asJSON bool
	c := &cobra.Command{
		Use:   "authz",
		Short: "Access decisions: latency with 100,000 grants, and what authorization adds to a read",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			progress := cmd.ErrOrStderr()
			if asJSON {
				progress = io.Discard
			}
			r, err := bench.Authz(cmd.Context(), dir, progress)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\nauthz: %d grants; decision p50 %.1f µs, p99 %.1f µs\n  API read of a day of 15-min aggregates, p50 %.2f ms authorized vs %.2f ms not: ratio %.2f\n",
				r.Grants, r.P50DecisionUS, r.P99DecisionUS, r.ReadAuthorizedMS, r.ReadUnauthorizedMS, r.ReadOverheadRatio)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "working directory (default: a temporary one, removed afterwards)")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON line")
	return c
}

func newBenchAudit() *cobra.Command {
	var dir string
	var d time.Duration
	var asJSON bool
	c := &cobra.Command{
		Use:   "audit",
		Short: "Audit log: durable appends per second, offline verification of 1,000,000 entries, cost on a read",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			progress := cmd.ErrOrStderr()
			if asJSON {
				progress = io.Discard
			}
			r, err := bench.Audit(cmd.Context(), dir, d, progress)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\naudit: %.0f entries/s appended durably (%d concurrent callers)\n  verify 1,000,000 entries offline: %.2f s\n  API read of a day of raw readings, p50 %.2f ms audited vs %.2f ms unaudited: ratio %.2f\n  API read of a day of 15-min aggregates, p50 %.2f ms audited vs %.2f ms unaudited: ratio %.2f\n",
				r.AppendPerSec, r.Callers, r.Verify1MS, r.ReadAuditedMS, r.ReadUnauditedMS, r.ReadOverheadRatio,
				r.SmallReadAuditedMS, r.SmallReadUnauditedMS, r.SmallReadOverheadRatio)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "working directory (default: a temporary one, removed afterwards)")
	c.Flags().DurationVar(&d, "duration", 3*time.Second, "how long to append")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON line")
	return c
}
