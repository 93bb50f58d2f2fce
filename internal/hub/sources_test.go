package hub_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/agent"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/source/p1"
	"github.com/custos-iot/custos/internal/source/sim"
)

// TestAgentP1 runs an agent whose source is a smart meter's P1 port behind
// a TCP bridge (a local listener replaying a real-format DSMR 5 telegram)
// and reads the meter's values back from the hub.
func TestAgentP1(t *testing.T) {
	telegram, err := os.ReadFile(filepath.Join("..", "source", "p1", "testdata", "dsmr5_3phase_gas.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.Write(telegram)
				time.Sleep(10 * time.Second)
			}()
		}
	}()

	h, c := startHub(t, hub.Config{})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "P1 Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	sub, err := c.CreateSubject(ctx, ten.ID, "Meter Owner")
	if err != nil {
		t.Fatal(err)
	}
	site, err := c.CreateSite(ctx, ten.ID, sub.ID, "home")
	if err != nil {
		t.Fatal(err)
	}
	offer, err := c.CreateConnector(ctx, ten.ID, "gw")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := c.CreateDevice(ctx, ten.ID, site.ID, offer.Connector.ID, "meter")
	if err != nil {
		t.Fatal(err)
	}
	energy, err := c.CreateStream(ctx, ten.ID, dev.ID, "import_energy_t1_wh", "energy.consumption", "Wh")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateStream(ctx, ten.ID, dev.ID, "import_power_w", "energy.consumption", "W"); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(ctx, agent.Config{
		Hub: h.APIURL(), StateDir: t.TempDir(), EnrolToken: offer.Token,
		Batch: agent.BatchConfig{MaxDelay: sim.Duration(100 * time.Millisecond)},
		P1:    []p1.Config{{Device: "meter", TCP: ln.Addr().String(), Metrics: []p1.Metric{"import_energy_t1_wh", "import_power_w"}}},
		Log:   quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	actx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	defer func() { stop(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rs, err := c.AllReadings(ctx, ten.ID, energy.ID, 0, 1<<50)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) > 0 {
			if rs[0].Value != 1234567 || rs[0].Time != time.Date(2023, 11, 26, 11, 0, 0, 0, time.UTC).UnixMilli() {
				t.Fatalf("meter reading %+v, want 1234567 Wh at the telegram's time", rs[0])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no P1 reading arrived")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
