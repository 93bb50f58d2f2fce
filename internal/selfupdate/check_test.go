package selfupdate_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/custos-iot/custos/internal/selfupdate"
	"github.com/custos-iot/custos/internal/update"
)

// repo is a real TUF repository (internal/update, the hub's side) served
// over HTTP on 127.0.0.1, with a hook that lets a test play the attacker
// in the middle.
type repo struct {
	t        *testing.T
	dir      string
	repo     *update.Repo
	root     *update.Signer
	targets  *update.Signer
	rootFile string
	srv      *httptest.Server

	mu     sync.Mutex
	now    time.Time
	tamper func(name string, w http.ResponseWriter) bool
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newRepo starts a repository whose clock starts at t0, or at start[0].
func newRepo(t *testing.T, start ...time.Time) *repo {
	t.Helper()
	r := &repo{t: t, dir: t.TempDir(), now: t0}
	if len(start) > 0 {
		r.now = start[0]
	}
	r.repo = update.Open(filepath.Join(r.dir, "hub"), r.clock)
	r.root = genKey(t, filepath.Join(r.dir, "offline", "root.key"))
	r.targets = genKey(t, filepath.Join(r.dir, "offline", "targets.key"))
	rootJSON, err := r.repo.Init(r.root, r.targets)
	if err != nil {
		t.Fatal(err)
	}
	r.rootFile = filepath.Join(r.dir, "root.json")
	if err := os.WriteFile(r.rootFile, rootJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func genKey(t *testing.T, path string) *update.Signer {
	t.Helper()
	if _, err := update.GenerateKey(path, nil); err != nil {
		t.Fatal(err)
	}
	s, err := update.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (r *repo) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

func (r *repo) advance(d time.Duration) {
	r.mu.Lock()
	r.now = r.now.Add(d)
	r.mu.Unlock()
}

func (r *repo) setTamper(f func(name string, w http.ResponseWriter) bool) {
	r.mu.Lock()
	r.tamper = f
	r.mu.Unlock()
}

func (r *repo) serve(w http.ResponseWriter, req *http.Request) {
	name, ok := strings.CutPrefix(req.URL.Path, "/v1/updates/")
	if !ok {
		http.NotFound(w, req)
		return
	}
	r.mu.Lock()
	tamper := r.tamper
	r.mu.Unlock()
	if tamper != nil && tamper(name, w) {
		return
	}
	f, err := r.repo.Open(name)
	if err != nil {
		http.NotFound(w, req)
		return
	}
	defer f.Close()
	http.ServeContent(w, req, name, time.Time{}, f)
}

// file reads a served repository file as it is now.
func (r *repo) file(name string) []byte {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.repo.Dir(), name))
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func (r *repo) publish(version string, data []byte) {
	r.t.Helper()
	if _, err := r.repo.Publish(r.targets, update.TargetName(version, runtime.GOOS, runtime.GOARCH), data); err != nil {
		r.t.Fatal(err)
	}
}

// agent is one agent's view: its own state directory, kept across checks.
func (r *repo) agent(version string) selfupdate.Config {
	return selfupdate.Config{
		RootFile: r.rootFile,
		Dir:      r.t.TempDir(),
		URL:      r.srv.URL + "/v1/updates",
		Client:   &http.Client{Timeout: time.Minute},
		Version:  version,
		Now:      r.clock,
	}
}

func binary(tag string) []byte { return bytes.Repeat([]byte("custos-agent "+tag+"\n"), 1000) }

func TestHappyPath(t *testing.T) {
	r := newRepo(t)
	cfg := r.agent("v1.0.0")
	u, err := selfupdate.Check(cfg)
	if err != nil || u != nil {
		t.Fatalf("empty repository: update %v, err %v", u, err)
	}
	r.publish("v1.1.0", binary("1.1.0"))
	r.publish("v1.2.0", binary("1.2.0"))
	// Another platform's newer release is not ours.
	if _, err := r.repo.Publish(r.targets, update.TargetName("v9.0.0", "plan9", "mips"), binary("9")); err != nil {
		t.Fatal(err)
	}
	u, err = selfupdate.Check(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if u == nil || u.Version != "v1.2.0" || !bytes.Equal(u.Data, binary("1.2.0")) {
		t.Fatalf("got %+v, want v1.2.0 with its binary", u)
	}
	cfg.Version = "v1.2.0"
	if u, err := selfupdate.Check(cfg); err != nil || u != nil {
		t.Fatalf("up to date: update %v, err %v", u, err)
	}
}

// A validly signed older release is never installed: the agent only moves
// forward.
func TestOlderReleaseRefused(t *testing.T) {
	r := newRepo(t)
	r.publish("v1.0.0", binary("1.0.0"))
	r.publish("v0.9.0", binary("0.9.0"))
	if u, err := selfupdate.Check(r.agent("v1.1.0")); err != nil || u != nil {
		t.Fatalf("update %v, err %v; want nothing", u, err)
	}
}

// Rollback attack: after the agent has seen newer metadata, the attacker
// replays older, validly signed metadata (hiding a security release).
func TestMetadataRollbackRefused(t *testing.T) {
	r := newRepo(t)
	r.publish("v1.1.0", binary("1.1.0"))
	oldTimestamp := r.file("timestamp.json")
	r.publish("v1.2.0", binary("1.2.0"))
	cfg := r.agent("v1.0.0")
	if u, err := selfupdate.Check(cfg); err != nil || u == nil || u.Version != "v1.2.0" {
		t.Fatalf("first check: %+v, %v", u, err)
	}
	r.setTamper(func(name string, w http.ResponseWriter) bool {
		if name == "timestamp.json" {
			w.Write(oldTimestamp)
			return true
		}
		return false
	})
	_, err := selfupdate.Check(cfg)
	if !errors.Is(err, &metadata.ErrBadVersionNumber{}) {
		t.Fatalf("replayed old timestamp: err %v, want a bad version number", err)
	}
}

// Freeze attack: the attacker (or a dead hub) keeps serving the last
// timestamp after it expired. Refused; a hub that re-signs it is fine.
func TestFreezeRefused(t *testing.T) {
	r := newRepo(t)
	r.publish("v1.1.0", binary("1.1.0"))
	cfg := r.agent("v1.0.0")
	r.advance(update.DefaultTimestampExpiry + time.Hour)
	_, err := selfupdate.Check(cfg)
	if !errors.Is(err, &metadata.ErrExpiredMetadata{}) {
		t.Fatalf("expired timestamp: err %v, want expired metadata", err)
	}
	signed, err := r.repo.Refresh()
	if err != nil || !signed {
		t.Fatalf("hub refresh: signed %v, err %v", signed, err)
	}
	if u, err := selfupdate.Check(cfg); err != nil || u == nil {
		t.Fatalf("after the hub re-signed: %+v, %v", u, err)
	}
	// Well within the timestamp's life the hub signs nothing new.
	if signed, err := r.repo.Refresh(); err != nil || signed {
		t.Fatalf("fresh timestamp re-signed: %v, %v", signed, err)
	}
}

// Mix and match: the attacker combines metadata from different moments
// (an old targets list under a new snapshot) or another repository.
func TestMixAndMatchRefused(t *testing.T) {
	r := newRepo(t)
	r.publish("v1.1.0", binary("1.1.0")) // 2.targets.json
	oldTargets := r.file("2.targets.json")
	r.publish("v1.2.0", binary("1.2.0")) // 3.targets.json

	r.setTamper(func(name string, w http.ResponseWriter) bool {
		if name == "3.targets.json" {
			w.Write(oldTargets)
			return true
		}
		return false
	})
	_, err := selfupdate.Check(r.agent("v1.0.0"))
	if !errors.Is(err, &metadata.ErrBadVersionNumber{}) {
		t.Fatalf("old targets under new snapshot: err %v, want a bad version number", err)
	}

	// A snapshot from another repository (other keys), same version.
	other := newRepo(t)
	other.publish("v1.1.0", binary("1.1.0"))
	other.publish("v6.6.6", binary("evil"))
	otherSnap := other.file("3.snapshot.json")
	r.setTamper(func(name string, w http.ResponseWriter) bool {
		if name == "3.snapshot.json" {
			w.Write(otherSnap)
			return true
		}
		return false
	})
	_, err = selfupdate.Check(r.agent("v1.0.0"))
	if !errors.Is(err, &metadata.ErrLengthOrHashMismatch{}) && !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
		t.Fatalf("foreign snapshot: err %v, want refused", err)
	}
}

// Unsigned or wrongly signed targets: a binary the targets key never
// signed, targets metadata signed by a rogue key or by nobody, and a
// signed name whose bytes were swapped.
func TestBadSignaturesRefused(t *testing.T) {
	r := newRepo(t)
	r.publish("v1.1.0", binary("1.1.0"))
	rogue := genKey(t, filepath.Join(t.TempDir(), "rogue.key"))

	// 1. A binary dropped into the repository without metadata is not seen.
	evil := update.TargetName("v2.0.0", runtime.GOOS, runtime.GOARCH)
	if err := os.WriteFile(filepath.Join(r.repo.Dir(), "targets", strings.Repeat("0", 64)+"."+evil), binary("evil"), 0o644); err != nil {
		t.Fatal(err)
	}
	if u, err := selfupdate.Check(r.agent("v1.1.0")); err != nil || u != nil {
		t.Fatalf("unsigned binary: update %+v, err %v; want nothing", u, err)
	}

	// 2. Targets metadata listing an evil binary, re-signed by a rogue key
	// or with its signatures stripped.
	tm, err := metadata.Targets().FromBytes(r.file("2.targets.json"))
	if err != nil {
		t.Fatal(err)
	}
	tf, err := metadata.TargetFile().FromBytes(evil, binary("evil"), "sha256")
	if err != nil {
		t.Fatal(err)
	}
	tm.Signed.Targets[evil] = tf
	tm.ClearSignatures()
	unsigned, _ := tm.ToBytes(true)
	if _, err := tm.Sign(rogue); err != nil {
		t.Fatal(err)
	}
	rogueSigned, _ := tm.ToBytes(true)
	for _, tc := range []struct {
		name string
		body []byte
	}{{"rogue key", rogueSigned}, {"no signature", unsigned}} {
		t.Run(tc.name, func(t *testing.T) {
			r.setTamper(func(name string, w http.ResponseWriter) bool {
				if name == "2.targets.json" {
					w.Write(tc.body)
					return true
				}
				return false
			})
			_, err := selfupdate.Check(r.agent("v1.0.0"))
			if !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
				t.Fatalf("wrongly signed targets: err %v, want unsigned metadata", err)
			}
		})
	}

	// 3. The signed name, other bytes (same length).
	r.setTamper(func(name string, w http.ResponseWriter) bool {
		if strings.HasPrefix(name, "targets/") {
			b := binary("1.1.0")
			b[0] ^= 0xff
			w.Write(b)
			return true
		}
		return false
	})
	_, err = selfupdate.Check(r.agent("v1.0.0"))
	if !errors.Is(err, &metadata.ErrLengthOrHashMismatch{}) {
		t.Fatalf("swapped bytes: err %v, want a hash mismatch", err)
	}
}

// Endless data: a server that streams forever (or past the signed length)
// is cut off at the signed length (binaries) or the metadata limit.
func TestEndlessDataRefused(t *testing.T) {
	r := newRepo(t)
	r.publish("v1.1.0", binary("1.1.0"))
	for _, target := range []string{"targets/", "timestamp.json"} {
		t.Run(target, func(t *testing.T) {
			var sent atomic.Int64
			r.setTamper(func(name string, w http.ResponseWriter) bool {
				if !strings.HasPrefix(name, target) {
					return false
				}
				chunk := bytes.Repeat([]byte("A"), 32<<10)
				for range 4096 { // at most 128 MiB, then give up
					n, err := w.Write(chunk)
					sent.Add(int64(n))
					if err != nil {
						return true
					}
				}
				return true
			})
			_, err := selfupdate.Check(r.agent("v1.0.0"))
			if !errors.Is(err, &metadata.ErrDownloadLengthMismatch{}) {
				t.Fatalf("endless %s: err %v, want a length mismatch", target, err)
			}
			t.Logf("refused: %v (server wrote %d bytes before the agent hung up)", err, sent.Load())
		})
	}
	r.setTamper(nil)
	if u, err := selfupdate.Check(r.agent("v1.0.0")); err != nil || u == nil {
		t.Fatalf("honest server again: %+v, %v", u, err)
	}
}

func TestNoVersionNoUpdate(t *testing.T) {
	r := newRepo(t)
	if _, err := selfupdate.Check(r.agent("(devel)")); !errors.Is(err, selfupdate.ErrNoVersion) {
		t.Fatalf("err %v, want ErrNoVersion", err)
	}
}
