package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/agent"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/source/sim"
)

func newDemo() *cobra.Command {
	var dir, apiAddr, devAddr string
	var households int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a hub with a demo energy cooperative and simulated connectors",
		Long: `Start a hub on the embedded store with a demo energy cooperative: households, each
with its own enrolled connector streaming PV production, consumption and heat-pump power
every second over mutual TLS. Prints where to look and how to log in. Every run starts
from a fresh demo directory. Ctrl-C stops everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), dir, apiAddr, devAddr, households)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "custos-demo", "demo directory (deleted and recreated on every run)")
	cmd.Flags().StringVar(&apiAddr, "api-addr", "127.0.0.1:8443", "operator API address (a free port is taken if busy)")
	cmd.Flags().StringVar(&devAddr, "device-addr", "127.0.0.1:8444", "device endpoint address (a free port is taken if busy)")
	cmd.Flags().IntVar(&households, "households", 3, "number of simulated households")
	return cmd
}

// freeOr returns addr if it can be bound, else a free port on its host.
func freeOr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return addr
	}
	host, _, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(host, "0")
}

func runDemo(ctx context.Context, dir, apiAddr, devAddr string, households int) error {
	if households < 1 || households > 100 {
		return fmt.Errorf("--households must be between 1 and 100")
	}
	if _, err := os.Stat(filepath.Join(dir, "hub")); err == nil {
		fmt.Printf("Removing the previous demo in %s\n", dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	logFile, err := createLog(dir)
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, nil))

	h, err := hub.New(ctx, hub.Config{
		DataDir: filepath.Join(dir, "hub"), APIAddr: freeOr(apiAddr), DeviceAddr: freeOr(devAddr), Log: log,
	})
	if err != nil {
		return err
	}
	defer h.Close()
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan error, 1)
	go func() { hubDone <- h.Run(hubCtx) }()
	defer func() {
		stopHub()
		<-hubDone
	}()

	c, err := client.NewFromFile(h.APIURL(), h.InitialToken, h.CAFile())
	if err != nil {
		return err
	}
	ten, err := c.CreateTenant(ctx, "Demo Energy Cooperative")
	if err != nil {
		return err
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		return err
	}
	members := []string{"Ada", "Bram", "Chloé", "Dries", "Elif", "Femke"}
	var hs []client.Household
	for i := range households {
		member := fmt.Sprintf("%s (demo member %d)", members[i%len(members)], i+1)
		hh, err := c.AddHousehold(ctx, ten.ID, fmt.Sprintf("house-%d", i+1), member)
		if err != nil {
			return err
		}
		hs = append(hs, hh)
	}

	agentCtx, stopAgents := context.WithCancel(context.Background())
	agentDone := make(chan error, len(hs))
	for i, hh := range hs {
		a, err := agent.New(ctx, agent.Config{
			Hub:        h.APIURL(),
			StateDir:   filepath.Join(dir, "agents", hh.Site.Name),
			EnrolToken: hh.Token,
			Batch:      agent.BatchConfig{MaxDelay: sim.Duration(2 * time.Second)},
			Simulators: []sim.Config{{Household: hh.Site.Name, Seed: uint64(i + 1)}},
			Log:        log,
		})
		if err != nil {
			stopAgents()
			return err
		}
		defer a.Close()
		go func() { agentDone <- a.Run(agentCtx) }()
	}

	abs, _ := filepath.Abs(h.CAFile())
	auditPub, _ := filepath.Abs(filepath.Join(dir, "hub", "audit", "log.pub"))
	st := hs[0].Streams[1] // house-1 consumption
	fmt.Printf(`
Custos demo is running.

  Operator API      %s   (HTTPS; CA certificate %s)
  Device endpoint   %s   (mutual TLS 1.3; %d simulated connectors enrolled and streaming)
  Operator token    %s   (shown once; stored only as a hash)
  Tenant            %s   (%s)
  Logs              %s

Use the CLI from this checkout:

  export CUSTOS_HUB=%s CUSTOS_CA=%s CUSTOS_TOKEN=%s CUSTOS_TENANT=%s
  go run ./cmd/custos stream list
  go run ./cmd/custos connector list

Read live data (house-1 consumption, last minute; add &resolution=15m for aggregates).
Reads name their purpose; the demo granted this token raw access for "monitoring"
(see: go run ./cmd/custos grant list):

  curl -s --cacert %s -H "Authorization: Bearer %s" "%s/v1/tenants/%s/streams/%s/readings?since=1m&purpose=monitoring"

Every read above lands in the tamper-evident audit log; check it offline:

  go run ./cmd/custos audit export --out audit.bundle
  go run ./cmd/custos audit verify --bundle audit.bundle --key @%s

Press Ctrl-C to stop.
`, h.APIURL(), abs, h.DeviceURL(), len(hs), h.InitialToken, ten.ID, ten.Name, logFile.Name(),
		h.APIURL(), abs, h.InitialToken, ten.ID,
		abs, h.InitialToken, h.APIURL(), ten.ID, st.ID, auditPub)

	<-ctx.Done()
	fmt.Println("\nStopping: flushing connectors, then the hub.")
	stopAgents()
	for range hs {
		if err := <-agentDone; err != nil {
			fmt.Fprintln(os.Stderr, "agent:", err)
		}
	}
	return nil
}

func createLog(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(dir, "demo.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
}
