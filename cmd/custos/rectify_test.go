package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/testenv"
	"github.com/custos-iot/custos/internal/uplink"
	"github.com/custos-iot/custos/internal/wire"
)

// TestRectifyCLI: `custos rights rectify` submits a CSV file of 21,000
// corrections in parts with a progress bar and applies it; a JSON file
// with a delete range opens a request that `custos rights fulfil` applies;
// a bad file is refused naming its line, and no request is opened.
func TestRectifyCLI(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	h, c, ten, hh, dev := cliHousehold(t, hub.Config{PlausibilityOff: true}, "Rectify CLI Coop")
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

// TestCrashRectify kills the hub process (SIGKILL) at a random moment while
// it applies a rectification of seven days of readings every second, and
// restarts it: the stream then serves either all the old values or all
// the corrected ones, its buckets at every resolution agree with its raw
// readings, and the request is done exactly when the values are corrected
// (otherwise it is still open, and applying it again finishes the job).
func TestCrashRectify(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test with real processes; skipped with -short (CI runs it)")
	}
	hubBin, _ := binaries(t)
	t.Run("sqlite", func(t *testing.T) { testCrashRectify(t, hubBin) })
	t.Run("postgres", func(t *testing.T) {
		dsn, schema := testenv.Postgres(t)
		testCrashRectify(t, hubBin, "--postgres-dsn", dsn, "--postgres-schema", schema)
	})
}

func testCrashRectify(t *testing.T, hubBin string, extra ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill schedule seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 1))
	h := startCrashHub(ctx, t, hubBin, extra...)
	c := h.client(t)
	ten, err := c.CreateTenant(ctx, "Crash Rectify Coop")
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
	creds, err := uplink.Enrol(ctx, t.TempDir(), h.apiURL, hh.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	dev := &http.Client{Transport: &http.Transport{TLSClientConfig: creds.TLSConfig("")}, Timeout: time.Minute}
	st := hh.Streams[1] // power, W
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	const hours = 7 * 24
	for hr := range int64(hours) {
		rs := make([]wire.Reading, 3600)
		for i := range rs {
			tm := start + hr*3_600_000 + int64(i)*1000
			x := uint64(tm)*0x9e3779b97f4a7c15 + 1 // a value per time: no window repeats
			x ^= x >> 29
			x *= 0xbf58476d1ce4e5b9
			x ^= x >> 32
			rs[i] = wire.Reading{Time: tm, Value: 400 + float64(x%1000)/10}
		}
		b := &wire.Batch{Series: []wire.Series{{Key: st.Key, Readings: rs}}}
		rand.Read(b.ID[:])
		body, err := wire.AppendBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := dev.Post(creds.DeviceURL+"/v1/batches", api.BatchContentType, bytes.NewReader(body))
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("post: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	// settled waits until the compactor has folded every stored reading
	// into the rollups, then checks that the buckets at every resolution
	// agree with the raw readings, and returns them.
	settled := func(what string) []series.Reading {
		t.Helper()
		for {
			raw, err := c.AllReadings(ctx, ten.ID, st.ID, 0, 1<<50)
			if err != nil {
				t.Fatal(err)
			}
			month, err := c.Aggregates(ctx, ten.ID, st.ID, "1mo", 0, 1<<50)
			if err != nil {
				t.Fatal(err)
			}
			n := int64(0)
			for _, b := range month.Buckets {
				n += b.Count
			}
			if n != int64(len(raw)) {
				if ctx.Err() != nil {
					t.Fatalf("%s: the rollups count %d readings, the stream holds %d", what, n, len(raw))
				}
				time.Sleep(200 * time.Millisecond)
				continue
			}
			ws := make([]wire.Reading, len(raw))
			for i, r := range raw {
				ws[i] = wire.Reading{Time: r.Time, Value: r.Value, Quality: r.Quality}
			}
			rows := map[rollup.Key]*rollup.Row{}
			rollup.Apply(rows, ws, rollup.Aggregated)
			for _, res := range rollup.Aggregated {
				var rr []*rollup.Row
				for k, row := range rows {
					if k.Res == res {
						rr = append(rr, row)
					}
				}
				slices.SortFunc(rr, func(a, b *rollup.Row) int { return int(a.Period - b.Period) })
				want := rollup.Buckets(rr, 0, 1<<50)
				got, err := c.Aggregates(ctx, ten.ID, st.ID, string(res), 0, 1<<50)
				if err != nil {
					t.Fatal(err)
				}
				if len(got.Buckets) != len(want) {
					t.Fatalf("%s: %d %s buckets, want %d", what, len(got.Buckets), res, len(want))
				}
				for i, w := range want {
					g := got.Buckets[i]
					if g.T != w.Start || g.Count != w.Count || g.Min != w.Min || g.Max != w.Max || math.Abs(g.Sum-w.Sum) > 1e-9*math.Abs(w.Sum) {
						t.Fatalf("%s: %s bucket %s is %+v, its raw readings give %+v", what, res, series.FormatTime(w.Start), g, w)
					}
				}
			}
			return raw
		}
	}
	status := func(id rights.RequestID) rights.Status {
		t.Helper()
		var rs []rights.Request
		if err := c.Do(ctx, "GET", "/v1/tenants/"+string(ten.ID)+"/subjects/"+string(hh.Subject.ID)+"/rights", nil, &rs); err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.ID == id {
				return r.Status
			}
		}
		t.Fatalf("request %s is gone", id)
		return ""
	}
	base := settled("as stored")
	if len(base) < hours*3000 {
		t.Fatalf("%d readings stored", len(base))
	}
	killedMidway := 0
	span := 150 * time.Millisecond
	for round := 1; round <= 4; round++ {
		want := slices.Clone(base)
		cs := make([]series.Correction, len(base))
		for i, r := range base {
			v := math.Round(r.Value) + float64(round)/4
			cs[i] = series.Correction{Time: r.Time, Value: v}
			want[i] = series.Reading{Time: r.Time, Value: v, Quality: wire.QualitySubstituted}
		}
		req, err := c.RequestRectification(ctx, ten.ID, client.Rectification{Subject: hh.Subject.ID, Stream: st.ID, RequestedBy: rights.ByDPO, Grounds: "crash test", Corrections: cs}, nil)
		if err != nil {
			t.Fatal(err)
		}
		applied := make(chan error, 1)
		began := time.Now()
		go func() {
			_, err := c.FulfilRightsRequest(ctx, ten.ID, hh.Subject.ID, req.ID)
			applied <- err
		}()
		// The kill lands anywhere in an application's duration, as last
		// measured (80-250 ms, by store and machine), or just after it.
		wait := 5*time.Millisecond + time.Duration(rng.Int64N(int64(span)*13/10))
		select {
		case err := <-applied:
			span = time.Since(began)
			t.Logf("round %d: the application ended after %v, before the kill planned at %v (%v)", round, span.Round(time.Millisecond), wait.Round(time.Millisecond), err)
			h.restart(ctx)
		case <-time.After(wait):
			h.restart(ctx)
			<-applied
		}
		got := settled(fmt.Sprintf("round %d after the kill", round))
		switch st := status(req.ID); {
		case st == rights.Done && slices.Equal(got, want):
			t.Logf("round %d: killed after the commit", round)
		case st == rights.Open && slices.Equal(got, base):
			killedMidway++
			t.Logf("round %d: killed before the commit; applying again", round)
			if _, err := c.FulfilRightsRequest(ctx, ten.ID, hh.Subject.ID, req.ID); err != nil {
				t.Fatal(err)
			}
			if got := settled(fmt.Sprintf("round %d applied again", round)); !slices.Equal(got, want) {
				t.Fatalf("round %d: applied again, the stream does not hold the corrected values", round)
			}
		default:
			t.Fatalf("round %d: request %s with %d readings, neither all old nor all corrected", round, st, len(got))
		}
		base = want
	}
	t.Logf("%d of 4 kills landed before the commit", killedMidway)
}
