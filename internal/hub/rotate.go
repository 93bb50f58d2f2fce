package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/seal"
	"github.com/custos-iot/custos/internal/seal/pkcs11"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/store"
)

// Key rotation without downtime.
//
// KEK versions. The first file KEK is Config.KEKFile (<KeyDir>/kek.json);
// each rotation adds <KeyDir>/kek-<n>.json (n = 2, 3, ...). With an HSM the
// first version is the configured key label and rotations add
// <label>-<n>. <KeyDir>/kek-current names the current version: a file name
// in KeyDir, or "pkcs11:<label>". On start the hub makes that version
// current and loads every other version it finds (kek.json, kek-*.json,
// OldKEKFiles, and the labels <label>, <label>-2, ... below the current
// one) as old KEKs that can still unwrap. Without kek-current, KEKFile (or
// the configured label) is current, as before rotations existed.
//
// Jobs. A KEK rotation creates the next version, records it in
// kek-current, makes it current in the running key store (seal.Keys.UseKEK)
// and rewraps every keyset in the background (seal.Keys.RotateKEK). A
// subject key roll adds a new primary key per subject (seal.Keys.Roll),
// re-seals the subject's stored values under it (store.Store.Reseal), and,
// once no cached keyset can still seal under the old key, walks the data
// again and retires the old keys (seal.Keys.Retire). Both run online; an
// interrupted job is resumed on the next start.

// kekCurrentFile names the current KEK version in KeyDir.
const kekCurrentFile = "kek-current"

var kekVersionFile = regexp.MustCompile(`^kek-([0-9]{1,9})\.json$`)

// kekRing closes every HSM KEK the hub opened.
type kekRing struct {
	mu      sync.Mutex
	closers []io.Closer
}

func (r *kekRing) add(c io.Closer) {
	r.mu.Lock()
	r.closers = append(r.closers, c)
	r.mu.Unlock()
}

func (r *kekRing) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errList []error
	for _, c := range r.closers {
		errList = append(errList, c.Close())
	}
	r.closers = nil
	return errors.Join(errList...)
}

// readKEKCurrent returns the content of kek-current, or "" if there is none.
func readKEKCurrent(keyDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(keyDir, kekCurrentFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("hub: read %s: %w", kekCurrentFile, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// writeKEKCurrent replaces kek-current atomically (0600).
func writeKEKCurrent(keyDir, name string) error {
	tmp, err := os.CreateTemp(keyDir, ".kek-current-*")
	if err != nil {
		return fmt.Errorf("hub: write %s: %w", kekCurrentFile, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(name + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(keyDir, kekCurrentFile))
	}
	if err != nil {
		return fmt.Errorf("hub: write %s: %w", kekCurrentFile, err)
	}
	if d, err := os.Open(keyDir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// labelVersion parses "<base>-<n>" (n >= 2), or base itself as version 1.
func labelVersion(base, label string) (int, bool) {
	if label == base {
		return 1, true
	}
	rest, ok := strings.CutPrefix(label, base+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 2 || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}

func labelFor(base string, n int) string {
	if n <= 1 {
		return base
	}
	return base + "-" + strconv.Itoa(n)
}

// openKEKs opens the current KEK and every earlier version it finds. cfg
// has KeyDir and KEKFile set.
func (h *Hub) openKEKs(cfg Config) (cur seal.KEK, old []seal.KEK, current string, err error) {
	ring := &kekRing{}
	h.kek = ring
	current, err = readKEKCurrent(cfg.KeyDir)
	if err != nil {
		return nil, nil, "", err
	}
	seen := map[string]bool{}
	addOld := func(k seal.KEK) {
		if !seen[k.ID()] {
			seen[k.ID()] = true
			old = append(old, k)
		}
	}
	if cfg.HSM != nil {
		base := cfg.HSM.KeyLabel
		label, n := base, 1
		if l, ok := strings.CutPrefix(current, "pkcs11:"); ok {
			v, ok := labelVersion(base, l)
			if !ok {
				return nil, nil, "", errs.E(errs.Invalid, fmt.Sprintf("hub: %s names HSM key %q, which is not a version of the configured label %q", kekCurrentFile, l, base))
			}
			label, n = l, v
		}
		hc := *cfg.HSM
		hc.KeyLabel = label
		k, err := pkcs11.Open(hc)
		if err != nil {
			return nil, nil, "", err
		}
		ring.add(k)
		cur, current = k, "pkcs11:"+label
		seen[k.ID()] = true
		for v := 1; v < n; v++ {
			hc.KeyLabel, hc.Existing = labelFor(base, v), true
			k, err := pkcs11.Open(hc)
			if errs.Is(errs.NotFound, err) {
				continue // removed after its rotation finished
			}
			if err != nil {
				return nil, nil, "", err
			}
			ring.add(k)
			addOld(k)
		}
	} else {
		path := cfg.KEKFile
		if current != "" {
			if !kekVersionFile.MatchString(current) && current != filepath.Base(cfg.KEKFile) {
				return nil, nil, "", errs.E(errs.Invalid, fmt.Sprintf("hub: %s names %q, which is not a KEK file of %s", kekCurrentFile, current, cfg.KeyDir))
			}
			if current != filepath.Base(cfg.KEKFile) {
				path = filepath.Join(cfg.KeyDir, current)
			}
		}
		var k *seal.FileKEK
		if path == cfg.KEKFile {
			k, err = seal.LoadOrCreateFileKEK(path)
		} else {
			// Named by kek-current: it must exist; a fresh key would
			// unwrap nothing.
			k, err = seal.LoadFileKEK(path)
		}
		if err != nil {
			return nil, nil, "", err
		}
		cur, current = k, filepath.Base(path)
		seen[k.ID()] = true
	}
	// Every file version found, whichever KEK is current (also when moving
	// from the file KEK to an HSM).
	files := []string{cfg.KEKFile}
	if m, err := filepath.Glob(filepath.Join(cfg.KeyDir, "kek-*.json")); err == nil {
		slices.Sort(m)
		files = append(files, m...)
	}
	files = append(files, cfg.OldKEKFiles...)
	for _, f := range files {
		k, err := seal.LoadFileKEK(f)
		if errors.Is(err, fs.ErrNotExist) {
			if slices.Contains(cfg.OldKEKFiles, f) {
				h.cfg.Log.Warn("hub: an old KEK file is configured but missing; keysets still wrapped under it cannot be opened", "file", f)
			}
			continue
		}
		if err != nil {
			return nil, nil, "", err
		}
		addOld(k)
	}
	return cur, old, current, nil
}

// rotator runs the key jobs. It implements api.KeyJobs.
type rotator struct {
	h      *Hub
	keyDir string
	hsm    *pkcs11.Config
	ring   *kekRing

	mu      sync.Mutex
	current string          // the content of kek-current
	ctx     context.Context // the hub's run context; nil before Run
	wg      sync.WaitGroup
	kekJob  *api.KeyJob // the last KEK rotation
	rollJob *api.KeyJob // the last subject key roll
}

const (
	jobRunning = "running"
	jobDone    = "done"
	jobFailed  = "failed"
)

// start lets jobs run under ctx, and resumes jobs an earlier run left
// unfinished: keysets not under the current KEK, and rolls whose old keys
// are not retired.
func (r *rotator) start(ctx context.Context) {
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		st, err := r.h.Keys.Status(ctx)
		if err != nil {
			r.h.cfg.Log.Error("hub: reading the key store status failed; unfinished key jobs are not resumed", "err", err)
			return
		}
		for id, n := range st.ByKEK {
			if id != st.Current && n > 0 {
				r.h.cfg.Log.Info("hub: resuming the rewrap of keysets under an earlier KEK", "kek", st.Current)
				r.mu.Lock()
				r.launchKEK(st.Current)
				r.mu.Unlock()
				break
			}
		}
		if st.Rolling > 0 {
			var subjects []registry.SubjectID
			after := registry.SubjectID("")
			for {
				page, err := r.h.Keys.List(ctx, after, 1000, true)
				if err != nil {
					r.h.cfg.Log.Error("hub: listing unfinished key rolls failed", "err", err)
					return
				}
				if len(page) == 0 {
					break
				}
				for _, i := range page {
					subjects = append(subjects, i.Subject)
				}
				after = page[len(page)-1].Subject
			}
			if len(subjects) > 0 {
				r.h.cfg.Log.Info("hub: resuming unfinished subject key rolls", "subjects", len(subjects))
				if _, err := r.Roll(ctx, subjects, false); err != nil && ctx.Err() == nil {
					r.h.cfg.Log.Error("hub: resuming subject key rolls failed", "err", err)
				}
			}
		}
	}()
}

// wait returns when every job has stopped (after the run context ends).
func (r *rotator) wait() { r.wg.Wait() }

// Jobs returns the last KEK rotation and the last roll, if any.
func (r *rotator) Jobs() []api.KeyJob {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []api.KeyJob
	for _, j := range []*api.KeyJob{r.kekJob, r.rollJob} {
		if j != nil {
			out = append(out, *j)
		}
	}
	return out
}

func (r *rotator) running() error {
	if r.ctx == nil || r.ctx.Err() != nil {
		return errs.E(errs.Unavailable, "the hub is not running")
	}
	return nil
}

// RotateKEK creates the next KEK version, makes it current and starts
// rewrapping every keyset under it.
func (r *rotator) RotateKEK(ctx context.Context) (api.KeyJob, error) {
	const op errs.Op = "hub.RotateKEK"
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.running(); err != nil {
		return api.KeyJob{}, errs.E(op, err)
	}
	if r.kekJob != nil && r.kekJob.State == jobRunning {
		return api.KeyJob{}, errs.E(op, errs.Conflict, "a KEK rotation is running; wait for it to finish (custos keys status)")
	}
	kek, name, err := r.nextKEK()
	if err != nil {
		return api.KeyJob{}, errs.E(op, err)
	}
	// Record the new version before using it: after a crash the hub
	// starts with it current (and loads the earlier ones as old).
	if err := writeKEKCurrent(r.keyDir, name); err != nil {
		if c, ok := kek.(io.Closer); ok {
			c.Close()
		}
		return api.KeyJob{}, errs.E(op, err)
	}
	r.current = name
	if c, ok := kek.(io.Closer); ok {
		r.ring.add(c)
	}
	if err := r.h.Keys.UseKEK(kek); err != nil {
		return api.KeyJob{}, errs.E(op, err)
	}
	r.h.cfg.Log.Info("hub: KEK rotated; rewrapping keysets", "kek", kek.ID())
	return *r.launchKEK(kek.ID()), nil
}

// launchKEK starts rewrapping every keyset under the current KEK. r.mu is held.
func (r *rotator) launchKEK(kekID string) *api.KeyJob {
	job := &api.KeyJob{Kind: "rotate-kek", State: jobRunning, Phase: "rewrap", Started: r.h.cfg.Now().UTC(), KEK: kekID}
	r.kekJob = job
	ctx := r.ctx
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := r.h.Keys.RotateKEK(ctx, func(done, total int) {
			r.mu.Lock()
			job.Done, job.Total = done, total
			r.mu.Unlock()
		})
		r.finish(job, err)
		if err == nil {
			r.h.cfg.Log.Info("hub: every keyset is wrapped under the current KEK; earlier KEK versions can be removed", "kek", kekID)
		}
	}()
	return job
}

func (r *rotator) finish(job *api.KeyJob, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	job.Finished = r.h.cfg.Now().UTC()
	job.Phase = ""
	if err != nil {
		job.State = jobFailed
		job.Error = userError(err)
		r.h.cfg.Log.Error("hub: key job failed", "kind", job.Kind, "err", err)
		return
	}
	job.State = jobDone
}

// userError is an error message fit for the operator: classified errors
// say what went wrong; others only that something did.
func userError(err error) string {
	if errors.Is(err, context.Canceled) {
		return "interrupted: the hub stopped; the job resumes on the next start"
	}
	if k := errs.KindOf(err); k == errs.Other {
		return "internal error; the hub's log has details"
	}
	return err.Error()
}

// nextKEK creates the next KEK version and returns it with the name to
// record in kek-current.
func (r *rotator) nextKEK() (seal.KEK, string, error) {
	if r.hsm != nil {
		base := r.hsm.KeyLabel
		n := 1
		if l, ok := strings.CutPrefix(r.current, "pkcs11:"); ok {
			if v, ok := labelVersion(base, l); ok {
				n = v
			}
		}
		hc := *r.hsm
		hc.KeyLabel = labelFor(base, n+1)
		k, err := pkcs11.Open(hc)
		if err != nil {
			return nil, "", err
		}
		return k, "pkcs11:" + hc.KeyLabel, nil
	}
	n := 1
	ents, err := os.ReadDir(r.keyDir)
	if err != nil {
		return nil, "", fmt.Errorf("hub: list %s: %w", r.keyDir, err)
	}
	for _, e := range ents {
		if m := kekVersionFile.FindStringSubmatch(e.Name()); m != nil {
			if v, _ := strconv.Atoi(m[1]); v > n {
				n = v
			}
		}
	}
	name := fmt.Sprintf("kek-%d.json", n+1)
	k, err := seal.LoadOrCreateFileKEK(filepath.Join(r.keyDir, name))
	if err != nil {
		return nil, "", err
	}
	return k, name, nil
}

// maxRollSubjects bounds the subjects named in one roll request.
const maxRollSubjects = 10000

// rollGroup is the number of subjects rolled, re-sealed and retired together.
const rollGroup = 64

// Roll starts rolling the keys of the given subjects (or of every subject
// with all): a new primary key each, their data re-sealed under it, then
// the old keys retired. A subject whose roll was interrupted is finished
// without another new key.
func (r *rotator) Roll(ctx context.Context, subjects []registry.SubjectID, all bool) (api.KeyJob, error) {
	const op errs.Op = "hub.Roll"
	if all == (len(subjects) > 0) {
		return api.KeyJob{}, errs.E(op, errs.Invalid, "name subjects or choose all, not both or neither")
	}
	if len(subjects) > maxRollSubjects {
		return api.KeyJob{}, errs.E(op, errs.Invalid, fmt.Sprintf("at most %d subjects per request; use all", maxRollSubjects))
	}
	for _, s := range subjects {
		if !registry.ValidID(string(s)) {
			return api.KeyJob{}, errs.E(op, errs.Invalid, "malformed subject ID")
		}
		if _, err := r.h.Keys.Info(ctx, s); err != nil {
			if errors.Is(err, seal.ErrNoKey) || errors.Is(err, seal.ErrErased) {
				return api.KeyJob{}, errs.E(op, errs.NotFound, fmt.Sprintf("subject %s has no key to roll", s))
			}
			return api.KeyJob{}, errs.E(op, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.running(); err != nil {
		return api.KeyJob{}, errs.E(op, err)
	}
	if r.rollJob != nil && r.rollJob.State == jobRunning {
		return api.KeyJob{}, errs.E(op, errs.Conflict, "a key roll is running; wait for it to finish (custos keys status)")
	}
	job := &api.KeyJob{Kind: "roll", State: jobRunning, Phase: "list", Started: r.h.cfg.Now().UTC(), Total: len(subjects)}
	r.rollJob = job
	jctx := r.ctx
	subjects = slices.Clone(subjects)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.finish(job, r.runRoll(jctx, job, subjects, all))
	}()
	return *job, nil
}

func (r *rotator) update(fn func()) {
	r.mu.Lock()
	fn()
	r.mu.Unlock()
}

func (r *rotator) runRoll(ctx context.Context, job *api.KeyJob, subjects []registry.SubjectID, all bool) error {
	if all {
		after := registry.SubjectID("")
		for {
			page, err := r.h.Keys.List(ctx, after, 1000, false)
			if err != nil {
				return err
			}
			if len(page) == 0 {
				break
			}
			for _, i := range page {
				subjects = append(subjects, i.Subject)
			}
			after = page[len(page)-1].Subject
			r.update(func() { job.Total = len(subjects) })
		}
	}
	var stuck []registry.SubjectID
	for len(subjects) > 0 {
		n := min(len(subjects), rollGroup)
		group := subjects[:n]
		subjects = subjects[n:]
		s, err := r.rollGroup(ctx, job, group)
		if err != nil {
			return err
		}
		stuck = append(stuck, s...)
	}
	if len(stuck) > 0 {
		return errs.E(errs.Conflict, fmt.Sprintf("%d subjects kept data under their old keys while being re-sealed, so their old keys were not retired (first: %s); roll them again", len(stuck), stuck[0]))
	}
	return nil
}

// rolling is one subject's state in a roll.
type rolling struct {
	info seal.KeyInfo
}

// rollGroup rolls, re-seals and retires a group of subjects. It returns the
// subjects whose data kept appearing under old keys (not retired).
func (r *rotator) rollGroup(ctx context.Context, job *api.KeyJob, group []registry.SubjectID) ([]registry.SubjectID, error) {
	keys := r.h.Keys
	r.update(func() { job.Phase = "roll" })
	var rs []*rolling
	var lastRoll time.Time
	for _, s := range group {
		info, err := keys.Info(ctx, s)
		if err == nil && !info.Rolling() {
			if _, err = keys.Roll(ctx, s); err == nil {
				info, err = keys.Info(ctx, s)
			}
		}
		if errors.Is(err, seal.ErrNoKey) || errors.Is(err, seal.ErrErased) {
			r.update(func() { job.Skipped++; job.Done++ })
			continue // erased meanwhile: nothing left to roll
		}
		if err != nil {
			return nil, err
		}
		if info.PrimarySince.After(lastRoll) {
			lastRoll = info.PrimarySince
		}
		rs = append(rs, &rolling{info: info})
	}
	r.update(func() { job.Phase = "re-encrypt" })
	for _, x := range rs {
		if _, err := r.reseal(ctx, job, x.info, true); err != nil {
			return nil, err
		}
	}
	// Until CacheTTL after the roll, a keyset cached before it may still
	// seal under the old primary: wait, then walk again to catch those.
	if wait := lastRoll.Add(keys.CacheTTL()).Sub(r.h.cfg.Now()); wait > 0 {
		r.update(func() { job.Phase = "wait" })
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait + 50*time.Millisecond):
		}
	}
	r.update(func() { job.Phase = "verify" })
	var stuck []registry.SubjectID
	for _, x := range rs {
		clean := false
		for range 3 {
			st, err := r.reseal(ctx, job, x.info, false)
			if err != nil {
				return nil, err
			}
			if st.Replaced == 0 && st.Raced == 0 {
				clean = true
				break
			}
		}
		if !clean {
			stuck = append(stuck, x.info.Subject)
			r.update(func() { job.Done++ })
			continue
		}
		if err := r.retire(ctx, x.info.Subject); err != nil {
			if errors.Is(err, seal.ErrNoKey) || errors.Is(err, seal.ErrErased) {
				r.update(func() { job.Skipped++; job.Done++ })
				continue
			}
			return nil, err
		}
		r.update(func() { job.Retired++; job.Done++ })
	}
	return stuck, nil
}

// retire retires the subject's old keys, retrying while Retire refuses
// because the primary is younger than the cache TTL (its clock may differ
// a little from ours).
func (r *rotator) retire(ctx context.Context, s registry.SubjectID) error {
	for attempt := 0; ; attempt++ {
		err := r.h.Keys.Retire(ctx, s)
		if err == nil || !errs.Is(errs.Conflict, err) || attempt >= 20 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(max(r.h.Keys.CacheTTL()/4, 50*time.Millisecond)):
		}
	}
}

// reseal re-seals under the primary key every stored value of the subject
// that is under another key. countUnreadable counts values that cannot be
// opened in the job (on the first walk only, so none is counted twice).
func (r *rotator) reseal(ctx context.Context, job *api.KeyJob, info seal.KeyInfo, countUnreadable bool) (store.ResealStats, error) {
	keys := r.h.Keys
	st, err := r.h.Store.Reseal(ctx, info.Tenant, info.Subject, func(v *store.Sealed) ([]byte, error) {
		if id, ok := seal.KeyID(v.Data); ok && id == info.Primary {
			return nil, nil
		}
		ad := sealedAD(v)
		pt, err := keys.Open(ctx, v.Subject, v.Data, ad)
		if err != nil {
			if errors.Is(err, seal.ErrErased) || errs.Is(errs.Integrity, err) {
				// Unreadable already (or stored in plaintext by a
				// benchmark hub): nothing to move.
				if countUnreadable {
					r.update(func() { job.Unreadable++ })
				}
				return nil, nil
			}
			return nil, err
		}
		return keys.Seal(ctx, v.Subject, pt, ad)
	})
	r.update(func() { job.Resealed += st.Replaced })
	return st, err
}

// sealedAD is the associated data a stored value was sealed with.
func sealedAD(v *store.Sealed) []byte {
	switch v.Kind {
	case store.SealedProfile:
		return registry.ProfileAD(v.Tenant, v.Subject)
	case store.SealedLanding:
		return series.LandingAD(v.Tenant, v.Stream)
	case store.SealedChunk:
		b := v.MinTime / series.BucketMS
		if v.MinTime%series.BucketMS < 0 {
			b--
		}
		return series.ChunkAD(v.Tenant, v.Stream, b*series.BucketMS)
	case store.SealedRollup:
		return series.RollupAD(v.Tenant, v.Stream, v.Res, v.Period)
	case store.SealedQuarantine:
		return series.QuarantineAD(v.Tenant, v.Stream, v.Connector, v.Batch, v.Seq)
	case store.SealedPlausibility:
		return series.PlausibilityStateAD(v.Tenant, v.Stream)
	case store.SealedCorrections:
		return series.CorrectionsAD(v.Tenant, v.Request, v.Seq)
	}
	return nil
}
