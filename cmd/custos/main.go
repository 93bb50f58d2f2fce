// Command custos is the Custos hub server and the operator CLI.
//
//	custos serve            run the hub
//	custos demo             run a hub with a demo cooperative and simulated connectors
//	custos tenant|subject|site|connector|device|stream ...   manage the registry
//	custos read             read a stream's readings
//	custos app add|list|revoke   manage a tenant's OAuth2 apps
//	custos bench ingest     measure end-to-end ingest throughput
//
// main only parses flags, handles signals and calls into internal/hub.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	if err := root.ExecuteContext(ctx); err != nil {
		var ce *client.Error
		if errors.As(err, &ce) {
			fmt.Fprintln(os.Stderr, "error:", ce.Message, fmt.Sprintf("(HTTP %d, request %s)", ce.Status, ce.RequestID))
		} else {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "custos",
		Short:         "Custos: a privacy-by-design data trustee for connected devices",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	g := &globals{}
	root.AddCommand(newServe(), newDemo(), newBench(), newPlausibility(), newDatamap(), newRelease())
	// The client flags belong to the commands that talk to a running hub.
	for _, c := range append(append(operatorCommands(g), newAudit(g), userCommand(g), appCommand(g), newQuarantine(g)), consentCommands(g)...) {
		c.PersistentFlags().StringVar(&g.hub, "hub", envOr("CUSTOS_HUB", "https://127.0.0.1:8443"), "hub API URL (env CUSTOS_HUB)")
		c.PersistentFlags().StringVar(&g.ca, "ca", envOr("CUSTOS_CA", "custos-data/ca/ca.pem"), "hub CA certificate file (env CUSTOS_CA)")
		c.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON")
		root.AddCommand(c)
	}
	return root
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
