// Package selfupdate is the agent's side of signed self-update: it asks
// the hub's TUF repository (The Update Framework, through go-tuf v2's
// updater, which does every signature, version, expiry, length and hash
// check) whether a newer custos-agent release is published for this
// platform, downloads and verifies it, swaps the running binary atomically
// (keeping the previous one as <exe>.prev), runs the new binary on trial,
// and restores the previous one if the trial does not report healthy.
//
// It MUST NOT import the hub's side (internal/update, store, api, pki):
// it is linked into custos-agent. It MUST NOT verify anything itself that
// go-tuf verifies; it only refuses versions that are not newer than the
// running one and versions that failed their trial.
package selfupdate

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
	"golang.org/x/mod/semver"
)

// Config says where the repository is and what this agent trusts.
type Config struct {
	// RootFile is the trusted root.json installed with the agent (the
	// repository's 1.root.json, or any later root). It is read only until
	// the first successful check; after that the newest verified root in
	// Dir is trusted. Required.
	RootFile string
	// Dir keeps the verified metadata (what makes rollback and freeze
	// attacks detectable across restarts) and the update state. Required.
	Dir string
	// URL is the repository's base URL, e.g. https://hub:8444/v1/updates.
	// Metadata is fetched from URL, binaries from URL/targets. Required.
	URL string
	// Client fetches metadata and binaries; its Timeout bounds each
	// request. Default: a client with a 10-minute timeout.
	Client *http.Client
	// Version is the running version (semantic, e.g. v1.4.2). Required:
	// a build without one never updates itself.
	Version string
	// GOOS and GOARCH select the release. Default: this binary's.
	GOOS, GOARCH string
	// Now is the clock against which expiry is checked. Default time.Now.
	Now func() time.Time
}

// Update is a verified release newer than the running one.
type Update struct {
	// Version is the release's version, Name its target name.
	Version, Name string
	// Data is the binary, verified against the signed length and hashes.
	Data []byte
}

// ErrNoVersion means the running binary has no release version, so it
// cannot tell what is newer; such builds do not update themselves.
var ErrNoVersion = errors.New("selfupdate: the running agent has no release version (build with -ldflags \"-X main.version=vX.Y.Z\"); self-update is off")

// TargetName is the name of a release in the repository; it must match
// internal/update.TargetName.
func TargetName(version, goos, goarch string) string {
	return "custos-agent_" + version + "_" + goos + "_" + goarch
}

// ParseTargetName splits a release name into its version and platform.
// It accepts only names whose version is a valid semantic version.
func ParseTargetName(name string) (version, goos, goarch string, ok bool) {
	rest, ok := strings.CutPrefix(name, "custos-agent_")
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, "_")
	if len(parts) != 3 || !semver.IsValid(parts[0]) || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	for _, p := range parts[1:] {
		for _, c := range p {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
				return "", "", "", false
			}
		}
	}
	return parts[0], parts[1], parts[2], true
}

func (c *Config) defaults() error {
	if c.RootFile == "" || c.Dir == "" || c.URL == "" {
		return errors.New("selfupdate: root file, state directory and repository URL are required")
	}
	if !semver.IsValid(c.Version) {
		return ErrNoVersion
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: 10 * time.Minute}
	}
	if c.GOOS == "" {
		c.GOOS = runtime.GOOS
	}
	if c.GOARCH == "" {
		c.GOARCH = runtime.GOARCH
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Check refreshes the repository's metadata through the TUF client
// workflow and returns the newest release for this platform that is newer
// than the running version and has not failed its trial too often, with
// its verified binary. It returns nil, nil when there is none.
//
// Refused (an error, nothing installed): metadata older than what this
// agent has seen (rollback), an expired timestamp, snapshot, targets or
// root (freeze), metadata that does not match the snapshot (mix and
// match), bad or missing signatures, a binary whose length or hash differs
// from the signed ones, and a download longer than the signed length
// (endless data).
func Check(cfg Config) (*Update, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	metaDir := filepath.Join(cfg.Dir, "metadata")
	targetsDir := filepath.Join(cfg.Dir, "targets")
	for _, d := range []string{metaDir, targetsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("selfupdate: %w", err)
		}
	}
	root, err := os.ReadFile(filepath.Join(metaDir, metadata.ROOT+".json"))
	if err != nil {
		if root, err = os.ReadFile(cfg.RootFile); err != nil {
			return nil, fmt.Errorf("selfupdate: trusted root: %w", err)
		}
	}
	base := strings.TrimSuffix(cfg.URL, "/")
	uc, err := config.New(base, root)
	if err != nil {
		return nil, fmt.Errorf("selfupdate: %w", err)
	}
	uc.LocalMetadataDir = metaDir
	uc.LocalTargetsDir = targetsDir
	uc.RemoteTargetsURL = base + "/targets"
	f := fetcher.NewDefaultFetcher()
	f.SetHTTPClient(cfg.Client)
	uc.Fetcher = f
	up, err := updater.New(uc)
	if err != nil {
		return nil, fmt.Errorf("selfupdate: trusted root: %w", err)
	}
	up.UnsafeSetRefTime(cfg.Now().UTC()) // the injectable clock, not a bypass
	if err := up.Refresh(); err != nil {
		return nil, fmt.Errorf("selfupdate: refresh metadata: %w", err)
	}
	st, err := loadState(cfg.Dir)
	if err != nil {
		return nil, err
	}
	best, bestName := cfg.Version, ""
	for name := range up.GetTopLevelTargets() {
		v, goos, goarch, ok := ParseTargetName(name)
		if !ok || goos != cfg.GOOS || goarch != cfg.GOARCH || semver.Compare(v, best) <= 0 {
			continue
		}
		if !st.mayTry(v, cfg.Now()) {
			continue
		}
		best, bestName = v, name
	}
	if bestName == "" {
		return nil, nil
	}
	info, err := up.GetTargetInfo(bestName)
	if err != nil {
		return nil, fmt.Errorf("selfupdate: %s: %w", bestName, err)
	}
	cached := filepath.Join(targetsDir, bestName)
	_, data, err := up.DownloadTarget(info, cached, "")
	os.Remove(cached) // the binary goes next to the executable, not here
	if err != nil {
		return nil, fmt.Errorf("selfupdate: download %s: %w", bestName, err)
	}
	return &Update{Version: best, Name: bestName, Data: data}, nil
}
