package seal

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// Sentinel errors. Compare with errors.Is.
var (
	// ErrErased means the subject's key (or the key that sealed this
	// ciphertext) is destroyed: the data is erased and cannot come back.
	// Callers should treat the data as gone (skip it, report it erased),
	// never retry. Kind NotFound.
	ErrErased = errs.E(errs.NotFound, "the subject's key is destroyed: data erased")
	// ErrNoKey means the subject has never had a key: call Create first.
	// Kind NotFound.
	ErrNoKey = errs.E(errs.NotFound, "the subject has no key")
)

// Config configures the key store.
type Config struct {
	// Path is the SQLite key store file, e.g. <data dir>/keys.db. Used when
	// DSN is empty. Keep it apart from the data store so that the two are
	// backed up separately.
	Path string
	// DSN is a PostgreSQL connection string; when set, the key store lives
	// in PostgreSQL, in its own schema.
	DSN string
	// Schema is the PostgreSQL schema for the key store. Default "custos_keys".
	Schema string
	// KEK is the current key-encryption key: new and rewrapped keysets are
	// wrapped under it. Must be non-nil.
	KEK KEK
	// Old are earlier KEKs still able to unwrap, during a rotation. Their
	// IDs must differ from each other and from KEK's.
	Old []KEK
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// CacheTTL is how long an unwrapped primitive is cached: an erasure on
	// another hub replica takes effect within it. Default (0) 1 s; negative
	// disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached primitives. Default 65536.
	CacheSize int
}

// Keys is the key store: one wrapped keyset per data subject. It is safe for
// concurrent use, including by several hub replicas on one PostgreSQL
// database: every change to a keyset is a compare-and-swap on its row.
type Keys struct {
	db   *sql.DB
	pg   bool
	path string
	now  func() time.Time

	kmu  sync.RWMutex   // guards kek and keks (UseKEK swaps them online)
	kek  KEK            // the current KEK
	keks map[string]KEK // by ID: kek and every earlier one
	ttl  time.Duration
	max  int

	mu    sync.RWMutex
	cache map[registry.SubjectID]*entry
	gen   uint64 // bumped by every eviction; a load that saw another gen is not cached
}

// entry is an unwrapped keyset's primitive and what Open needs to know
// about it.
type entry struct {
	aead    tink.AEAD
	tenant  registry.TenantID
	keyIDs  []uint32
	primary uint32
	expires time.Time
}

func (e *entry) has(id uint32) bool { return slices.Contains(e.keyIDs, id) }

// Open opens (creating if needed) the key store.
func Open(ctx context.Context, cfg Config) (*Keys, error) {
	const op errs.Op = "seal.Open"
	if cfg.KEK == nil {
		return nil, errs.E(op, errs.Invalid, "no KEK configured")
	}
	k := &Keys{
		kek:   cfg.KEK,
		keks:  map[string]KEK{},
		now:   cfg.Now,
		ttl:   cfg.CacheTTL,
		max:   cfg.CacheSize,
		cache: map[registry.SubjectID]*entry{},
		path:  cfg.Path,
	}
	if k.now == nil {
		k.now = time.Now
	}
	if k.ttl == 0 {
		k.ttl = time.Second
	}
	if k.max <= 0 {
		k.max = 65536
	}
	for _, kek := range append([]KEK{cfg.KEK}, cfg.Old...) {
		if kek == nil || kek.ID() == "" {
			return nil, errs.E(op, errs.Invalid, "a KEK in Old is nil or has no ID")
		}
		if _, dup := k.keks[kek.ID()]; dup {
			return nil, errs.E(op, errs.Invalid, fmt.Sprintf("KEK ID %s configured twice", kek.ID()))
		}
		k.keks[kek.ID()] = kek
	}
	var err error
	if cfg.DSN != "" {
		k.pg = true
		k.db, err = openPostgres(ctx, cfg.DSN, cfg.Schema)
	} else {
		k.db, err = openSQLite(cfg.Path)
	}
	if err != nil {
		return nil, errs.E(op, err)
	}
	if err := k.migrate(ctx); err != nil {
		k.db.Close()
		return nil, errs.E(op, err)
	}
	return k, nil
}

// Close closes the key store and drops every cached primitive.
func (k *Keys) Close() error {
	k.mu.Lock()
	k.cache = map[registry.SubjectID]*entry{}
	k.gen++
	k.mu.Unlock()
	return k.db.Close()
}

// wrapAD is the associated data a subject's keyset is wrapped with: it binds
// the wrapped keyset to its tenant and subject. Length-prefixed, so no two
// (tenant, subject) pairs share an encoding.
func wrapAD(t registry.TenantID, s registry.SubjectID) []byte {
	const label = "custos/seal/keyset/v1"
	b := make([]byte, 0, len(label)+8+len(t)+len(s))
	b = append(b, label...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(t)))
	b = append(b, t...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	b = append(b, s...)
	return b
}

// current returns the current KEK.
func (k *Keys) current() KEK {
	k.kmu.RLock()
	defer k.kmu.RUnlock()
	return k.kek
}

// UseKEK makes kek the current KEK, online: keysets created or rewritten
// from now on are wrapped under it, while every KEK used before stays able
// to unwrap. It is safe to call concurrently with every other method.
// Follow it with RotateKEK to rewrap the existing keysets. Making an
// earlier KEK current again is allowed (a rollback): a KEK whose ID is
// known already makes the known instance current.
func (k *Keys) UseKEK(kek KEK) error {
	const op errs.Op = "seal.UseKEK"
	if kek == nil || kek.ID() == "" {
		return errs.E(op, errs.Invalid, "the new KEK is nil or has no ID")
	}
	k.kmu.Lock()
	defer k.kmu.Unlock()
	if prev, ok := k.keks[kek.ID()]; ok {
		kek = prev
	}
	keks := make(map[string]KEK, len(k.keks)+1)
	for id, v := range k.keks {
		keks[id] = v
	}
	keks[kek.ID()] = kek
	k.kek, k.keks = kek, keks
	return nil
}

// KEKs returns the IDs of the KEKs this key store can unwrap with, the
// current one first.
func (k *Keys) KEKs() []string {
	k.kmu.RLock()
	defer k.kmu.RUnlock()
	ids := []string{k.kek.ID()}
	for id := range k.keks {
		if id != k.kek.ID() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids[1:])
	return ids
}

// wrap encrypts h under the current KEK and returns the ID of the KEK it
// used, to be stored with the wrapped keyset.
func (k *Keys) wrap(h *keyset.Handle, t registry.TenantID, s registry.SubjectID) ([]byte, string, error) {
	kek := k.current()
	var buf bytes.Buffer
	rec := &recordingKEK{KEK: kek}
	if err := h.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), rec, wrapAD(t, s)); err != nil {
		if rec.err != nil && errs.Is(errs.Unavailable, rec.err) {
			return nil, "", errs.E(errs.Unavailable, fmt.Errorf("wrap keyset of %s under KEK %s: %w", s, kek.ID(), rec.err))
		}
		return nil, "", fmt.Errorf("wrap keyset of %s under KEK %s failed", s, kek.ID())
	}
	return buf.Bytes(), kek.ID(), nil
}

// unwrap decrypts a stored keyset. A keyset that does not authenticate
// (moved to another row, tampered with, or wrapped under another KEK with
// the same ID) is an Integrity error; a KEK that cannot be reached is
// Unavailable; a KEK that is not configured is Unavailable too, with a
// message saying to configure it.
func (k *Keys) unwrap(r *row, s registry.SubjectID) (*keyset.Handle, error) {
	k.kmu.RLock()
	kek, ok := k.keks[r.kekID]
	k.kmu.RUnlock()
	if !ok {
		return nil, errs.E(errs.Unavailable, fmt.Sprintf("keyset of %s is wrapped under KEK %s, which is not configured (add it to the old KEKs)", s, r.kekID))
	}
	rec := &recordingKEK{KEK: kek}
	h, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(r.wrapped)), rec, wrapAD(r.tenant, s))
	if err != nil {
		if rec.err != nil && errs.Is(errs.Unavailable, rec.err) {
			return nil, errs.E(errs.Unavailable, fmt.Errorf("unwrap keyset of %s with KEK %s: %w", s, r.kekID, rec.err))
		}
		return nil, errs.E(errs.Integrity, fmt.Sprintf("keyset of %s does not unwrap under KEK %s: it was tampered with or belongs to another subject", s, r.kekID))
	}
	return h, nil
}

// recordingKEK keeps the KEK's own error, which Tink flattens into a string,
// so that an unreachable HSM is not reported as a corrupt keyset.
type recordingKEK struct {
	KEK
	err error
}

func (r *recordingKEK) Encrypt(p, ad []byte) ([]byte, error) {
	c, err := r.KEK.Encrypt(p, ad)
	r.err = err
	return c, err
}

func (r *recordingKEK) Decrypt(c, ad []byte) ([]byte, error) {
	p, err := r.KEK.Decrypt(c, ad)
	r.err = err
	return p, err
}

// row is a subject_keys row.
type row struct {
	tenant    registry.TenantID
	kekID     string
	wrapped   []byte
	primaryMS int64
}

func (k *Keys) readRow(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, s registry.SubjectID) (*row, error) {
	r := &row{}
	err := q.QueryRowContext(ctx, k.q(`SELECT tenant_id, kek_id, wrapped, primary_ms FROM subject_keys WHERE subject_id = ?`), string(s)).
		Scan(&r.tenant, &r.kekID, &r.wrapped, &r.primaryMS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, errs.E(errs.Unavailable, fmt.Errorf("read keyset of %s: %w", s, err))
	}
	return r, nil
}

func checkIDs(t registry.TenantID, s registry.SubjectID) error {
	if t != "" && !registry.ValidID(string(t)) {
		return errs.E(errs.Invalid, "malformed tenant ID")
	}
	if !registry.ValidID(string(s)) {
		return errs.E(errs.Invalid, "malformed subject ID")
	}
	return nil
}

func keysetInfo(h *keyset.Handle) (primary uint32, ids []uint32) {
	info := h.KeysetInfo()
	for _, ki := range info.GetKeyInfo() {
		ids = append(ids, ki.GetKeyId())
	}
	return info.GetPrimaryKeyId(), ids
}

// Create makes a keyset (Tink AES256-GCM, one key) for a subject. It
// returns an Exists error if the subject has one. A subject whose keyset
// was destroyed may get a new one; data sealed under the old keyset stays
// erased.
func (k *Keys) Create(ctx context.Context, t registry.TenantID, s registry.SubjectID) error {
	const op errs.Op = "seal.Create"
	if t == "" {
		return errs.E(op, errs.Invalid, "no tenant given")
	}
	if err := checkIDs(t, s); err != nil {
		return errs.E(op, err)
	}
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return errs.E(op, fmt.Errorf("generate keyset: %w", err))
	}
	wrapped, kekID, err := k.wrap(h, t, s)
	if err != nil {
		return errs.E(op, err)
	}
	primary, ids := keysetInfo(h)
	now := k.now().UnixMilli()
	res, err := k.db.ExecContext(ctx, k.q(`INSERT INTO subject_keys
		(subject_id, tenant_id, kek_id, wrapped, created_ms, updated_ms, primary_key_id, primary_ms, key_count, key_ids)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (subject_id) DO NOTHING`),
		string(s), string(t), kekID, wrapped, now, now, int64(primary), now, len(ids), formatKeyIDs(ids))
	if err != nil {
		return errs.E(op, errs.Unavailable, fmt.Errorf("store keyset of %s: %w", s, err))
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return errs.E(op, errs.Exists, fmt.Sprintf("subject %s already has a keyset", s))
	}
	return nil
}

// Seal encrypts plaintext under the subject's primary key, authenticating
// ad. The ciphertext starts with the key's Tink prefix (see KeyID). ad
// should bind the ciphertext to where it is stored (stream, time range), so
// that it cannot be moved unnoticed.
func (k *Keys) Seal(ctx context.Context, s registry.SubjectID, plaintext, ad []byte) ([]byte, error) {
	const op errs.Op = "seal.Seal"
	e, _, err := k.primitive(ctx, s, false)
	if err != nil {
		return nil, errs.E(op, err)
	}
	c, err := e.aead.Encrypt(plaintext, ad)
	if err != nil {
		return nil, errs.E(op, fmt.Errorf("seal for %s: %w", s, err))
	}
	return c, nil
}

// Open decrypts a ciphertext made by Seal (or by the AEAD primitive) for
// the subject. It returns ErrErased if the subject's keyset, or the key
// that sealed the ciphertext, was destroyed (by Destroy or Retire) or never
// existed, and an Integrity error if the ciphertext or ad was altered or
// belongs to another subject.
func (k *Keys) Open(ctx context.Context, s registry.SubjectID, ciphertext, ad []byte) ([]byte, error) {
	const op errs.Op = "seal.Open"
	e, cached, err := k.primitive(ctx, s, true)
	if err != nil {
		return nil, errs.E(op, err)
	}
	id, prefixed := KeyID(ciphertext)
	if prefixed && !e.has(id) && cached {
		// The key may be newer than our cached keyset (rolled on another
		// replica): look again.
		k.evict(s)
		if e, _, err = k.primitive(ctx, s, true); err != nil {
			return nil, errs.E(op, err)
		}
	}
	p, err := e.aead.Decrypt(ciphertext, ad)
	if err == nil {
		return p, nil
	}
	if prefixed && !e.has(id) {
		destroyed, derr := k.keyDestroyed(ctx, s, id)
		if derr != nil {
			return nil, errs.E(op, derr)
		}
		if destroyed {
			return nil, errs.E(op, ErrErased)
		}
	}
	return nil, errs.E(op, errs.Integrity, fmt.Sprintf("ciphertext for %s does not authenticate: altered, wrong associated data, or another subject's", s))
}

// AEAD returns the subject's primitive for hot paths that seal many values
// in a row. Callers MUST NOT keep it for longer than one batch (and never
// beyond Config.CacheTTL): an erasure is only guaranteed to stop a primitive
// that is asked for again. Use Keys.Open to decrypt: it also finds keys
// rolled on other replicas and reports erased data as ErrErased.
func (k *Keys) AEAD(ctx context.Context, s registry.SubjectID) (tink.AEAD, error) {
	e, _, err := k.primitive(ctx, s, false)
	if err != nil {
		return nil, errs.E(errs.Op("seal.AEAD"), err)
	}
	return e.aead, nil
}

// KeyID reports which key of a keyset produced a ciphertext, from its Tink
// output prefix (0x01 and the big-endian key ID), so that a re-encryption
// job can find data under old keys. ok is false for a ciphertext without
// the prefix.
func KeyID(ciphertext []byte) (id uint32, ok bool) {
	if len(ciphertext) < 5 || ciphertext[0] != 0x01 {
		return 0, false
	}
	return binary.BigEndian.Uint32(ciphertext[1:5]), true
}

// primitive returns the subject's cached entry or loads it. forOpen makes a
// missing subject ErrErased (its data cannot be read either way); otherwise
// a subject that never had a key is ErrNoKey.
func (k *Keys) primitive(ctx context.Context, s registry.SubjectID, forOpen bool) (e *entry, cached bool, err error) {
	now := k.now()
	if k.ttl > 0 {
		k.mu.RLock()
		e = k.cache[s]
		k.mu.RUnlock()
		if e != nil && now.Before(e.expires) {
			return e, true, nil
		}
	}
	if err := checkIDs("", s); err != nil {
		return nil, false, err
	}
	k.mu.RLock()
	gen := k.gen
	k.mu.RUnlock()
	r, err := k.readRow(ctx, k.db, s)
	if err != nil {
		return nil, false, err
	}
	if r == nil {
		if forOpen {
			return nil, false, ErrErased
		}
		erased, err := k.erased(ctx, s)
		if err != nil {
			return nil, false, err
		}
		if erased {
			return nil, false, ErrErased
		}
		return nil, false, ErrNoKey
	}
	h, err := k.unwrap(r, s)
	if err != nil {
		return nil, false, err
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, false, errs.E(errs.Integrity, fmt.Errorf("keyset of %s: %w", s, err))
	}
	primary, ids := keysetInfo(h)
	e = &entry{aead: a, tenant: r.tenant, keyIDs: ids, primary: primary, expires: now.Add(k.ttl)}
	if k.ttl > 0 {
		k.mu.Lock()
		if k.gen == gen { // no eviction raced with this load
			if len(k.cache) >= k.max {
				k.shrinkLocked(now)
			}
			k.cache[s] = e
		}
		k.mu.Unlock()
	}
	return e, false, nil
}

// shrinkLocked drops expired entries and, if the cache is still full, an
// arbitrary eighth of it.
func (k *Keys) shrinkLocked(now time.Time) {
	for s, e := range k.cache {
		if !now.Before(e.expires) {
			delete(k.cache, s)
		}
	}
	drop := len(k.cache) - k.max + k.max/8 + 1
	for s := range k.cache {
		if drop <= 0 {
			break
		}
		delete(k.cache, s)
		drop--
	}
}

func (k *Keys) evict(s registry.SubjectID) {
	k.mu.Lock()
	delete(k.cache, s)
	k.gen++
	k.mu.Unlock()
}

// erased reports whether the subject's keyset was destroyed.
func (k *Keys) erased(ctx context.Context, s registry.SubjectID) (bool, error) {
	var n int
	err := k.db.QueryRowContext(ctx, k.q(`SELECT COUNT(*) FROM destroyed WHERE subject_id = ? AND reason = 'erase'`), string(s)).Scan(&n)
	if err != nil {
		return false, errs.E(errs.Unavailable, fmt.Errorf("read destruction records of %s: %w", s, err))
	}
	return n > 0, nil
}

// keyDestroyed reports whether key id of the subject was destroyed by
// Destroy or Retire.
func (k *Keys) keyDestroyed(ctx context.Context, s registry.SubjectID, id uint32) (bool, error) {
	rows, err := k.db.QueryContext(ctx, k.q(`SELECT key_ids FROM destroyed WHERE subject_id = ?`), string(s))
	if err != nil {
		return false, errs.E(errs.Unavailable, fmt.Errorf("read destruction records of %s: %w", s, err))
	}
	defer rows.Close()
	for rows.Next() {
		var list string
		if err := rows.Scan(&list); err != nil {
			return false, errs.E(errs.Unavailable, err)
		}
		if slices.Contains(parseKeyIDs(list), id) {
			return true, nil
		}
	}
	if err := rows.Err(); err != nil {
		return false, errs.E(errs.Unavailable, err)
	}
	return false, nil
}
