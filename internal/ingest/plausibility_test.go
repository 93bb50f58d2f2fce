package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/collection"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/wire"
)

// fakeStore is an in-memory Store and PlausibilityStore.
type fakeStore struct {
	mu      sync.Mutex
	streams []registry.Stream
	devices []registry.Device
	seen    map[wire.BatchID]bool
	stored  []series.Batch
	fail    int // fail the next fail commits
	policy  []byte
	state   map[registry.StreamID]series.PlausibilityState
}

func newFakeStore(streams int) *fakeStore {
	f := &fakeStore{seen: map[wire.BatchID]bool{}, state: map[registry.StreamID]series.PlausibilityState{}}
	for i := range streams {
		f.streams = append(f.streams, registry.Stream{ID: registry.StreamID(fmt.Sprintf("str_%d", i)), Tenant: "ten_a", Subject: "sub_a",
			Metric: "power_w", Key: fmt.Sprintf("meter/power_%d_w", i), Category: "energy.consumption", Unit: "W"})
	}
	return f
}

func (f *fakeStore) WriteBatches(_ context.Context, _ int64, bs []series.Batch) ([]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		return nil, errors.New("disk on fire")
	}
	dup := make([]bool, len(bs))
	for i, b := range bs {
		dup[i] = f.seen[b.ID]
		if !dup[i] {
			f.seen[b.ID] = true
			f.stored = append(f.stored, b)
		}
	}
	return dup, nil
}
func (f *fakeStore) ConnectorStreams(context.Context, registry.ConnectorID) ([]registry.Stream, error) {
	return f.streams, nil
}
func (f *fakeStore) ConnectorDevices(context.Context, registry.ConnectorID) ([]registry.Device, error) {
	return f.devices, nil
}
func (f *fakeStore) Connector(_ context.Context, t registry.TenantID, c registry.ConnectorID) (registry.Connector, error) {
	return registry.Connector{ID: c, Tenant: t, Status: registry.ConnectorActive}, nil
}
func (f *fakeStore) TouchConnector(context.Context, registry.ConnectorID, int64) error { return nil }
func (f *fakeStore) ConnectorCollectionPolicies(context.Context, registry.ConnectorID) (map[registry.StreamID]collection.Record, error) {
	return nil, nil
}
func (f *fakeStore) CountPolicyRefusals(context.Context, registry.StreamID, int64, int64) error {
	return nil
}
func (f *fakeStore) PlausibilityPolicy(context.Context, registry.TenantID) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.policy, nil
}
func (f *fakeStore) LoadPlausibilityState(_ context.Context, _ registry.TenantID, st registry.StreamID) (series.PlausibilityState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.state[st]
	if !ok {
		return v, errs.E(errs.NotFound, "no state")
	}
	return v, nil
}
func (f *fakeStore) SavePlausibilityStates(_ context.Context, vs []series.PlausibilityState, _ time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range vs {
		f.state[v.Stream] = v
	}
	return nil
}

var start = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

// value is a plausible load that never repeats a window (a hash of t).
func value(t int64) float64 {
	h := uint64(t)*0x9e3779b97f4a7c15 + 1
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 32
	return 400 + float64(h%1000)/10
}

// body encodes one batch of n readings every step ms from first on each
// of the streams, with id's first byte set to seq.
func body(t testing.TB, f *fakeStore, seq byte, first, step int64, n int, edit func(i int, r *wire.Reading)) []byte {
	b := &wire.Batch{ID: wire.BatchID{seq, 1}}
	for _, st := range f.streams {
		s := wire.Series{Key: st.Key}
		for i := range n {
			r := wire.Reading{Time: first + int64(i)*step, Value: value(first + int64(i)*step)}
			if edit != nil {
				edit(i, &r)
			}
			s.Readings = append(s.Readings, r)
		}
		b.Series = append(b.Series, s)
	}
	out, err := wire.AppendBatch(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newService(t testing.TB, f *fakeStore) (*Service, func()) {
	d, err := plausibility.New(plausibility.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Store: f, Sealer: series.Plain{}, Detector: d, Plausibility: f, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	return s, func() { cancel(); <-done }
}

var who = Identity{Tenant: "ten_a", Connector: "con_a"}

func TestQuarantineAtIngest(t *testing.T) {
	f := newFakeStore(1)
	s, stop := newService(t, f)
	defer stop()
	ctx := context.Background()
	spike := body(t, f, 1, start, 300_000, 60, func(i int, r *wire.Reading) {
		if i == 30 {
			r.Value = 1e6
		}
	})
	res, err := s.Accept(ctx, who, spike)
	if err != nil || res.Readings != 60 || res.Quarantined != 1 {
		t.Fatalf("accept: %+v %v", res, err)
	}
	b := f.stored[0]
	if len(b.Chunks) != 1 || b.Chunks[0].Count != 59 || len(b.Quarantine) != 1 || b.Quarantine[0].Count != 1 {
		t.Fatalf("stored: %d chunks, %+v", len(b.Chunks), b.Quarantine)
	}
	rs, err := wire.DecodeBlock(b.Quarantine[0].Data, nil)
	if err != nil || len(rs) != 1 || rs[0].Value != 1e6 || b.Quarantine[0].MinTime != start+30*300_000 {
		t.Fatalf("quarantined block: %+v %v", rs, err)
	}
	kept, _ := wire.DecodeBlock(b.Chunks[0].Data, nil)
	for _, r := range kept {
		if r.Value == 1e6 {
			t.Fatal("the spike was stored in the series")
		}
	}
	// The replay is a duplicate: nothing more stored or quarantined.
	if res, err := s.Accept(ctx, who, spike); err != nil || res.Duplicates != 1 || res.Quarantined != 0 || len(f.stored) != 1 {
		t.Fatalf("replay: %+v %v", res, err)
	}
}

// TestRetryAfterFailedCommit: a batch whose commit failed is judged afresh
// when the connector resends it, not as a duplicate of itself.
func TestRetryAfterFailedCommit(t *testing.T) {
	f := newFakeStore(2)
	s, stop := newService(t, f)
	defer stop()
	ctx := context.Background()
	if _, err := s.Accept(ctx, who, body(t, f, 1, start, 300_000, 20, nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.SavePlausibilityState(ctx); err != nil {
		t.Fatal(err)
	}
	next := body(t, f, 2, start+20*300_000, 300_000, 20, nil)
	f.fail = 1
	if _, err := s.Accept(ctx, who, next); !errs.Is(errs.Unavailable, err) {
		t.Fatalf("failed commit: %v", err)
	}
	res, err := s.Accept(ctx, who, next)
	if err != nil || res.Quarantined != 0 || res.Readings != 40 {
		t.Fatalf("retry: %+v %v", res, err)
	}
}

// TestStateSurvivesRestart: learned state is saved and a new service (a
// restarted hub, or another replica) picks it up: a replay of stored
// readings under a fresh batch ID is caught after the restart too.
func TestStateSurvivesRestart(t *testing.T) {
	f := newFakeStore(1)
	s, stop := newService(t, f)
	ctx := context.Background()
	if _, err := s.Accept(ctx, who, body(t, f, 1, start, 300_000, 50, nil)); err != nil {
		t.Fatal(err)
	}
	stop() // saves on the way out
	if len(f.state) != 1 {
		t.Fatalf("%d states saved, want 1", len(f.state))
	}
	s2, stop2 := newService(t, f)
	defer stop2()
	res, err := s2.Accept(ctx, who, body(t, f, 2, start, 300_000, 50, nil))
	if err != nil || res.Quarantined != 50 {
		t.Fatalf("replay under a new ID after restart: %+v %v", res, err)
	}
	// A corrupt saved state is dropped: the stream learns afresh.
	f.state["str_0"] = series.PlausibilityState{Tenant: "ten_a", Subject: "sub_a", Stream: "str_0", Data: []byte("garbage")}
	s3, stop3 := newService(t, f)
	defer stop3()
	if res, err := s3.Accept(ctx, who, body(t, f, 3, start+100*300_000, 300_000, 5, nil)); err != nil || res.Quarantined != 0 {
		t.Fatalf("after a corrupt state: %+v %v", res, err)
	}
}

// TestPolicyAtIngest: a tenant's policy applies; a disabled tenant stores
// everything; unknown units are not checked.
func TestPolicyAtIngest(t *testing.T) {
	f := newFakeStore(1)
	f.policy = []byte(`{"max_power_w": 1000}`)
	s, stop := newService(t, f)
	defer stop()
	ctx := context.Background()
	res, err := s.Accept(ctx, who, body(t, f, 1, start, 300_000, 4, func(i int, r *wire.Reading) {
		if i == 3 {
			r.Value = 1200
		}
	}))
	if err != nil || res.Quarantined != 1 {
		t.Fatalf("1 kW connection: %+v %v", res, err)
	}
	if err := s.SetPolicy("ten_a", plausibility.Policy{Disabled: true}); err != nil {
		t.Fatal(err)
	}
	res, err = s.Accept(ctx, who, body(t, f, 2, start, 300_000, 4, func(_ int, r *wire.Reading) { r.Value = -1e9 }))
	if err != nil || res.Quarantined != 0 {
		t.Fatalf("disabled: %+v %v", res, err)
	}
	for _, c := range []struct {
		unit, cat string
		want      plausibility.Kind
		ok        bool
	}{
		{"W", "energy.consumption", plausibility.KindPower, true},
		{"W", "energy.charging", plausibility.KindSwitchedPower, true},
		{"Wh", "energy.consumption", plausibility.KindEnergy, true},
		{"°C", "environment", plausibility.KindTemperature, true},
		{"rpm", "machine.telemetry", 0, false},
	} {
		if k, ok := KindOf(registry.Stream{Unit: c.unit, Category: registry.Category(c.cat)}); k != c.want || ok != c.ok {
			t.Errorf("KindOf(%s, %s) = %v %v", c.unit, c.cat, k, ok)
		}
	}
}

// BenchmarkPrepare measures the ingest path up to the commit (decode,
// authorise, check, seal with Plain) for requests of 1,000 readings over 10
// streams at 1 Hz, with and without the plausibility checks.
func BenchmarkPrepare(b *testing.B) {
	for _, checks := range []bool{false, true} {
		b.Run(fmt.Sprintf("checks=%v", checks), func(b *testing.B) {
			f := newFakeStore(10)
			cfg := Config{Store: f, Sealer: series.Plain{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if checks {
				d, err := plausibility.New(plausibility.Config{})
				if err != nil {
					b.Fatal(err)
				}
				cfg.Detector, cfg.Plausibility = d, f
			}
			s := New(cfg)
			ctx := context.Background()
			const per = 100
			bodies := make([][]byte, 64)
			next := start
			for i := range bodies {
				bodies[i] = body(b, f, byte(i), next, 1000, per, nil)
				next += per * 1000
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i%len(bodies) == 0 && i > 0 {
					b.StopTimer()
					for j := range bodies {
						bodies[j] = body(b, f, byte(j), next, 1000, per, nil)
						next += per * 1000
					}
					b.StartTimer()
				}
				if _, err := s.Prepare(ctx, who, bodies[i%len(bodies)]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)*per*10/b.Elapsed().Seconds(), "readings/s")
		})
	}
}

// TestMeterIdentityAtIngest: a device registered with a meter serial must
// be reported under it. The right identity is stored; another identity, or
// none (an agent that predates meters, a swapped meter, a fake device), is
// quarantined with rule meter_identity, also on a stream whose unit the
// other rules do not cover; a device without a binding is not judged by
// it; a tenant may switch the rule off.
func TestMeterIdentityAtIngest(t *testing.T) {
	meterBatch := func(f *fakeStore, seq byte, first int64, meters []wire.Meter) []byte {
		b := &wire.Batch{ID: wire.BatchID{seq, 2}, Meters: meters}
		for _, st := range f.streams {
			s := wire.Series{Key: st.Key}
			for i := range 6 {
				tm := first + int64(i)*300_000
				s.Readings = append(s.Readings, wire.Reading{Time: tm, Value: value(tm)})
			}
			b.Series = append(b.Series, s)
		}
		out, err := wire.AppendBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		bound       string
		unit        string
		meters      []wire.Meter
		off         bool
		quarantined int
	}{
		{"matching", "E0044", "W", []wire.Meter{{Device: "meter", ID: "E0044"}}, false, 0},
		{"another meter", "E0044", "W", []wire.Meter{{Device: "meter", ID: "E9999"}}, false, 6},
		{"unreported", "E0044", "W", nil, false, 6},
		{"unreported, unchecked unit", "E0044", "V", nil, false, 6},
		{"no binding", "", "W", []wire.Meter{{Device: "meter", ID: "E9999"}}, false, 0},
		{"rule off", "E0044", "W", nil, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeStore(1)
			f.streams[0].Unit = tc.unit
			f.devices = []registry.Device{{ID: "dev_a", Tenant: "ten_a", Name: "meter", MeterSerial: tc.bound}}
			if tc.off {
				f.policy = []byte(`{"off":["meter_identity"]}`)
			}
			s, stop := newService(t, f)
			defer stop()
			res, err := s.Accept(context.Background(), who, meterBatch(f, 1, start, tc.meters))
			if err != nil || res.Readings != 6 || res.Quarantined != tc.quarantined {
				t.Fatalf("accept: %+v %v, want %d quarantined", res, err, tc.quarantined)
			}
			if tc.quarantined > 0 {
				var why []plausibility.Verdict
				json.Unmarshal(f.stored[0].Quarantine[0].Reasons, &why)
				if len(why) != 6 || !why[0].Has(plausibility.RuleMeterIdentity) {
					t.Fatalf("reasons: %+v", why)
				}
			}
		})
	}
}
