package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/source/sim"
	"github.com/custos-iot/custos/internal/uplink"
	"github.com/custos-iot/custos/internal/wire"
)

// bed is a running hub for the query and erasure benchmarks.
type bed struct {
	h    *hub.Hub
	c    *client.Client
	ten  registry.TenantID
	dir  string
	stop func()
}

func newBedWith(ctx context.Context, dir string, tweak func(*hub.Config)) (*bed, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := hub.Config{DataDir: filepath.Join(dir, "hub"), APIAddr: "127.0.0.1:0", DeviceAddr: "127.0.0.1:0", Log: quiet}
	if tweak != nil {
		tweak(&cfg)
	}
	h, err := hub.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	hubCtx, stopHub := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(hubCtx) }()
	b := &bed{h: h, dir: dir, stop: func() { stopHub(); <-done; h.Close() }}
	if b.c, err = client.NewFromFile(h.APIURL(), h.InitialToken, h.CAFile()); err != nil {
		b.stop()
		return nil, err
	}
	ten, err := b.c.CreateTenant(ctx, "Bench Cooperative")
	if err != nil {
		b.stop()
		return nil, err
	}
	if _, err := b.c.GrantSelf(ctx, ten.ID); err != nil {
		b.stop()
		return nil, err
	}
	b.ten = ten.ID
	return b, nil
}

// household provisions a simulated household and an enrolled device client.
func (b *bed) household(ctx context.Context, name string) (client.Household, *http.Client, error) {
	hh, err := b.c.AddHousehold(ctx, b.ten, name, "Bench member "+name)
	if err != nil {
		return hh, nil, err
	}
	creds, err := uplink.Enrol(ctx, filepath.Join(b.dir, "agents", name), b.h.APIURL(), hh.Token, rand.Reader)
	if err != nil {
		return hh, nil, err
	}
	return hh, &http.Client{Transport: &http.Transport{TLSClientConfig: creds.TLSConfig("")}, Timeout: time.Minute}, nil
}

// load stores n readings per stream of hh, every step ms from start,
// values from the household simulator, in batches of 10,000 per stream.
func (b *bed) load(ctx context.Context, hh client.Household, dev *http.Client, start time.Time, step time.Duration, n int) error {
	s, err := sim.New(sim.Config{Household: hh.Site.Name})
	if err != nil {
		return err
	}
	bc := &benchConn{client: dev, url: b.h.DeviceURL()}
	const per = 10_000
	t0 := start.UnixMilli()
	for done := 0; done < n; done += per {
		batch := wire.Batch{}
		if batch.ID, err = wire.NewBatchID(time.Now(), rand.Reader); err != nil {
			return err
		}
		for _, st := range hh.Streams {
			rs := make([]wire.Reading, min(per, n-done))
			for i := range rs {
				t := t0 + int64(done+i)*step.Milliseconds()
				rs[i] = wire.Reading{Time: t, Value: s.Value(st.Key, t)}
			}
			batch.Series = append(batch.Series, wire.Series{Key: st.Key, Readings: rs})
		}
		body, err := wire.AppendBatch(nil, &batch)
		if err != nil {
			return err
		}
		if _, _, err := bc.post(body); err != nil {
			return err
		}
	}
	return nil
}

func percentile(ds []time.Duration, p float64) float64 {
	slices.Sort(ds)
	return pct(ds, p)
}

// QueryResult is the outcome of `custos bench query`. The first four
// figures time the read path of the protected store in-process (find the
// chunks or rollup rows, open them with the subject's key, decode, order);
// the api_ figures time the same reads through the HTTPS API with JSON
// encoding and a client on the same machine.
type QueryResult struct {
	P50DailyYearMS    float64 `json:"p50_daily_year_ms"`
	P99DailyYearMS    float64 `json:"p99_daily_year_ms"`
	P50RawDayMS       float64 `json:"p50_raw_day_ms"`
	P99RawDayMS       float64 `json:"p99_raw_day_ms"`
	APIP50DailyYearMS float64 `json:"api_p50_daily_year_ms"`
	APIP99DailyYearMS float64 `json:"api_p99_daily_year_ms"`
	APIP50RawDayMS    float64 `json:"api_p50_raw_day_ms"`
	APIP99RawDayMS    float64 `json:"api_p99_raw_day_ms"`
	Queries           int     `json:"queries"`
	RawDayReadings    int     `json:"raw_day_readings"`
}

// Query measures reads through the API of a household with a year of
// history (one reading per minute per stream) and a day of raw 1 s
// readings: a year of daily rollups of all its streams, and a day of raw
// readings of one stream (all pages). Everything is sealed, as always.
func Query(ctx context.Context, dir string, queries int, progress io.Writer) (QueryResult, error) {
	var res QueryResult
	if queries <= 0 {
		queries = 200
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "custos-bench-query-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	// Synthetic readings loaded at full speed look implausible in places
	// (and would be partly quarantined); the read path is measured here.
	b, err := newBedWith(ctx, dir, func(c *hub.Config) { c.PlausibilityOff = true })
	if err != nil {
		return res, err
	}
	defer b.stop()
	hh, dev, err := b.household(ctx, "house-q")
	if err != nil {
		return res, err
	}
	year := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	fmt.Fprintf(progress, "loading a year of minute readings for %d streams...\n", len(hh.Streams))
	if err := b.load(ctx, hh, dev, year, time.Minute, 365*24*60); err != nil {
		return res, err
	}
	day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fmt.Fprintf(progress, "loading a day of 1 s readings...\n")
	if err := b.load(ctx, hh, dev, day, time.Second, 86400); err != nil {
		return res, err
	}
	fmt.Fprintf(progress, "compacting and rolling up...\n")
	if err := b.h.Compactor.Once(ctx); err != nil {
		return res, err
	}
	fmt.Fprintf(progress, "querying %d times each...\n", queries)
	var daily, raw, apiDaily, apiRaw []time.Duration
	yearFrom, yearTo := year.UnixMilli(), year.AddDate(1, 0, 0).UnixMilli()
	dayFrom, dayTo := day.UnixMilli(), day.AddDate(0, 0, 1).UnixMilli()
	for range queries {
		t := time.Now()
		for _, st := range hh.Streams {
			bs, err := series.ReadRollups(ctx, b.h.Store, series.RollupQuery{Tenant: b.ten, Stream: st.ID, Res: rollup.Day, From: yearFrom, To: yearTo, Sealer: b.h.Keys})
			if err != nil {
				return res, err
			}
			if len(bs) != 365 {
				return res, fmt.Errorf("a year of daily rollups has %d buckets, want 365", len(bs))
			}
		}
		daily = append(daily, time.Since(t))
		t = time.Now()
		p, err := series.Read(ctx, b.h.Store, series.Query{Tenant: b.ten, Stream: hh.Streams[1].ID, From: dayFrom, To: dayTo, Limit: series.MaxLimit, Sealer: b.h.Keys})
		if err != nil {
			return res, err
		}
		raw = append(raw, time.Since(t))
		res.RawDayReadings = len(p.Readings)

		t = time.Now()
		for _, st := range hh.Streams {
			if _, err := b.c.Aggregates(ctx, b.ten, st.ID, "1d", yearFrom, yearTo); err != nil {
				return res, err
			}
		}
		apiDaily = append(apiDaily, time.Since(t))
		t = time.Now()
		if _, err := b.c.AllReadings(ctx, b.ten, hh.Streams[1].ID, dayFrom, dayTo); err != nil {
			return res, err
		}
		apiRaw = append(apiRaw, time.Since(t))
	}
	if res.RawDayReadings != 86400 {
		return res, fmt.Errorf("a day of raw readings has %d readings, want 86400", res.RawDayReadings)
	}
	res.Queries = queries
	res.P50DailyYearMS, res.P99DailyYearMS = percentile(daily, 0.5), percentile(daily, 0.99)
	res.P50RawDayMS, res.P99RawDayMS = percentile(raw, 0.5), percentile(raw, 0.99)
	res.APIP50DailyYearMS, res.APIP99DailyYearMS = percentile(apiDaily, 0.5), percentile(apiDaily, 0.99)
	res.APIP50RawDayMS, res.APIP99RawDayMS = percentile(apiRaw, 0.5), percentile(apiRaw, 0.99)
	return res, nil
}

// EraseResult is the outcome of `custos bench erase`.
type EraseResult struct {
	SmallReadings int     `json:"small_readings"`
	LargeReadings int     `json:"large_readings"`
	EraseSmallMS  float64 `json:"erase_small_ms"`
	EraseLargeMS  float64 `json:"erase_large_ms"`
	Ratio         float64 `json:"large_to_small_ratio"`
}

// Erase measures how long erasing a data subject takes (the API call:
// key destroyed, registry updated, evidence recorded) for a subject with
// few readings and one with many. The sealed rows are purged afterwards in
// the background; that is not part of the erasure.
func Erase(ctx context.Context, dir string, large int, progress io.Writer) (EraseResult, error) {
	res := EraseResult{SmallReadings: 1000, LargeReadings: large}
	if res.LargeReadings <= 0 {
		res.LargeReadings = 10_000_000
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "custos-bench-erase-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	b, err := newBedWith(ctx, dir, func(c *hub.Config) { c.PlausibilityOff = true }) // as in Query
	if err != nil {
		return res, err
	}
	defer b.stop()
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	measure := func(name string, readings int) (float64, error) {
		hh, dev, err := b.household(ctx, name)
		if err != nil {
			return 0, err
		}
		fmt.Fprintf(progress, "loading %d readings for %s...\n", readings, name)
		if err := b.load(ctx, hh, dev, start, time.Second, readings/len(hh.Streams)); err != nil {
			return 0, err
		}
		if err := b.h.Compactor.Once(ctx); err != nil {
			return 0, err
		}
		var stored int64
		for _, st := range hh.Streams {
			n, err := b.h.Store.ReadingCount(ctx, b.ten, st.ID)
			if err != nil {
				return 0, err
			}
			stored += n
		}
		if want := int64(readings / len(hh.Streams) * len(hh.Streams)); stored != want {
			return 0, fmt.Errorf("%s holds %d readings, want %d", name, stored, want)
		}
		// Start each erasure from a quiet store: compaction done and the
		// WAL checkpointed, so neither erasure pays for the loading.
		if _, err := b.h.Store.DB().ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			return 0, err
		}
		syncDisk() // and let the OS write back what the loading left dirty
		time.Sleep(200 * time.Millisecond)
		t := time.Now()
		if _, err := b.c.EraseSubject(ctx, b.ten, hh.Subject.ID); err != nil {
			return 0, err
		}
		return float64(time.Since(t).Microseconds()) / 1000, nil
	}
	if _, err := measure("warm-up", 300); err != nil {
		return res, err
	}
	// Small subjects before and after the large one; their median is the
	// reference, so disk noise of the moment does not decide the ratio.
	var small []float64
	for i := range 2 {
		ms, err := measure(fmt.Sprintf("house-small-%d", i), res.SmallReadings)
		if err != nil {
			return res, err
		}
		small = append(small, ms)
	}
	if res.EraseLargeMS, err = measure("house-large", res.LargeReadings); err != nil {
		return res, err
	}
	for i := 2; i < 5; i++ {
		ms, err := measure(fmt.Sprintf("house-small-%d", i), res.SmallReadings)
		if err != nil {
			return res, err
		}
		small = append(small, ms)
	}
	slices.Sort(small)
	res.EraseSmallMS = small[len(small)/2]
	if res.EraseSmallMS > 0 {
		res.Ratio = res.EraseLargeMS / res.EraseSmallMS
	}
	return res, nil
}
