package hub_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/agent"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/source/sim"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startHub starts a hub on loopback with its own data directory.
func startHub(t testing.TB, cfg hub.Config) (*hub.Hub, *client.Client) {
	t.Helper()
	return hubtest.Start(t, cfg)
}

var t0 = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// TestEndToEnd runs a hub and three agents over real mTLS on loopback and
// reads every simulated reading back exactly once.
func TestEndToEnd(t *testing.T) {
	const ticks = 3000
	h, c := startHub(t, hub.Config{})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Sunny Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	var households []client.Household
	for i := range 3 {
		hh, err := c.AddHousehold(ctx, ten.ID, fmt.Sprintf("house-%d", i+1), fmt.Sprintf("Member %d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		households = append(households, hh)
	}
	actx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 3)
	for i, hh := range households {
		a, err := agent.New(ctx, agent.Config{
			Hub:        h.APIURL(),
			StateDir:   filepath.Join(t.TempDir(), hh.Site.Name),
			EnrolToken: hh.Token,
			Batch:      agent.BatchConfig{MaxReadings: 600},
			Simulators: []sim.Config{{Household: hh.Site.Name, Start: t0, Ticks: ticks, Seed: uint64(i + 1)}},
			Log:        quiet(),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		go func() { done <- a.Run(actx) }()
	}
	waitStored(t, c, ten.ID, households, ticks)
	stop()
	for range households {
		if err := <-done; err != nil {
			t.Errorf("agent.Run: %v", err)
		}
	}
	for _, hh := range households {
		for _, st := range hh.Streams {
			checkExactlyOnce(t, c, ten.ID, st, ticks)
		}
	}
	// Each agent reported its health: operators see version, certificate
	// expiry, spool depth and sources.
	cs, err := c.Connectors(ctx, ten.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, cn := range cs {
		h := cn.Health
		if h == nil || h.Version == "" || h.CertExpiry.IsZero() || len(h.Sources) != 1 || h.Sources[0].Status != "ok" {
			t.Errorf("connector %s health: %+v", cn.Name, h)
		}
	}
}

// waitStored polls until every stream holds want readings (or fails after a minute).
func waitStored(t *testing.T, c *client.Client, ten registry.TenantID, hs []client.Household, want int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		short := ""
		for _, hh := range hs {
			for _, st := range hh.Streams {
				rs, err := c.AllReadings(context.Background(), ten, st.ID, 0, 1<<50)
				if err != nil {
					t.Fatal(err)
				}
				if len(rs) < want {
					short = fmt.Sprintf("%s has %d of %d readings", st.Key, len(rs), want)
				}
			}
		}
		if short == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", short)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkExactlyOnce checks a stream holds exactly the timestamps t0, t0+1s,
// ..., each once.
func checkExactlyOnce(t *testing.T, c *client.Client, ten registry.TenantID, st registry.Stream, ticks int) {
	t.Helper()
	rs, err := c.AllReadings(context.Background(), ten, st.ID, 0, 1<<50)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != ticks {
		t.Errorf("%s: %d readings, want %d", st.Key, len(rs), ticks)
	}
	for i, r := range rs {
		if want := t0.UnixMilli() + int64(i)*1000; r.Time != want {
			t.Fatalf("%s: reading %d at %d, want %d (lost or duplicated)", st.Key, i, r.Time, want)
		}
	}
}

// TestRenewal: with short-lived certificates the agent renews at about two
// thirds of the lifetime, using its current certificate, and keeps
// streaming across renewals.
func TestRenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for several certificate lifetimes")
	}
	h, c := startHub(t, hub.Config{CertLifetime: 3 * time.Second})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Renewing Coop")
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
	a, err := agent.New(ctx, agent.Config{
		Hub: h.APIURL(), StateDir: t.TempDir(), EnrolToken: hh.Token,
		Batch:      agent.BatchConfig{MaxDelay: sim.Duration(200 * time.Millisecond)},
		Simulators: []sim.Config{{Household: "house-1", Interval: sim.Duration(100 * time.Millisecond)}},
		Log:        quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	actx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	defer func() {
		stop()
		<-done
	}()

	expiry := func() time.Time {
		cs, err := c.Connectors(ctx, ten.ID)
		if err != nil || len(cs) != 1 {
			t.Fatalf("connectors: %v %v", cs, err)
		}
		return cs[0].CertExpiry
	}
	first := expiry()
	renewals := 0
	last := first
	deadline := time.Now().Add(15 * time.Second)
	for renewals < 2 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		if e := expiry(); e.After(last) {
			renewals++
			last = e
		}
	}
	if renewals < 2 {
		t.Fatalf("certificate renewed %d times in 15 s with a 3 s lifetime, want at least 2", renewals)
	}
	// Still streaming after the renewals: readings newer than the last renewal arrive.
	since := time.Now().UnixMilli()
	deadline = time.Now().Add(10 * time.Second)
	for {
		rs, err := c.AllReadings(ctx, ten.ID, hh.Streams[1].ID, since, 1<<50)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no readings after the certificate renewals")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st := a.Stats(); st.CertExpiry.Before(last.Add(-time.Second)) {
		t.Errorf("agent holds a certificate expiring %v, hub issued one expiring %v", st.CertExpiry, last)
	}
}

// TestNewFailsCleanly: a hub that cannot start says why (no panic) and
// releases what it opened.
func TestNewFailsCleanly(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, cfg := range []hub.Config{
		{APIAddr: busy.Addr().String(), DeviceAddr: "127.0.0.1:0"},
		{APIAddr: "127.0.0.1:0", DeviceAddr: busy.Addr().String()},
		{APIAddr: "127.0.0.1:0", DeviceAddr: "127.0.0.1:0", PostgresDSN: "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"},
	} {
		cfg.DataDir, cfg.Log = t.TempDir(), quiet()
		if h, err := hub.New(context.Background(), cfg); err == nil {
			h.Close()
			t.Errorf("hub.New(%+v) succeeded", cfg)
		}
	}
}
