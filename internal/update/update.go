// Package update owns the hub's side of signed agent self-update: a TUF
// repository (The Update Framework, via go-tuf v2) of custos-agent
// releases kept in a directory, the signing keys' files, publishing a
// release, re-signing the online roles before they expire, rotating the
// online keys, and serving the repository read-only.
//
// Key hierarchy: the root and targets keys are offline (files the operator
// keeps away from the hub and brings only to a ceremony: init, publish,
// rotation); the snapshot and timestamp keys are online, kept by the hub
// in <dir>/keys, so the hub can re-sign them before they expire. A stolen
// hub therefore cannot ship a binary: that needs the targets key.
//
// The package MUST NOT be imported by the agent (the agent's side is
// internal/selfupdate) and MUST NOT implement any TUF verification of its
// own: go-tuf's metadata package signs and checks everything.
package update

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/custos-iot/custos/internal/enrol"
	"github.com/custos-iot/custos/internal/errs"
)

// Default lifetimes of the roles' metadata.
const (
	DefaultRootExpiry      = 365 * 24 * time.Hour
	DefaultTargetsExpiry   = 365 * 24 * time.Hour
	DefaultSnapshotExpiry  = 7 * 24 * time.Hour
	DefaultTimestampExpiry = 24 * time.Hour
)

// Layout of a repository directory:
//
//	<dir>/repository/             served read-only at /v1/updates/
//	    N.root.json N.targets.json N.snapshot.json timestamp.json
//	    targets/<sha256>.<target name>
//	<dir>/keys/snapshot.key       online keys (PKCS#8 PEM, 0600), never served
//	<dir>/keys/timestamp.key
//	<dir>/keys/lock               serialises writers (the hub and the CLI)
const (
	repoDir = "repository"
	keysDir = "keys"
)

// Repo is a TUF repository of agent releases on disk. Its methods take a
// file lock, so the hub's re-signing and the CLI's publish can run at the
// same time against the same directory.
type Repo struct {
	dir string
	now func() time.Time
	// Expiry lifetimes; zero means the default.
	TargetsExpiry, SnapshotExpiry, TimestampExpiry, RootExpiry time.Duration
}

// Open returns the repository in dir. now is the clock (nil: time.Now).
func Open(dir string, now func() time.Time) *Repo {
	if now == nil {
		now = time.Now
	}
	return &Repo{dir: dir, now: now}
}

// Dir is the directory served to agents (metadata and targets).
func (r *Repo) Dir() string { return filepath.Join(r.dir, repoDir) }

// Initialized reports whether the repository has metadata.
func (r *Repo) Initialized() bool {
	_, err := os.Stat(filepath.Join(r.Dir(), "timestamp.json"))
	return err == nil
}

func (r *Repo) exp(d, def time.Duration) time.Time {
	if d == 0 {
		d = def
	}
	return r.now().UTC().Add(d).Truncate(time.Second)
}

// TargetName is the name of an agent release in the repository:
// custos-agent_<version>_<goos>_<goarch>.
func TargetName(version, goos, goarch string) string {
	return "custos-agent_" + version + "_" + goos + "_" + goarch
}

var targetRe = regexp.MustCompile(`^custos-agent_(v[0-9A-Za-z.+-]+)_([a-z0-9]+)_([a-z0-9]+)$`)

// ValidTargetName reports whether name is a well-formed release name.
func ValidTargetName(name string) bool { return targetRe.MatchString(name) }

// GenerateKey creates an Ed25519 key file (PKCS#8 PEM, mode 0600) at path.
// It refuses to overwrite an existing file.
func GenerateKey(path string, rnd io.Reader) (*metadata.Key, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	_, priv, err := ed25519.GenerateKey(rnd)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	pemData := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := enrol.WriteFile(path, pemData, 0o600, true); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("update: %s exists; refusing to overwrite a key", path)
		}
		return nil, err
	}
	return metadata.KeyFromPublicKey(priv.Public())
}

// Signer is a loaded signing key with its TUF key.
type Signer struct {
	signature.Signer
	Key *metadata.Key
	ID  string
}

// LoadKey reads a key file written by GenerateKey.
func LoadKey(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("update: read key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("update: %s is not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("update: %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("update: %s is not an Ed25519 key", path)
	}
	s, err := signature.LoadSigner(priv, crypto.Hash(0))
	if err != nil {
		return nil, err
	}
	key, err := metadata.KeyFromPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	id, err := key.ID()
	if err != nil {
		return nil, err
	}
	return &Signer{Signer: s, Key: key, ID: id}, nil
}

// lock takes the repository's writer lock (flock on keys/lock).
func (r *Repo) lock() (func(), error) {
	if err := os.MkdirAll(filepath.Join(r.dir, keysDir), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(r.dir, keysDir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("update: lock repository: %w", err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// Init creates a repository: online snapshot and timestamp keys in
// <dir>/keys, root version 1 signed by root, an empty targets list signed
// by targets, and the first snapshot and timestamp. It refuses an
// initialised repository. The returned bytes are 1.root.json: install them
// on agents as their trusted root.
func (r *Repo) Init(root, targets *Signer) ([]byte, error) {
	unlock, err := r.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.Initialized() {
		return nil, errs.E(errs.Exists, "update: the repository is already initialised")
	}
	online := map[string]*Signer{}
	for _, role := range []string{metadata.SNAPSHOT, metadata.TIMESTAMP} {
		p := filepath.Join(r.dir, keysDir, role+".key")
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			if _, err := GenerateKey(p, nil); err != nil {
				return nil, err
			}
		}
		if online[role], err = LoadKey(p); err != nil {
			return nil, err
		}
	}
	rm := metadata.Root(r.exp(r.RootExpiry, DefaultRootExpiry))
	for role, s := range map[string]*Signer{metadata.ROOT: root, metadata.TARGETS: targets, metadata.SNAPSHOT: online[metadata.SNAPSHOT], metadata.TIMESTAMP: online[metadata.TIMESTAMP]} {
		if err := rm.Signed.AddKey(s.Key, role); err != nil {
			return nil, err
		}
	}
	if _, err := rm.Sign(root); err != nil {
		return nil, err
	}
	if err := rm.VerifyDelegate(metadata.ROOT, rm); err != nil {
		return nil, err
	}
	tm := metadata.Targets(r.exp(r.TargetsExpiry, DefaultTargetsExpiry))
	if err := signAs(rm, metadata.TARGETS, tm, targets); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(r.Dir(), "targets"), 0o755); err != nil {
		return nil, err
	}
	rootBytes, err := rm.ToBytes(true)
	if err != nil {
		return nil, err
	}
	if err := r.write("1.root.json", rootBytes); err != nil {
		return nil, err
	}
	if err := r.writeMeta("1.targets.json", tm); err != nil {
		return nil, err
	}
	if err := r.commit(rm, 1, nil, nil); err != nil {
		return nil, err
	}
	return rootBytes, nil
}

// signAs signs m with s and checks that root authorises s for role, so a
// wrong key is refused before anything is written.
func signAs[T metadata.Roles](root *metadata.Metadata[metadata.RootType], role string, m *metadata.Metadata[T], s *Signer) error {
	m.ClearSignatures()
	if _, err := m.Sign(s); err != nil {
		return err
	}
	if err := root.VerifyDelegate(role, m); err != nil {
		return errs.E(errs.Invalid, fmt.Sprintf("update: the key %s is not the %s key of this repository", s.ID, role))
	}
	return nil
}

func (r *Repo) write(name string, data []byte) error {
	return enrol.WriteFile(filepath.Join(r.Dir(), name), data, 0o644, false)
}

func writeMeta[T metadata.Roles](r *Repo, name string, m *metadata.Metadata[T]) error {
	b, err := m.ToBytes(true)
	if err != nil {
		return err
	}
	return r.write(name, b)
}

func (r *Repo) writeMeta(name string, m *metadata.Metadata[metadata.TargetsType]) error {
	return writeMeta(r, name, m)
}

// state is the repository's current metadata.
type state struct {
	root      *metadata.Metadata[metadata.RootType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	targets   *metadata.Metadata[metadata.TargetsType]
}

var rootFileRe = regexp.MustCompile(`^([0-9]+)\.root\.json$`)

func (r *Repo) load() (*state, error) {
	if !r.Initialized() {
		return nil, errs.E(errs.NotFound, "update: the repository is not initialised (custos release init)")
	}
	ents, err := os.ReadDir(r.Dir())
	if err != nil {
		return nil, err
	}
	var newest int64
	for _, e := range ents {
		if m := rootFileRe.FindStringSubmatch(e.Name()); m != nil {
			if n, _ := strconv.ParseInt(m[1], 10, 64); n > newest {
				newest = n
			}
		}
	}
	st := &state{}
	if st.root, err = metadata.Root().FromFile(filepath.Join(r.Dir(), fmt.Sprintf("%d.root.json", newest))); err != nil {
		return nil, err
	}
	if st.timestamp, err = metadata.Timestamp().FromFile(filepath.Join(r.Dir(), "timestamp.json")); err != nil {
		return nil, err
	}
	sv := st.timestamp.Signed.Meta["snapshot.json"].Version
	if st.snapshot, err = metadata.Snapshot().FromFile(filepath.Join(r.Dir(), fmt.Sprintf("%d.snapshot.json", sv))); err != nil {
		return nil, err
	}
	tv := st.snapshot.Signed.Meta["targets.json"].Version
	if st.targets, err = metadata.Targets().FromFile(filepath.Join(r.Dir(), fmt.Sprintf("%d.targets.json", tv))); err != nil {
		return nil, err
	}
	return st, nil
}

func (r *Repo) onlineKeys() (snap, ts *Signer, err error) {
	if snap, err = LoadKey(filepath.Join(r.dir, keysDir, "snapshot.key")); err != nil {
		return nil, nil, err
	}
	if ts, err = LoadKey(filepath.Join(r.dir, keysDir, "timestamp.key")); err != nil {
		return nil, nil, err
	}
	return snap, ts, nil
}

// commit writes a new snapshot pointing at targetsVersion, then a new
// timestamp pointing at it, signed with the online keys. The timestamp is
// written last, so an agent never sees a timestamp whose files are missing.
// prevSnap and prevTS (may be nil) give the versions to continue from.
func (r *Repo) commit(root *metadata.Metadata[metadata.RootType], targetsVersion int64, prevSnap *metadata.Metadata[metadata.SnapshotType], prevTS *metadata.Metadata[metadata.TimestampType]) error {
	snapKey, tsKey, err := r.onlineKeys()
	if err != nil {
		return err
	}
	sm := metadata.Snapshot(r.exp(r.SnapshotExpiry, DefaultSnapshotExpiry))
	sm.Signed.Meta["targets.json"] = metadata.MetaFile(targetsVersion)
	if prevSnap != nil {
		sm.Signed.Version = prevSnap.Signed.Version + 1
	}
	if err := signAs(root, metadata.SNAPSHOT, sm, snapKey); err != nil {
		return err
	}
	if err := writeMeta(r, fmt.Sprintf("%d.snapshot.json", sm.Signed.Version), sm); err != nil {
		return err
	}
	tm := metadata.Timestamp(r.exp(r.TimestampExpiry, DefaultTimestampExpiry))
	tm.Signed.Meta["snapshot.json"] = metadata.MetaFile(sm.Signed.Version)
	if prevTS != nil {
		tm.Signed.Version = prevTS.Signed.Version + 1
	}
	if err := signAs(root, metadata.TIMESTAMP, tm, tsKey); err != nil {
		return err
	}
	return writeMeta(r, "timestamp.json", tm)
}

// Release is one agent binary in the repository.
type Release struct {
	Name   string `json:"name"`
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
}

// Publish adds an agent binary as target name, signing a new targets
// version with the offline targets key and new snapshot and timestamp
// versions with the online keys. An existing name is refused (a published
// version never changes).
func (r *Repo) Publish(targets *Signer, name string, binary []byte) (Release, error) {
	if !ValidTargetName(name) {
		return Release{}, errs.E(errs.Invalid, fmt.Sprintf("update: %q is not a release name (custos-agent_<vX.Y.Z>_<goos>_<goarch>)", name))
	}
	if len(binary) == 0 {
		return Release{}, errs.E(errs.Invalid, "update: empty binary")
	}
	unlock, err := r.lock()
	if err != nil {
		return Release{}, err
	}
	defer unlock()
	st, err := r.load()
	if err != nil {
		return Release{}, err
	}
	if _, ok := st.targets.Signed.Targets[name]; ok {
		return Release{}, errs.E(errs.Exists, fmt.Sprintf("update: %s is already published; publish a new version", name))
	}
	tf, err := metadata.TargetFile().FromBytes(name, binary, "sha256")
	if err != nil {
		return Release{}, err
	}
	tm := st.targets
	tm.Signed.Targets[name] = tf
	tm.Signed.Version++
	tm.Signed.Expires = r.exp(r.TargetsExpiry, DefaultTargetsExpiry)
	if err := signAs(st.root, metadata.TARGETS, tm, targets); err != nil {
		return Release{}, err
	}
	sum := fmt.Sprintf("%x", []byte(tf.Hashes["sha256"]))
	if err := enrol.WriteFile(filepath.Join(r.Dir(), "targets", sum+"."+name), binary, 0o644, false); err != nil {
		return Release{}, err
	}
	if err := r.writeMeta(fmt.Sprintf("%d.targets.json", tm.Signed.Version), tm); err != nil {
		return Release{}, err
	}
	if err := r.commit(st.root, tm.Signed.Version, st.snapshot, st.timestamp); err != nil {
		return Release{}, err
	}
	return Release{Name: name, Length: tf.Length, SHA256: sum}, nil
}

// Releases lists the published binaries, by name.
func (r *Repo) Releases() ([]Release, error) {
	st, err := r.load()
	if err != nil {
		return nil, err
	}
	var out []Release
	for name, tf := range st.targets.Signed.Targets {
		out = append(out, Release{Name: name, Length: tf.Length, SHA256: fmt.Sprintf("%x", []byte(tf.Hashes["sha256"]))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Expiries reports when each role's current metadata expires.
func (r *Repo) Expiries() (map[string]time.Time, error) {
	st, err := r.load()
	if err != nil {
		return nil, err
	}
	return map[string]time.Time{
		metadata.ROOT: st.root.Signed.Expires, metadata.TARGETS: st.targets.Signed.Expires,
		metadata.SNAPSHOT: st.snapshot.Signed.Expires, metadata.TIMESTAMP: st.timestamp.Signed.Expires,
	}, nil
}

// Refresh re-signs the online roles when they are close to expiry: the
// snapshot when less than half its lifetime is left, the timestamp when
// less than half of its is left. It reports whether it signed anything.
// The hub calls it periodically; agents refuse an expired timestamp
// (freeze attack), so a hub that stops refreshing stops updates, never
// data.
func (r *Repo) Refresh() (bool, error) {
	unlock, err := r.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	st, err := r.load()
	if err != nil {
		return false, err
	}
	now := r.now()
	half := func(exp time.Time, life, def time.Duration) bool {
		if life == 0 {
			life = def
		}
		return exp.Sub(now) < life/2
	}
	if !half(st.snapshot.Signed.Expires, r.SnapshotExpiry, DefaultSnapshotExpiry) &&
		!half(st.timestamp.Signed.Expires, r.TimestampExpiry, DefaultTimestampExpiry) {
		return false, nil
	}
	return true, r.commit(st.root, st.targets.Signed.Version, st.snapshot, st.timestamp)
}

// RotateOnline replaces the online snapshot and timestamp keys: it
// generates new ones, signs root version N+1 (listing them instead of the
// old ones) with the offline root key, and re-signs snapshot and timestamp
// with the new keys. Agents follow the root chain on their next check.
// The old key files are kept as *.key.old-<N> for the record.
func (r *Repo) RotateOnline(root *Signer) (int64, error) {
	unlock, err := r.lock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	st, err := r.load()
	if err != nil {
		return 0, err
	}
	if err := st.root.VerifyDelegate(metadata.ROOT, signedCopy(st.root, root)); err != nil {
		return 0, errs.E(errs.Invalid, fmt.Sprintf("update: the key %s is not the root key of this repository", root.ID))
	}
	rm := st.root
	old := rm.Signed.Version
	for _, role := range []string{metadata.SNAPSHOT, metadata.TIMESTAMP} {
		p := filepath.Join(r.dir, keysDir, role+".key")
		if err := os.Rename(p, fmt.Sprintf("%s.old-%d", p, old)); err != nil {
			return 0, err
		}
		k, err := GenerateKey(p, nil)
		if err != nil {
			return 0, err
		}
		for _, id := range append([]string(nil), rm.Signed.Roles[role].KeyIDs...) {
			if err := rm.Signed.RevokeKey(id, role); err != nil {
				return 0, err
			}
		}
		if err := rm.Signed.AddKey(k, role); err != nil {
			return 0, err
		}
	}
	rm.Signed.Version = old + 1
	rm.Signed.Expires = r.exp(r.RootExpiry, DefaultRootExpiry)
	if err := signAs(rm, metadata.ROOT, rm, root); err != nil {
		return 0, err
	}
	if err := writeMeta(r, fmt.Sprintf("%d.root.json", rm.Signed.Version), rm); err != nil {
		return 0, err
	}
	return rm.Signed.Version, r.commit(rm, st.targets.Signed.Version, st.snapshot, st.timestamp)
}

// signedCopy returns m signed by s alone (to test that s is a root key).
func signedCopy(m *metadata.Metadata[metadata.RootType], s *Signer) *metadata.Metadata[metadata.RootType] {
	b, _ := m.ToBytes(false)
	c, err := metadata.Root().FromBytes(b)
	if err != nil {
		return m
	}
	c.ClearSignatures()
	c.Sign(s)
	return c
}

// servedRe matches the only names the repository serves: versioned
// metadata, the timestamp, and content-addressed targets.
var servedRe = regexp.MustCompile(`^(?:[0-9]{1,10}\.(?:root|targets|snapshot)\.json|timestamp\.json|targets/[0-9a-f]{64}\.custos-agent_v[0-9A-Za-z.+-]+_[a-z0-9]+_[a-z0-9]+)$`)

// ValidServedName reports whether name (relative to /v1/updates/) is a
// file the repository serves. Anything else — keys, the lock, "..",
// absolute paths — is refused before the file system is touched.
func ValidServedName(name string) bool {
	return servedRe.MatchString(name) && !strings.Contains(name, "..")
}

// Open opens a served file for reading. Unknown names are NotFound.
func (r *Repo) Open(name string) (*os.File, error) {
	if !ValidServedName(name) {
		return nil, errs.E(errs.NotFound, "no such update file")
	}
	root, err := os.OpenRoot(r.Dir())
	if err != nil {
		return nil, errs.E(errs.NotFound, "no update repository on this hub")
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		return nil, errs.E(errs.NotFound, "no such update file")
	}
	return f, nil
}
