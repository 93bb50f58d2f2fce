// Package hubtest starts real hubs for tests: on loopback only, with a
// fresh data directory and quiet logs, stopped and closed when the test
// ends. It is a test helper; production code never imports it.
package hubtest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
)

// Start runs a hub with cfg and returns it with an operator client. Unset
// DataDir, addresses and Log get test defaults (a temporary directory,
// 127.0.0.1 on free ports, warnings and errors to the test's log).
func Start(t testing.TB, cfg hub.Config) (*hub.Hub, *client.Client) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.APIAddr == "" {
		cfg.APIAddr = "127.0.0.1:0"
	}
	if cfg.DeviceAddr == "" {
		cfg.DeviceAddr = "127.0.0.1:0"
	}
	if cfg.Log == nil {
		// Warnings and errors go to the test's log, so a failing request's
		// cause (named by its request ID) is printed with the failure.
		cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	h, err := hub.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub.Run: %v", err)
		}
		h.Close()
	})
	c, err := client.NewFromFile(h.APIURL(), h.InitialToken, h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	return h, c
}

// testWriter writes log lines to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
