package hub_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/testenv"
)

// TestReplicasShareOneAuditLog runs three hub replicas on one PostgreSQL
// schema. They write concurrently; there is still exactly one consistent
// log: every request's entry is in it once, every replica's checkpoint is a
// prefix of the same tree, and the export verifies offline.
func TestReplicasShareOneAuditLog(t *testing.T) {
	hubs, clients := startReplicas(t, 3)
	h0 := hubs[0]
	ctx := context.Background()
	before, err := h0.Audit.Sign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const per = 40
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			for j := range per {
				if _, err := c.CreateTenant(ctx, fmt.Sprintf("Coop %d-%d", i, j)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	v, err := audit.NewVerifier(h0.AuditKey)
	if err != nil {
		t.Fatal(err)
	}
	cp0, _, err := audit.VerifyCheckpoint(before, v, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []uint64
	for i, h := range hubs {
		cpn, err := h.Audit.Sign(ctx)
		if err != nil {
			t.Fatalf("replica %d: sign: %v", i, err)
		}
		cp, _, err := audit.VerifyCheckpoint(cpn, v, nil, 0)
		if err != nil {
			t.Fatalf("replica %d: checkpoint: %v", i, err)
		}
		if cp.Size < cp0.Size+3*per {
			t.Errorf("replica %d sees %d entries, want at least %d", i, cp.Size, cp0.Size+3*per)
		}
		// Consistent with the checkpoint before the writes: one tree.
		p, err := hubs[0].Audit.ConsistencyProof(ctx, cp0.Size, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := audit.VerifyConsistency(cp0.Size, cp.Size, p, cp0.Hash, cp.Hash); err != nil {
			t.Errorf("replica %d's checkpoint is not an extension of the log: %v", i, err)
		}
		sizes = append(sizes, cp.Size)
	}
	// The export verifies offline, and holds each tenant creation once.
	var bundle bytes.Buffer
	if _, err := clients[1].Raw(ctx, "GET", "/v1/audit/export", &bundle); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(bytes.NewReader(bundle.Bytes()), nil, h0.AuditKey, nil, 0)
	if err != nil {
		t.Fatalf("export from a replica: %v", err)
	}
	b, err := audit.ReadBundle(bytes.NewReader(bundle.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	creates := 0
	requests := map[audit.RequestID]int{}
	for _, leaf := range b.Leaves {
		e, err := audit.ParseEntry(leaf)
		if err != nil {
			t.Fatal(err)
		}
		if e.Action == "POST /v1/tenants" {
			creates++
			requests[e.Request]++
		}
	}
	if creates != 3*per {
		t.Errorf("%d tenant creations recorded, want %d", creates, 3*per)
	}
	for id, n := range requests {
		if n != 1 {
			t.Errorf("request %s recorded %d times", id, n)
		}
	}
	t.Logf("one log of %d entries across 3 replicas (checkpoints %v)", rep.Entries, sizes)
}

// startReplicas starts n hubs on one PostgreSQL schema, sharing the CA, the
// KEK and the audit key as docs/deployment.md says replicas must. The
// clients all use the first hub's initial operator token.
func startReplicas(t *testing.T, n int) ([]*hub.Hub, []*client.Client) {
	t.Helper()
	dsn, schema := testenv.Postgres(t)
	t.Cleanup(func() { dropSchema(dsn, schema+"_keys") })
	first := t.TempDir()
	h0, c0 := startHub(t, hub.Config{DataDir: first, PostgresDSN: dsn, PostgresSchema: schema})
	hubs, clients := []*hub.Hub{h0}, []*client.Client{c0}
	for range n - 1 {
		dir := t.TempDir()
		for _, f := range []string{"ca/ca.key", "ca/ca.pem", "keys/kek.json", "audit/log.key", "audit/log.pub"} {
			b, err := os.ReadFile(filepath.Join(first, f))
			if err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o700)
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		h, _ := startHub(t, hub.Config{DataDir: dir, PostgresDSN: dsn, PostgresSchema: schema})
		c, err := client.NewFromFile(h.APIURL(), h0.InitialToken, h.CAFile())
		if err != nil {
			t.Fatal(err)
		}
		hubs, clients = append(hubs, h), append(clients, c)
	}
	return hubs, clients
}
