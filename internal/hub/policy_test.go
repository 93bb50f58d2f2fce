package hub_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/agent"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/collection"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/ingest"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/source"
	"github.com/custos-iot/custos/internal/source/sim"
	"github.com/custos-iot/custos/internal/uplink"
	"github.com/custos-iot/custos/internal/wire"
)

// TestEdgePolicy: a real agent replays a simulated household (3 hours of
// simulated time at 1 Hz, about 1,000 ticks a second) to a real hub. Once
// raw readings arrive, the operator sets the meter to 15-minute averages
// and the PV stream to "do not send". The agent picks the policy up at its
// next refresh; from then on the meter sends exactly one reading per
// 15-minute bucket, the mean of that bucket's readings, and the PV stream
// nothing. The heat pump, untouched, arrives raw and complete. Then an
// agent ignoring the policy (a raw batch posted with its credentials)
// is refused by the hub after the grace period, and the refusal counted.
func TestEdgePolicy(t *testing.T) {
	const ticks = 3 * 3600
	// PlausibilityOff: the mean of the switch bucket arrives at the
	// bucket's start, before raw readings already stored, which the
	// plausibility checks quarantine as out of order (see
	// docs/plausibility.md, known interactions).
	h, c := startHub(t, hub.Config{PolicyGrace: time.Second, PlausibilityOff: true})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Policy Coop")
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
	byKey := map[string]registry.Stream{}
	for _, s := range hh.Streams {
		byKey[s.Key] = s
	}
	pv, meter, heat := byKey["house-1-pv/power_w"], byKey["house-1-meter/import_power_w"], byKey["house-1-heatpump/power_w"]
	simCfg := sim.Config{Household: "house-1", Start: t0, Ticks: ticks, Seed: 7}
	want := simulate(t, simCfg)

	dir := filepath.Join(t.TempDir(), "agent")
	run := simCfg
	run.Rate = 1000
	a, stop := startPolicyAgent(t, h, dir, hh.Token, 3*time.Second, run)
	defer stop()

	// Raw readings arrive under the default policy.
	poll(t, "raw readings of the meter", func() bool { return len(readings(t, c, ten.ID, meter.ID)) > 0 })
	before := a.Stats().Policy
	q15 := collection.Policy{Send: true, Finest: rollup.Min15}
	if _, err := c.SetCollectionPolicy(ctx, ten.ID, meter.ID, q15, "no consent to real-time monitoring"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetCollectionPolicy(ctx, ten.ID, pv.ID, collection.Policy{Send: false, Finest: rollup.Raw}, "consent withdrawn"); err != nil {
		t.Fatal(err)
	}
	// Within one refresh the agent applies it.
	poll(t, "the agent to apply the new policy", func() bool {
		st := a.Stats()
		return st.Policy != before && st.Policy != "" && st.Collection.Off > 0
	})
	// The replay ends; the last bucket is sent once the meter is idle.
	end := t0.UnixMilli() + ticks*1000
	poll(t, "the heat pump's last reading and the meter's last bucket", func() bool {
		hp, m := readings(t, c, ten.ID, heat.ID), readings(t, c, ten.ID, meter.ID)
		return len(hp) == ticks && len(m) > 0 && m[len(m)-1].Time == rollup.Min15.Bucket(end-1)
	})

	// The heat pump: raw, complete, exactly once.
	checkExactlyOnce(t, c, ten.ID, heat, ticks)

	// The meter: raw up to the switch, then one mean per 15-minute bucket.
	m := readings(t, c, ten.ID, meter.ID)
	lastRaw := -1
	for i, r := range m {
		if rollup.Min15.Bucket(r.Time) != r.Time {
			lastRaw = i
		}
	}
	if lastRaw < 0 {
		t.Fatal("no raw meter readings")
	}
	// Raw readings from t0 to the switch, one a second. The bucket of the
	// switch also holds one coarse reading (the mean of its readings from
	// the switch on), at its start.
	switchBucket := rollup.Min15.Bucket(m[lastRaw].Time)
	next, extra := t0.UnixMilli(), 0
	for _, r := range m[:lastRaw+1] {
		if r.Time == switchBucket && next > switchBucket && extra == 0 {
			extra++
			continue
		}
		if r.Time != next {
			t.Fatalf("raw meter reading at %d, want %d", r.Time-t0.UnixMilli(), next-t0.UnixMilli())
		}
		next += 1000
	}
	if extra != 1 {
		t.Errorf("the bucket of the switch has %d coarse readings, want 1", extra)
	}
	coarse := m[lastRaw+1:]
	if len(coarse) < 6 {
		t.Fatalf("only %d coarse meter readings after the switch at %v", len(coarse), time.UnixMilli(m[lastRaw].Time).UTC())
	}
	for i, r := range coarse {
		if r.Time != switchBucket+int64(i+1)*15*60_000 {
			t.Fatalf("coarse reading %d at %v: not one per 15-minute bucket", i, time.UnixMilli(r.Time).UTC())
		}
		var agg rollup.Agg
		for _, w := range want[meter.Key] {
			if rollup.Min15.Bucket(w.Time) == r.Time {
				agg.Add(w)
			}
		}
		if agg.Count != 900 || r.Value != agg.Mean() {
			t.Errorf("bucket %v: got %v, want the mean of %d readings %v", time.UnixMilli(r.Time).UTC(), r.Value, agg.Count, agg.Mean())
		}
	}

	// PV: raw and contiguous up to the switch, nothing after; every tick
	// after it was dropped at the edge.
	p := readings(t, c, ten.ID, pv.ID)
	for i, r := range p {
		if r.Time != t0.UnixMilli()+int64(i)*1000 {
			t.Fatalf("pv reading %d at %d: not contiguous raw", i, r.Time)
		}
	}
	if st := a.Stats(); len(p)+int(st.Collection.Off) != ticks {
		t.Errorf("pv: %d stored + %d dropped at the edge, want %d", len(p), st.Collection.Off, ticks)
	}

	// An agent ignoring the policy: raw meter readings timed after the
	// change plus the grace period are refused and counted; an aligned
	// reading in the same batch is stored.
	now := rollup.Min15.Bucket(time.Now().Add(time.Hour).UnixMilli())
	res := postRaw(t, dir, wire.Series{Key: meter.Key, Readings: []wire.Reading{{Time: now, Value: 1}, {Time: now + 1000, Value: 2}, {Time: now + 2000, Value: 3}}},
		wire.Series{Key: pv.Key, Readings: []wire.Reading{{Time: now, Value: 4}}})
	if res.Readings != 1 || len(res.Refused) != 2 {
		t.Fatalf("hub answered %+v, want 1 reading stored and 2 series refused", res)
	}
	for _, r := range res.Refused {
		if r.Key == meter.Key && (r.Readings != 2 || r.Reason != collection.RefusedFiner) || r.Key == pv.Key && (r.Readings != 1 || r.Reason != collection.RefusedOff) {
			t.Errorf("refusal %+v", r)
		}
	}
	if rs, _ := c.AllReadings(ctx, ten.ID, meter.ID, now, now+3000); len(rs) != 1 || rs[0].Value != 1 {
		t.Errorf("stored after the refusal: %v", rs)
	}
	rec, err := c.CollectionPolicy(ctx, ten.ID, meter.ID)
	if err != nil || rec.Refused != 2 || rec.Version != 1 || rec.Policy != q15 {
		t.Errorf("meter policy after the refusal: %+v %v", rec, err)
	}
}

// simulate returns every reading the simulator produces for cfg, by key.
func simulate(t *testing.T, cfg sim.Config) map[string][]wire.Reading {
	t.Helper()
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	out := map[string][]wire.Reading{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := int64(0)
	if err := s.Run(ctx, nil, func(rs []source.Reading) error {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range rs {
			out[r.Key] = append(out[r.Key], r.Reading)
		}
		if n++; n == cfg.Ticks {
			cancel() // the simulator waits for the end once done
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func readings(t *testing.T, c *client.Client, ten registry.TenantID, s registry.StreamID) []series.Reading {
	t.Helper()
	rs, err := c.AllReadings(context.Background(), ten, s, 0, 1<<50)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// poll waits for cond, failing after a generous deadline.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// postRaw posts one batch with an enrolled agent's credentials, as an
// agent that ignores its policy would.
func postRaw(t *testing.T, dir string, ss ...wire.Series) ingest.Result {
	t.Helper()
	creds, err := uplink.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	id, err := wire.NewBatchID(time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	body, err := wire.AppendBatch(nil, &wire.Batch{ID: id, Series: ss})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: creds.TLSConfig("")}, Timeout: 30 * time.Second}
	resp, err := hc.Post(creds.DeviceURL+"/v1/batches", uplink.BatchContentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res ingest.Result
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("hub answered %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestEdgePolicyRestart: the meter is on 15-minute averages from the
// start; the agent is stopped mid-bucket (several times) and started again
// on the same state directory. Every bucket still arrives exactly once,
// with the exact mean of its 900 readings.
func TestEdgePolicyRestart(t *testing.T) {
	const ticks = 2 * 3600
	h, c := startHub(t, hub.Config{})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Restart Coop")
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
	meter := hh.Streams[1]
	if _, err := c.SetCollectionPolicy(ctx, ten.ID, meter.ID, collection.Policy{Send: true, Finest: rollup.Min15}, "test"); err != nil {
		t.Fatal(err)
	}
	simCfg := sim.Config{Household: "house-1", Start: t0, Ticks: ticks, Seed: 3}
	want := simulate(t, simCfg)
	run := simCfg
	run.Rate = 500
	dir := filepath.Join(t.TempDir(), "agent")
	start := func() (*agent.Agent, func()) { return startPolicyAgent(t, h, dir, hh.Token, 3*time.Second, run) }
	// Start, wait for the policy and some coarse readings, stop mid-bucket; twice.
	for round := 1; round <= 2; round++ {
		a, stop := start()
		poll(t, "coarse readings", func() bool {
			return a.Stats().Policy != "" && len(readings(t, c, ten.ID, meter.ID)) >= 2*round
		})
		stop()
	}
	_, stop := start()
	defer stop()
	end := t0.UnixMilli() + ticks*1000
	poll(t, "the last bucket", func() bool {
		m := readings(t, c, ten.ID, meter.ID)
		return len(m) > 0 && m[len(m)-1].Time == rollup.Min15.Bucket(end-1)
	})
	m := readings(t, c, ten.ID, meter.ID)
	if len(m) != ticks/900 {
		t.Errorf("%d meter readings, want %d (one per bucket)", len(m), ticks/900)
	}
	for i, r := range m {
		var agg rollup.Agg
		for _, w := range want[meter.Key] {
			if rollup.Min15.Bucket(w.Time) == r.Time {
				agg.Add(w)
			}
		}
		if r.Time != t0.UnixMilli()+int64(i)*15*60_000 || agg.Count != 900 || r.Value != agg.Mean() {
			t.Errorf("reading %d at %v = %v, want the mean %v of %d readings", i, time.UnixMilli(r.Time).UTC(), r.Value, agg.Mean(), agg.Count)
		}
	}
}

// startPolicyAgent runs an agent on the simulator run, with a fast
// policy refresh and the given idle time for a stream's last bucket. stop
// ends it, checks what Run returned and closes it.
func startPolicyAgent(t *testing.T, h *hub.Hub, dir, token string, bucketIdle time.Duration, run sim.Config) (*agent.Agent, func()) {
	t.Helper()
	a, err := agent.New(context.Background(), agent.Config{
		Hub: h.APIURL(), StateDir: dir, EnrolToken: token,
		Batch:       agent.BatchConfig{MaxDelay: sim.Duration(100 * time.Millisecond)},
		PolicyEvery: sim.Duration(100 * time.Millisecond),
		BucketIdle:  sim.Duration(bucketIdle),
		Simulators:  []sim.Config{run},
		Log:         quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	return a, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent.Run: %v", err)
		}
		a.Close()
	}
}
