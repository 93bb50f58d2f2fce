package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/source/mqtt"
	"github.com/custos-iot/custos/internal/source/opcua"
	"github.com/custos-iot/custos/internal/source/p1"
	"github.com/custos-iot/custos/internal/source/sim"
)

// Version is the agent's version as reported to the hub: the module
// version it was built as, or "(devel)".
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// Health is the agent's report on itself.
func (a *Agent) Health() registry.Health {
	st := a.Stats()
	h := registry.Health{
		Reported:     time.Now().UTC(),
		Version:      a.version(),
		CertExpiry:   st.CertExpiry.UTC(),
		SpoolRecords: st.Spool.Records,
		SpoolBytes:   st.Spool.Bytes,
		Dropped:      st.Spool.Dropped,
		SentBatches:  st.Uplink.Sent,
		SendFailures: st.Uplink.Failures,
	}
	for _, s := range a.sources {
		h.Sources = append(h.Sources, sourceHealth(s))
	}
	return h
}

func sourceHealth(s any) registry.SourceHealth {
	switch s := s.(type) {
	case *sim.Sim:
		return registry.SourceHealth{Name: "simulator", Status: "ok"}
	case *p1.Source:
		st := s.Stats()
		status := "ok"
		if !st.Connected {
			status = "down"
		} else if st.BadChecksum+st.Malformed > 0 {
			status = "degraded"
		}
		return registry.SourceHealth{Name: "p1", Status: status, Counters: map[string]uint64{
			"telegrams": st.Telegrams, "bad_checksum": st.BadChecksum, "malformed": st.Malformed,
			"oversize": st.Oversize, "connects": st.Connects, "failures": st.Failures,
		}}
	case *mqtt.Source:
		st := s.Stats()
		status := "ok"
		if !st.Connected {
			status = "down"
		}
		c := map[string]uint64{"messages": st.Messages, "readings": st.Readings, "connects": st.Connects, "failures": st.Failures}
		for reason, n := range st.Dropped {
			c["dropped_"+string(reason)] = n
			if n > 0 && status == "ok" {
				status = "degraded"
			}
		}
		return registry.SourceHealth{Name: "mqtt", Status: status, Counters: c}
	case *opcua.Source:
		st := s.Stats()
		status := "ok"
		if !st.Connected {
			status = "down"
		}
		c := map[string]uint64{"notifications": st.Notifications, "readings": st.Readings, "connects": st.Connects, "failures": st.Failures}
		for reason, n := range st.Dropped {
			c["dropped_"+string(reason)] = n
			if n > 0 && reason != opcua.ReasonStale && status == "ok" {
				status = "degraded"
			}
		}
		return registry.SourceHealth{Name: "opcua", Status: status, Counters: c}
	}
	return registry.SourceHealth{Name: fmt.Sprintf("%T", s), Status: "ok"}
}

// healthLoop reports the agent's health to the hub at start and then
// every HealthEvery. A failed report is retried at the next tick.
func (a *Agent) healthLoop(ctx context.Context) {
	every := time.Duration(a.cfg.HealthEvery)
	if every <= 0 {
		every = 30 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := a.reportHealth(ctx); err != nil && ctx.Err() == nil {
			a.cfg.Log.Debug("agent: health report failed; will retry", "err", err)
		} else if err == nil {
			a.trialPassed()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) reportHealth(ctx context.Context) error {
	body, err := json.Marshal(a.Health())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.device+"/v1/health", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("hub answered %s", resp.Status)
	}
	return nil
}
