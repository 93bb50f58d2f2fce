package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/hubtest"
	"github.com/custos-iot/custos/internal/uplink"
	"github.com/custos-iot/custos/internal/wire"
)

// TestRectifyCLI: `custos rights rectify` submits a CSV file of 21,000
// corrections in parts with a progress bar and applies it; a JSON file
// with a delete range opens a request that `custos rights fulfil` applies;
// a bad file is refused naming its line, and no request is opened.
func TestRectifyCLI(t *testing.T) {
	dir := t.TempDir()
	h, c := hubtest.Start(t, hub.Config{PlausibilityOff: true})
	t.Setenv("CUSTOS_HUB", h.APIURL())
	t.Setenv("CUSTOS_CA", h.CAFile())
	t.Setenv("CUSTOS_TOKEN", h.InitialToken)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Rectify CLI Coop")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CUSTOS_TENANT", string(ten.ID))
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	hh, err := c.AddHousehold(ctx, ten.ID, "house-1", "Member One")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := uplink.Enrol(ctx, t.TempDir(), h.APIURL(), hh.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	dev := &http.Client{Transport: &http.Transport{TLSClientConfig: creds.TLSConfig("")}, Timeout: time.Minute}
	st := hh.Streams[1]
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	rs := make([]wire.Reading, 7*3600)
	for i := range rs {
		rs[i] = wire.Reading{Time: start + int64(i)*1000, Value: 400 + float64(i%50)}
	}
	b := &wire.Batch{Series: []wire.Series{{Key: st.Key, Readings: rs}}}
	rand.Read(b.ID[:])
	body, err := wire.AppendBatch(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := dev.Post(h.DeviceURL()+"/v1/batches", api.BatchContentType, bytes.NewReader(body))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("post: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := h.Compactor.Once(ctx); err != nil {
		t.Fatal(err)
	}
	sub := string(hh.Subject.ID)

	var csv strings.Builder
	csv.WriteString("time,value\n")
	for i := range 21_000 {
		fmt.Fprintf(&csv, "%s,%d\n", time.UnixMilli(rs[i].Time).UTC().Format(time.RFC3339), 1000+i%3)
	}
	file := filepath.Join(dir, "corrections.csv")
	os.WriteFile(file, []byte(csv.String()), 0o600)
	out := mustCLI(t, "rights", "rectify", sub, "--stream", string(st.ID), "--file", file, "--grounds", "the meter counted twice", "--apply")
	for _, want := range []string{"submitted 21000 of 21000 corrections", "100%", "done: stream " + string(st.ID) + ", 21000 readings corrected, 0 deleted, 6 chunks re-sealed; buckets recomputed: 24×15m, 6×1h, 1×1d, 1×1mo"} {
		if !strings.Contains(out, want) {
			t.Errorf("rectify output lacks %q:\n%s", want, out)
		}
	}
	got, err := c.AllReadings(ctx, ten.ID, st.ID, 0, 1<<50)
	if err != nil || len(got) != len(rs) || got[4].Value != 1001 || got[4].Quality != wire.QualitySubstituted || got[21_000].Value != rs[21_000].Value {
		t.Fatalf("readings after: %d %v", len(got), err)
	}

	js := filepath.Join(dir, "delete.json")
	os.WriteFile(js, []byte(fmt.Sprintf(`{"corrections": [{"t": %d, "v": 5}], "delete": [{"from": "2026-06-01T06:00:00Z", "to": "2026-06-01T06:30:00Z"}]}`, rs[21_500].Time)), 0o600)
	out = mustCLI(t, "rights", "rectify", sub, "--stream", string(st.ID), "--file", js, "--grounds", "power cut", "--delete", "2026-06-01T06:40:00Z/2026-06-01T06:45:00Z", "--by", "dpo")
	if !strings.Contains(out, "open: 1 corrections and 2 delete ranges") || !strings.Contains(out, "custos rights fulfil "+sub+" rrq_") {
		t.Fatalf("rectify without --apply:\n%s", out)
	}
	id := out[strings.Index(out, "rrq_"):]
	id = id[:strings.IndexAny(id, " :\n")]
	if out := mustCLI(t, "rights", "fulfil", sub, id); !strings.Contains(out, "1 readings corrected, 2100 deleted") {
		t.Errorf("fulfil:\n%s", out)
	}

	bad := filepath.Join(dir, "bad.csv")
	os.WriteFile(bad, []byte("time,value\n1780000000000,1\n1780000001000,one\n"), 0o600)
	before := mustCLI(t, "rights", "list", sub)
	if out, err := cli(t, "rights", "rectify", sub, "--stream", string(st.ID), "--file", bad, "--grounds", "x"); err == nil || !strings.Contains(err.Error(), "line 3: the value is not a finite number") {
		t.Errorf("a bad file: %v\n%s", err, out)
	}
	if after := mustCLI(t, "rights", "list", sub); after != before {
		t.Errorf("a bad file opened a request:\n%s", after)
	}
}
