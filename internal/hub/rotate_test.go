package hub_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/agent"
	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/seal"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/source/sim"
	"github.com/custos-iot/custos/internal/store"
)

// keyOverview reads GET /v1/keys.
func keyOverview(t *testing.T, c *client.Client) api.KeyOverview {
	t.Helper()
	var st api.KeyOverview
	if err := c.Do(context.Background(), "GET", "/v1/keys", nil, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitJob polls GET /v1/keys until the job started as started ends, and
// fails the test unless it is done.
func waitJob(t *testing.T, c *client.Client, started api.KeyJob) api.KeyJob {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, j := range keyOverview(t, c).Jobs {
			if j.Kind != started.Kind || !j.Started.Equal(started.Started) || j.State == "running" {
				continue
			}
			if j.State != "done" {
				t.Fatalf("%s job ended %s: %s", j.Kind, j.State, j.Error)
			}
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s job did not finish within a minute", started.Kind)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func rotateKEK(t *testing.T, c *client.Client) api.KeyJob {
	t.Helper()
	var job api.KeyJob
	if err := c.Do(context.Background(), "POST", "/v1/keys/rotate-kek", nil, &job); err != nil {
		t.Fatal(err)
	}
	return waitJob(t, c, job)
}

func rollKeys(t *testing.T, c *client.Client, req api.RollRequest) api.KeyJob {
	t.Helper()
	var job api.KeyJob
	if err := c.Do(context.Background(), "POST", "/v1/keys/roll", req, &job); err != nil {
		t.Fatal(err)
	}
	return waitJob(t, c, job)
}

// sealedAD is the associated data a stored value is sealed with (the
// same rule as the hub's).
func sealedAD(v *store.Sealed) []byte {
	switch v.Kind {
	case store.SealedProfile:
		return registry.ProfileAD(v.Tenant, v.Subject)
	case store.SealedLanding:
		return series.LandingAD(v.Tenant, v.Stream)
	case store.SealedChunk:
		return series.ChunkAD(v.Tenant, v.Stream, v.MinTime/series.BucketMS*series.BucketMS)
	case store.SealedCorrections:
		return series.CorrectionsAD(v.Tenant, v.Request, v.Seq)
	default:
		return series.RollupAD(v.Tenant, v.Stream, v.Res, v.Period)
	}
}

// storedValues returns copies of every value stored sealed for the subject.
func storedValues(t *testing.T, h *hub.Hub, ten registry.TenantID, s registry.SubjectID) []store.Sealed {
	t.Helper()
	var out []store.Sealed
	_, err := h.Store.Reseal(context.Background(), ten, s, func(v *store.Sealed) ([]byte, error) {
		out = append(out, *v)
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// startAgent streams a household's simulated readings (ticks of them, at
// most rate per second) until the returned stop is called.
func startAgent(t *testing.T, h *hub.Hub, hh client.Household, ticks int64, rate float64) (stop func()) {
	t.Helper()
	a, err := agent.New(context.Background(), agent.Config{
		Hub:        h.APIURL(),
		StateDir:   filepath.Join(t.TempDir(), hh.Site.Name),
		EnrolToken: hh.Token,
		Batch:      agent.BatchConfig{MaxReadings: 100, MaxDelay: sim.Duration(50 * time.Millisecond)},
		Simulators: []sim.Config{{Household: hh.Site.Name, Start: t0, Ticks: ticks, Rate: rate, Seed: 7}},
		Log:        quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent.Run: %v", err)
			}
			a.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestRotationUnderLoad: an agent streams and a reader pages through every
// stream and the subject profiles, without pause, while the KEK is rotated
// and then the subject's key is rolled (re-encryption, retirement). No read
// or write fails, no reading disappears, every reading arrives exactly
// once; afterwards every stored value of the subject is sealed under the
// new primary key and ciphertexts under the old key no longer open.
func TestRotationUnderLoad(t *testing.T) { eachBackend(t, testRotationUnderLoad) }

func testRotationUnderLoad(t *testing.T, cfg hub.Config) {
	const ticks = 8000
	h, c := startHub(t, cfg)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Rotating Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	hh, err := c.AddHousehold(ctx, ten.ID, "house-1", "Member One")
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.AddHousehold(ctx, ten.ID, "house-2", "Member Two")
	if err != nil {
		t.Fatal(err)
	}
	subj := hh.Subject.ID
	stopAgent := startAgent(t, h, hh, ticks, 800)
	defer stopAgent()

	// Reader: pages through every stream and the subjects' profiles.
	rctx, stopReader := context.WithCancel(ctx)
	var readerErr error
	var reads int
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		seen := map[registry.StreamID]int{}
		for rctx.Err() == nil {
			if _, err := c.Subjects(rctx, ten.ID); err != nil {
				if rctx.Err() == nil {
					readerErr = err
				}
				return
			}
			for _, st := range hh.Streams {
				rs, err := c.AllReadings(rctx, ten.ID, st.ID, 0, 1<<50)
				if err != nil {
					if rctx.Err() == nil {
						readerErr = err
					}
					return
				}
				if len(rs) < seen[st.ID] {
					readerErr = errors.New(st.Key + ": fewer readings than an earlier read: some became unreadable")
					return
				}
				seen[st.ID] = len(rs)
				reads++
			}
		}
	}()

	// Let data reach chunks and rollups, so the roll has all kinds to move.
	deadline := time.Now().Add(30 * time.Second)
	for {
		kinds := map[store.SealedKind]bool{}
		for _, v := range storedValues(t, h, ten.ID, subj) {
			kinds[v.Kind] = true
		}
		if kinds[store.SealedChunk] && kinds[store.SealedRollup] && kinds[store.SealedProfile] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no chunks and rollups stored after 30 s: %v", kinds)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// (a) KEK rotation.
	before := keyOverview(t, c)
	job := rotateKEK(t, c)
	after := keyOverview(t, c)
	if after.Current == before.Current || after.Current != job.KEK {
		t.Fatalf("current KEK %s after rotating from %s (job says %s)", after.Current, before.Current, job.KEK)
	}
	if n := after.ByKEK[after.Current]; n != after.Subjects || len(after.ByKEK) != 1 {
		t.Errorf("after the rotation, keysets per KEK = %v; want all %d under %s", after.ByKEK, after.Subjects, after.Current)
	}
	if job.Done != job.Total || job.Total != before.Subjects {
		t.Errorf("rotation job rewrapped %d of %d, want %d", job.Done, job.Total, before.Subjects)
	}
	if len(after.KEKs) != 2 || after.KEKs[0] != after.Current {
		t.Errorf("KEK versions %v, want the new one first and the old one", after.KEKs)
	}
	if fi, err := os.Stat(filepath.Join(h.CAFile(), "..", "..", "keys", "kek-2.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("new KEK file: %v, %v", fi, err)
	}

	// (b) Subject key roll with re-encryption and retirement.
	oldInfo, err := h.Keys.Info(ctx, subj)
	if err != nil {
		t.Fatal(err)
	}
	old := storedValues(t, h, ten.ID, subj)
	otherBefore := storedValues(t, h, ten.ID, other.Subject.ID)
	rj := rollKeys(t, c, api.RollRequest{Subjects: []registry.SubjectID{subj}})
	if rj.Retired != 1 || rj.Done != 1 || rj.Total != 1 || rj.Resealed == 0 || rj.Unreadable != 0 {
		t.Errorf("roll job: %+v", rj)
	}
	newInfo, err := h.Keys.Info(ctx, subj)
	if err != nil {
		t.Fatal(err)
	}
	if newInfo.Primary == oldInfo.Primary || len(newInfo.KeyIDs) != 1 {
		t.Fatalf("after the roll: primary %d (was %d), keys %v", newInfo.Primary, oldInfo.Primary, newInfo.KeyIDs)
	}
	live := 0
	for _, v := range old {
		if _, err := h.Keys.Open(ctx, subj, v.Data, sealedAD(&v)); !errors.Is(err, seal.ErrErased) {
			t.Fatalf("a %s sealed under the retired key: Open = %v, want ErrErased", v.Kind, err)
		}
		live++
	}
	t.Logf("%d values sealed before the roll no longer open", live)
	// The other subject is untouched.
	otherNow := storedValues(t, h, ten.ID, other.Subject.ID)
	if len(otherNow) != len(otherBefore) || string(otherNow[0].Data) != string(otherBefore[0].Data) {
		t.Error("the roll of one subject rewrote another subject's data")
	}

	if rs, err := c.AllReadings(ctx, ten.ID, hh.Streams[0].ID, 0, 1<<50); err == nil {
		t.Logf("rotations done with %d of %d readings of %s stored: the agent was still streaming", len(rs), ticks, hh.Streams[0].Key)
	}
	// Everything the agent sends arrives, exactly once, and opens.
	waitStored(t, c, ten.ID, []client.Household{hh}, ticks)
	stopAgent()
	stopReader()
	<-readerDone
	if readerErr != nil {
		t.Fatalf("reader failed during the rotations: %v", readerErr)
	}
	t.Logf("%d stream reads during the test", reads)
	for _, st := range hh.Streams {
		checkExactlyOnce(t, c, ten.ID, st, ticks)
	}
	// Every stored value of the subject is under the new primary.
	for _, v := range storedValues(t, h, ten.ID, subj) {
		if id, ok := seal.KeyID(v.Data); !ok || id != newInfo.Primary {
			t.Fatalf("a stored %s is under key %d, want the new primary %d", v.Kind, id, newInfo.Primary)
		}
	}
	if st := keyOverview(t, c); st.Rolling != 0 || st.Retired != len(oldInfo.KeyIDs) {
		t.Errorf("key status after the roll: rolling %d, retired %d", st.Rolling, st.Retired)
	}
}

// TestRotationSurvivesRestart: after a KEK rotation and a roll of every
// subject, a hub restarted on the same directories makes the rotated KEK
// current (kek-current), loads the earlier one, and still opens everything.
func TestRotationSurvivesRestart(t *testing.T) {
	const ticks = 600
	dir := t.TempDir()
	ctx := context.Background()
	start := func() (*hub.Hub, *client.Client, func()) {
		h, err := hub.New(ctx, hub.Config{DataDir: dir, APIAddr: "127.0.0.1:0", DeviceAddr: "127.0.0.1:0", Log: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- h.Run(rctx) }()
		var once sync.Once
		stop := func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("hub.Run: %v", err)
				}
				h.Close()
			})
		}
		return h, nil, stop
	}
	h, _, stop := start()
	token := h.InitialToken
	c, err := client.NewFromFile(h.APIURL(), token, h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	ten, err := c.CreateTenant(ctx, "Restart Coop")
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
	stopAgent := startAgent(t, h, hh, ticks, 0)
	waitStored(t, c, ten.ID, []client.Household{hh}, ticks)
	stopAgent()

	first := keyOverview(t, c).Current
	rotated := rotateKEK(t, c).KEK
	rollKeys(t, c, api.RollRequest{All: true})
	primary, err := h.Keys.Info(ctx, hh.Subject.ID)
	if err != nil {
		t.Fatal(err)
	}
	stop()

	cur, err := os.ReadFile(filepath.Join(dir, "keys", "kek-current"))
	if err != nil || strings.TrimSpace(string(cur)) != "kek-2.json" {
		t.Fatalf("kek-current = %q, %v; want kek-2.json", cur, err)
	}

	h, _, stop = start()
	defer func() { stop() }()
	c, err = client.NewFromFile(h.APIURL(), token, h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	st := keyOverview(t, c)
	if st.Current != rotated || st.Current == first {
		t.Fatalf("after the restart the current KEK is %s, want the rotated %s (not %s)", st.Current, rotated, first)
	}
	if len(st.KEKs) != 2 || st.ByKEK[rotated] != st.Subjects || st.Rolling != 0 {
		t.Errorf("after the restart: %+v", st)
	}
	subs, err := c.Subjects(ctx, ten.ID)
	if err != nil || len(subs) != 1 {
		t.Fatalf("subjects after the restart: %v, %v", subs, err)
	}
	for _, s := range hh.Streams {
		checkExactlyOnce(t, c, ten.ID, s, ticks)
	}
	for _, v := range storedValues(t, h, ten.ID, hh.Subject.ID) {
		if id, _ := seal.KeyID(v.Data); id != primary.Primary {
			t.Fatalf("a stored %s is under key %d, want %d", v.Kind, id, primary.Primary)
		}
	}
	// A second rotation after the restart adds the next version.
	third := rotateKEK(t, c).KEK
	if third == rotated || third == first {
		t.Fatalf("second rotation gave KEK %s again", third)
	}
	if _, err := os.Stat(filepath.Join(dir, "keys", "kek-3.json")); err != nil {
		t.Fatal(err)
	}
	// With every keyset under kek-3, the earlier files can go: remove them
	// and restart.
	stop()
	for _, f := range []string{"kek.json", "kek-2.json"} {
		if err := os.Remove(filepath.Join(dir, "keys", f)); err != nil {
			t.Fatal(err)
		}
	}
	h, _, stop = start()
	c, err = client.NewFromFile(h.APIURL(), token, h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	if st := keyOverview(t, c); st.Current != third || len(st.KEKs) != 1 {
		t.Errorf("after removing the old KEK files: current %s, versions %v", st.Current, st.KEKs)
	}
	if _, err := c.Subjects(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, c, ten.ID, hh.Streams[0], ticks)
}
