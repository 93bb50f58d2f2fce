// Package bench runs the end-to-end benchmarks behind `custos bench`: real
// hubs, real connectors over mutual TLS on loopback, real disks, and a
// baseline measured in the same run so results are ratios, not absolute
// numbers from a noisy machine.
//
// Load generated here goes only to addresses on this machine and stops by
// itself after the configured duration.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/uplink"
	"github.com/custos-iot/custos/internal/wire"
)

// IngestConfig configures an ingest run.
type IngestConfig struct {
	// Connectors is the number of simulated connectors. Default 100.
	Connectors int
	// Batch is the readings per batch. Default 1000.
	Batch int
	// Streams is the streams per connector. Default 10.
	Streams int
	// Duration is how long load is offered. Default 10 s.
	Duration time.Duration
	// Rate, if positive, paces the connectors to offer this many readings
	// per second in total (open loop); otherwise each sends its next batch
	// as soon as the previous one is acknowledged (saturation).
	Rate float64
	// BaselineDuration is how long the plain-file baseline runs. Default
	// min(Duration, 5 s).
	BaselineDuration time.Duration
	// Dir holds the hub's data; default a temporary directory, removed after.
	Dir string
	// PostgresDSN runs the hub on PostgreSQL instead of SQLite.
	PostgresDSN string
	// Progress receives human-readable progress lines. Optional.
	Progress io.Writer
	// CPUProfile, if set, receives a CPU profile of the load phase only.
	CPUProfile io.Writer
	// Plaintext runs the hub without sealing (to measure its cost).
	Plaintext bool
	// ComparePlaintext first runs the same load against a hub that does not
	// seal, then the normal run, and reports both.
	ComparePlaintext bool
	// PlausibilityOff runs the hub without the plausibility checks.
	PlausibilityOff bool
	// SiteGrace is the hub's hold of role streams' blocks before the site
	// balance check (hub.Config.SiteGrace); a short one makes the check
	// run in the compactor during the measurement. Default: the hub's.
	SiteGrace time.Duration
	// ComparePlausibility first runs the same load against a hub without
	// the plausibility checks, then the normal run, and reports both.
	ComparePlausibility bool

	skipBaselines bool
}

// IngestResult is the outcome of an ingest run.
type IngestResult struct {
	Connectors          int     `json:"connectors"`
	Batch               int     `json:"batch"`
	Streams             int     `json:"streams_per_connector"`
	DurationS           float64 `json:"duration_s"`
	Readings            int64   `json:"readings"`
	StoredReadings      int64   `json:"stored_readings"`
	Errors              int64   `json:"errors"`
	ReadingsPerSec      float64 `json:"readings_per_sec"`
	P50BatchMS          float64 `json:"p50_batch_ms"`
	P99BatchMS          float64 `json:"p99_batch_ms"`
	DiskBytesPerReading float64 `json:"disk_bytes_per_reading"`
	BaselinePerSec      float64 `json:"baseline_readings_per_sec"`
	RatioToBaseline     float64 `json:"ratio_to_baseline"`
	GroupedPerSec       float64 `json:"baseline_grouped_readings_per_sec"`
	RatioToGrouped      float64 `json:"ratio_to_grouped_baseline"`
	OfferedPerSec       float64 `json:"offered_readings_per_sec,omitempty"`
	Sealed              bool    `json:"sealed"`
	PlaintextPerSec     float64 `json:"plaintext_readings_per_sec,omitempty"`
	SealedToPlaintext   float64 `json:"sealed_to_plaintext_ratio,omitempty"`
	Store               string  `json:"store"`
	// Plausibility says the checks ran; Quarantined counts the readings
	// they held back (of Readings).
	Plausibility bool  `json:"plausibility"`
	Quarantined  int64 `json:"quarantined_readings"`
	// With ComparePlausibility: the mean throughputs of two runs each
	// with the checks off and on (in the order off, on, on, off; the
	// third is this result's run), the ratio of the means, and the runs.
	PlausibilityOffPerSec float64   `json:"plausibility_off_readings_per_sec,omitempty"`
	PlausibilityOnPerSec  float64   `json:"plausibility_on_readings_per_sec,omitempty"`
	PlausibilityRatio     float64   `json:"plausibility_on_to_off_ratio,omitempty"`
	PlausibilityRuns      []float64 `json:"plausibility_runs_readings_per_sec,omitempty"`
}

func (c *IngestConfig) defaults() {
	if c.Connectors <= 0 {
		c.Connectors = 100
	}
	if c.Batch <= 0 {
		c.Batch = 1000
	}
	if c.Streams <= 0 {
		c.Streams = 10
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.BaselineDuration <= 0 {
		c.BaselineDuration = min(c.Duration, 5*time.Second)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Ingest runs the ingest benchmark.
func Ingest(ctx context.Context, cfg IngestConfig) (res IngestResult, err error) {
	cfg.defaults()
	var plain IngestResult
	if cfg.ComparePlaintext {
		pc := cfg
		pc.ComparePlaintext, pc.Plaintext, pc.skipBaselines, pc.CPUProfile = false, true, true, nil
		fmt.Fprintf(cfg.Progress, "first run: sealing off\n")
		if plain, err = Ingest(ctx, pc); err != nil {
			return plain, err
		}
		fmt.Fprintf(cfg.Progress, "second run: sealing on\n")
	}
	// With ComparePlausibility the runs go off, on, on (this one, the
	// reported run), off: the order cancels a linear drift of the machine
	// (other load, disk writeback) between the runs.
	var runs []float64 // off, on, then (deferred) off
	side := func(off bool) error {
		pc := cfg
		pc.ComparePlausibility, pc.ComparePlaintext, pc.PlausibilityOff, pc.skipBaselines, pc.CPUProfile = false, false, off, true, nil
		fmt.Fprintf(cfg.Progress, "comparison run with plausibility checks %s\n", map[bool]string{true: "off", false: "on"}[off])
		r, err := Ingest(ctx, pc)
		runs = append(runs, r.ReadingsPerSec)
		return err
	}
	if cfg.ComparePlausibility {
		if err := side(true); err != nil {
			return res, err
		}
		if err := side(false); err != nil {
			return res, err
		}
		fmt.Fprintf(cfg.Progress, "reported run, plausibility checks on\n")
	}
	res = IngestResult{Connectors: cfg.Connectors, Batch: cfg.Batch, Streams: cfg.Streams, Store: "sqlite", Sealed: !cfg.Plaintext, Plausibility: !cfg.PlausibilityOff}
	if cfg.ComparePlausibility {
		defer func() {
			if err != nil {
				return
			}
			if err = side(true); err != nil {
				return
			}
			res.PlausibilityRuns = []float64{runs[0], runs[1], res.ReadingsPerSec, runs[2]}
			res.PlausibilityOffPerSec = (runs[0] + runs[2]) / 2
			res.PlausibilityOnPerSec = (runs[1] + res.ReadingsPerSec) / 2
			if res.PlausibilityOffPerSec > 0 {
				res.PlausibilityRatio = res.PlausibilityOnPerSec / res.PlausibilityOffPerSec
			}
		}()
	}
	if cfg.ComparePlaintext {
		defer func() {
			res.PlaintextPerSec = plain.ReadingsPerSec
			if plain.ReadingsPerSec > 0 {
				res.SealedToPlaintext = res.ReadingsPerSec / plain.ReadingsPerSec
			}
		}()
	}
	if cfg.Batch%cfg.Streams != 0 {
		return res, fmt.Errorf("batch size %d must be a multiple of the streams per connector (%d)", cfg.Batch, cfg.Streams)
	}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "custos-bench-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	hcfg := hub.Config{DataDir: filepath.Join(dir, "hub"), APIAddr: "127.0.0.1:0", DeviceAddr: "127.0.0.1:0", Log: quiet, Plaintext: cfg.Plaintext, PlausibilityOff: cfg.PlausibilityOff, SiteGrace: cfg.SiteGrace}
	if cfg.PostgresDSN != "" {
		hcfg.PostgresDSN = cfg.PostgresDSN
		hcfg.PostgresSchema = fmt.Sprintf("custos_bench_%d", time.Now().UnixNano())
		res.Store = "postgres"
	}
	h, err := hub.New(ctx, hcfg)
	if err != nil {
		return res, err
	}
	defer h.Close()
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan error, 1)
	go func() { hubDone <- h.Run(hubCtx) }()
	defer func() { stopHub(); <-hubDone }()

	c, err := client.NewFromFile(h.APIURL(), h.InitialToken, h.CAFile())
	if err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Progress, "provisioning %d connectors with %d streams each...\n", cfg.Connectors, cfg.Streams)
	conns, err := provision(ctx, c, h, dir, cfg)
	if err != nil {
		return res, err
	}
	// Warm up: every connector completes its TLS handshake and one batch
	// before the clock starts, so handshakes do not count as batch latency.
	var warm sync.WaitGroup
	for _, bc := range conns {
		warm.Add(1)
		go func() {
			defer warm.Done()
			bc.run(ctx, time.Now().Add(time.Millisecond), cfg, new(atomic.Int64), new(atomic.Int64), new(atomic.Int64))
		}()
	}
	warm.Wait()
	if err := h.Compactor.Once(ctx); err != nil {
		return res, err
	}
	before := dbBytes(h)
	warmed, err := storedReadings(ctx, h, conns)
	if err != nil {
		return res, err
	}

	fmt.Fprintf(cfg.Progress, "offering load for %s...\n", cfg.Duration)
	var readings, errors, quarantined atomic.Int64
	lat := make([][]time.Duration, len(conns))
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	if cfg.CPUProfile != nil {
		if err := pprof.StartCPUProfile(cfg.CPUProfile); err != nil {
			return res, err
		}
	}
	var wg sync.WaitGroup
	for i, bc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat[i] = bc.run(ctx, deadline, cfg, &readings, &errors, &quarantined)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if cfg.CPUProfile != nil {
		pprof.StopCPUProfile()
	}

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	res.DurationS = elapsed.Seconds()
	res.Readings = readings.Load()
	res.Errors = errors.Load()
	res.Quarantined = quarantined.Load()
	res.ReadingsPerSec = float64(res.Readings) / elapsed.Seconds()
	res.P50BatchMS = pct(all, 0.50)
	res.P99BatchMS = pct(all, 0.99)

	stored, err := storedReadings(ctx, h, conns)
	if err != nil {
		return res, err
	}
	stored -= warmed
	res.StoredReadings = stored
	fmt.Fprintf(cfg.Progress, "compacting the landed blocks...\n")
	if err := h.Compactor.Once(ctx); err != nil {
		return res, err
	}
	if res.Store == "sqlite" {
		if _, err := h.Store.DB().ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			return res, err
		}
	}
	if stored > 0 {
		res.DiskBytesPerReading = float64(dbBytes(h)-before) / float64(stored)
	}

	if cfg.skipBaselines {
		return res, nil
	}
	fmt.Fprintf(cfg.Progress, "measuring the plain-file baselines for %s each...\n", cfg.BaselineDuration)
	base, err := BaselineDurable(filepath.Join(dir, "baseline"), cfg.Batch, cfg.BaselineDuration)
	if err != nil {
		return res, err
	}
	res.BaselinePerSec = base
	if base > 0 {
		res.RatioToBaseline = res.ReadingsPerSec / base
	}
	grouped, err := BaselineGrouped(filepath.Join(dir, "baseline"), cfg.Connectors, cfg.Batch, cfg.BaselineDuration)
	if err != nil {
		return res, err
	}
	res.GroupedPerSec = grouped
	if grouped > 0 {
		res.RatioToGrouped = res.ReadingsPerSec / grouped
	}
	res.OfferedPerSec = cfg.Rate
	return res, nil
}

func storedReadings(ctx context.Context, h *hub.Hub, conns []*benchConn) (int64, error) {
	var n int64
	for _, bc := range conns {
		for _, s := range bc.streams {
			c, err := h.Store.ReadingCount(ctx, bc.tenant, s)
			if err != nil {
				return 0, err
			}
			n += c
		}
	}
	return n, nil
}

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(int(float64(len(sorted))*p), len(sorted)-1)
	return float64(sorted[i].Microseconds()) / 1000
}

// dbBytes is the space the hub's database uses: the pages in use of the
// SQLite file (free pages, left by the drained landing area, are reused by
// later writes and not counted) or the size of the hub schema's relations
// (PostgreSQL).
func dbBytes(h *hub.Hub) int64 {
	if h.Store.Dialect() == "postgres" {
		var n int64
		h.Store.DB().QueryRow(`SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')`).Scan(&n)
		return n
	}
	var pages, free, size int64
	db := h.Store.DB()
	db.QueryRow("PRAGMA page_count").Scan(&pages)
	db.QueryRow("PRAGMA freelist_count").Scan(&free)
	db.QueryRow("PRAGMA page_size").Scan(&size)
	return (pages - free) * size
}

type benchConn struct {
	tenant  registry.TenantID
	streams []registry.StreamID
	keys    []string
	client  *http.Client
	url     string
	seed    uint64
	next    int64 // time of the next reading
	rng     *mrand.Rand
	values  []float64 // the random walks, one per stream
	runs    byte      // runs so far, to vary the batch IDs' randomness
}

func provision(ctx context.Context, c *client.Client, h *hub.Hub, dir string, cfg IngestConfig) ([]*benchConn, error) {
	ten, err := c.CreateTenant(ctx, "Bench Cooperative")
	if err != nil {
		return nil, err
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		return nil, err
	}
	out := make([]*benchConn, cfg.Connectors)
	for i := range out {
		name := fmt.Sprintf("bench-%03d", i)
		sub, err := c.CreateSubject(ctx, ten.ID, "Bench member "+name)
		if err != nil {
			return nil, err
		}
		site, err := c.CreateSite(ctx, ten.ID, sub.ID, name)
		if err != nil {
			return nil, err
		}
		offer, err := c.CreateConnector(ctx, ten.ID, name)
		if err != nil {
			return nil, err
		}
		dev, err := c.CreateDevice(ctx, ten.ID, site.ID, offer.Connector.ID, name+"-meter")
		if err != nil {
			return nil, err
		}
		bc := &benchConn{tenant: ten.ID, url: h.DeviceURL(), seed: uint64(i + 1)}
		for j := range cfg.Streams {
			// The first two streams are the site's grid import and PV
			// production, so the site balance check's hold and screen
			// run as in a real site.
			var st registry.Stream
			switch j {
			case 0:
				st, err = c.CreateRoleStream(ctx, ten.ID, dev.ID, "import_power_w", "energy.consumption", registry.RoleImport)
			case 1:
				st, err = c.CreateRoleStream(ctx, ten.ID, dev.ID, "pv_power_w", "energy.production", registry.RoleProduction)
			default:
				st, err = c.CreateStream(ctx, ten.ID, dev.ID, fmt.Sprintf("power_l%d_w", j), "energy.consumption", "W")
			}
			if err != nil {
				return nil, err
			}
			bc.streams = append(bc.streams, st.ID)
			bc.keys = append(bc.keys, st.Key)
		}
		creds, err := uplink.Enrol(ctx, filepath.Join(dir, "agents", name), h.APIURL(), offer.Token, rand.Reader)
		if err != nil {
			return nil, err
		}
		bc.client = &http.Client{Transport: &http.Transport{TLSClientConfig: creds.TLSConfig(""), MaxIdleConnsPerHost: 1}, Timeout: time.Minute}
		out[i] = bc
	}
	return out, nil
}

// run sends batches until the deadline and returns the batch latencies.
func (bc *benchConn) run(ctx context.Context, deadline time.Time, cfg IngestConfig, readings, errors, quarantined *atomic.Int64) []time.Duration {
	per := cfg.Batch / cfg.Streams
	// The random walk goes on from the warm-up batch: starting it afresh
	// would send the warm-up's values again, a replay the plausibility
	// checks rightly quarantine.
	if bc.rng == nil {
		bc.rng = mrand.New(mrand.NewPCG(bc.seed, 42))
		bc.values = make([]float64, len(bc.keys))
		for i := range bc.values {
			bc.values[i] = float64(200 + bc.rng.IntN(2000))
		}
	}
	rng, values := bc.rng, bc.values
	ids := mrand.NewChaCha8([32]byte{byte(bc.seed), byte(bc.seed >> 8), 7, bc.runs})
	bc.runs++
	b := wire.Batch{Series: make([]wire.Series, len(bc.keys))}
	for i := range b.Series {
		b.Series[i] = wire.Series{Key: bc.keys[i], Readings: make([]wire.Reading, per)}
	}
	if bc.next == 0 {
		bc.next = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	}
	t := bc.next
	defer func() { bc.next = t }()
	var lat []time.Duration
	var body []byte
	var every time.Duration // per connector, between batch starts
	if cfg.Rate > 0 {
		every = time.Duration(float64(time.Second) * float64(cfg.Batch) * float64(cfg.Connectors) / cfg.Rate)
	}
	// Spread the connectors' first sends over one period.
	next := time.Now().Add(time.Duration(mrand.Int64N(int64(every) + 1)))
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if every > 0 {
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			next = next.Add(every)
		}
		for i := range b.Series {
			rs := b.Series[i].Readings
			for j := range rs {
				values[i] = max(0, values[i]+float64(rng.IntN(61)-30))
				rs[j] = wire.Reading{Time: t + int64(j)*1000, Value: values[i]}
			}
		}
		t += int64(per) * 1000
		var err error
		if b.ID, err = wire.NewBatchID(time.Now(), ids); err != nil {
			errors.Add(1)
			return lat
		}
		body, err = wire.AppendBatch(body[:0], &b)
		if err != nil {
			errors.Add(1)
			return lat
		}
		t0 := time.Now()
		n, q, err := bc.post(body)
		if err != nil {
			errors.Add(1)
			continue
		}
		lat = append(lat, time.Since(t0))
		readings.Add(int64(n))
		quarantined.Add(int64(q))
	}
	return lat
}

func (bc *benchConn) post(body []byte) (readings, quarantined int, err error) {
	req, err := http.NewRequest(http.MethodPost, bc.url+"/v1/batches", bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", uplink.BatchContentType)
	resp, err := bc.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		// Drained, so the connection is reused rather than redialled.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	var out struct {
		Readings    int `json:"readings"`
		Quarantined int `json:"quarantined"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("status %s", resp.Status)
	}
	return out.Readings, out.Quarantined, nil
}
