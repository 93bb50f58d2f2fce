package seal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// Evidence records a destruction of keys. It holds no key material.
type Evidence struct {
	Subject     registry.SubjectID `json:"subject"`
	Tenant      registry.TenantID  `json:"tenant"`
	KeyIDs      []uint32           `json:"key_ids"`
	KEK         string             `json:"kek"` // the KEK the destroyed keyset was wrapped under
	DestroyedAt time.Time          `json:"destroyed_at"`
}

// Destroy crypto-shreds a subject: it deletes the wrapped keyset so that it
// cannot be recovered from the live key store, evicts it from the cache and
// returns the evidence. It needs no KEK, so it works even when the KEK is
// unavailable. Destroying an already destroyed subject returns the first
// evidence again; a subject that never had a key is ErrNoKey.
//
// If the delete is committed but the scrub of the store files fails, the
// evidence is returned with an Unavailable error: the key is gone from the
// store's view, and Scrub should be called again.
func (k *Keys) Destroy(ctx context.Context, s registry.SubjectID) (Evidence, error) {
	const op errs.Op = "seal.Destroy"
	if err := checkIDs("", s); err != nil {
		return Evidence{}, errs.E(op, err)
	}
	now := k.now()
	ev := Evidence{Subject: s, DestroyedAt: time.UnixMilli(now.UnixMilli()).UTC()}
	err := k.tx(ctx, func(tx *sql.Tx) error {
		var ids string
		err := tx.QueryRowContext(ctx, k.q(`DELETE FROM subject_keys WHERE subject_id = ? RETURNING tenant_id, kek_id, key_ids`), string(s)).
			Scan(&ev.Tenant, &ev.KEK, &ids)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNoKey
		}
		if err != nil {
			return errs.E(errs.Unavailable, fmt.Errorf("delete keyset of %s: %w", s, err))
		}
		ev.KeyIDs = parseKeyIDs(ids)
		return k.recordDestroyed(ctx, tx, ev, "erase")
	})
	k.evict(s)
	if errors.Is(err, ErrNoKey) {
		if prev, ok, perr := k.evidence(ctx, s); perr != nil {
			return Evidence{}, errs.E(op, perr)
		} else if ok {
			return prev, nil
		}
	}
	if err != nil {
		return Evidence{}, errs.E(op, err)
	}
	if err := k.scrub(ctx); err != nil {
		return ev, errs.E(op, err)
	}
	return ev, nil
}

// Scrub removes leftovers of deleted and rewritten keysets from the live key
// store files (see Destroy). Destroy, Retire and RotateKEK call it; call it
// again after one of them reported a failed scrub.
func (k *Keys) Scrub(ctx context.Context) error {
	if err := k.scrub(ctx); err != nil {
		return errs.E(errs.Op("seal.Scrub"), err)
	}
	return nil
}

// evidence returns the first erase record of the subject.
func (k *Keys) evidence(ctx context.Context, s registry.SubjectID) (Evidence, bool, error) {
	ev := Evidence{Subject: s}
	var ms int64
	var ids string
	err := k.db.QueryRowContext(ctx, k.q(`SELECT tenant_id, destroyed_ms, key_ids, kek_id FROM destroyed
		WHERE subject_id = ? AND reason = 'erase' ORDER BY destroyed_ms LIMIT 1`), string(s)).
		Scan(&ev.Tenant, &ms, &ids, &ev.KEK)
	if errors.Is(err, sql.ErrNoRows) {
		return Evidence{}, false, nil
	}
	if err != nil {
		return Evidence{}, false, errs.E(errs.Unavailable, fmt.Errorf("read destruction records of %s: %w", s, err))
	}
	ev.DestroyedAt = time.UnixMilli(ms).UTC()
	ev.KeyIDs = parseKeyIDs(ids)
	return ev, true, nil
}

func (k *Keys) recordDestroyed(ctx context.Context, tx *sql.Tx, ev Evidence, reason string) error {
	_, err := tx.ExecContext(ctx, k.q(`INSERT INTO destroyed (subject_id, tenant_id, destroyed_ms, key_ids, kek_id, reason)
		VALUES (?, ?, ?, ?, ?, ?)`),
		string(ev.Subject), string(ev.Tenant), ev.DestroyedAt.UnixMilli(), formatKeyIDs(ev.KeyIDs), ev.KEK, reason)
	if err != nil {
		return errs.E(errs.Unavailable, fmt.Errorf("record destruction for %s: %w", ev.Subject, err))
	}
	return nil
}

func formatKeyIDs(ids []uint32) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(parts, ",")
}

func parseKeyIDs(s string) []uint32 {
	var ids []uint32
	for _, p := range strings.Split(s, ",") {
		if v, err := strconv.ParseUint(p, 10, 32); err == nil {
			ids = append(ids, uint32(v))
		}
	}
	return ids
}

func (k *Keys) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := k.db.BeginTx(ctx, nil)
	if err != nil {
		return errs.E(errs.Unavailable, fmt.Errorf("begin key store transaction: %w", err))
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return errs.E(errs.Unavailable, fmt.Errorf("commit key store transaction: %w", err))
	}
	return nil
}

// errUnchanged tells update that the change function left nothing to write.
var errUnchanged = errors.New("unchanged")

// errConflict is a lost compare-and-swap: another writer changed the row.
var errConflict = errors.New("keyset changed concurrently")

// update applies change to the subject's keyset and writes it back, wrapped
// under the current KEK, with a compare-and-swap on the wrapped bytes (which
// differ on every write: the KEK's nonce is fresh), retrying a few times when
// another writer — here or on another replica — got there first. change may
// return destroyed key IDs, recorded as retired in the same transaction, or
// errUnchanged.
func (k *Keys) update(ctx context.Context, s registry.SubjectID, change func(r *row, m *keyset.Manager) (retired []uint32, newPrimary bool, err error)) (*keyset.Handle, error) {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := k.readRow(ctx, k.db, s)
		if err != nil {
			return nil, err
		}
		if r == nil {
			if erased, err := k.erased(ctx, s); err != nil {
				return nil, err
			} else if erased {
				return nil, ErrErased
			}
			return nil, ErrNoKey
		}
		h, err := k.unwrap(r, s)
		if err != nil {
			return nil, err
		}
		m := keyset.NewManagerFromHandle(h)
		retired, newPrimary, err := change(r, m)
		if errors.Is(err, errUnchanged) {
			return h, nil
		}
		if err != nil {
			return nil, err
		}
		if h, err = m.Handle(); err != nil {
			return nil, fmt.Errorf("keyset of %s: %w", s, err)
		}
		wrapped, kekID, err := k.wrap(h, r.tenant, s)
		if err != nil {
			return nil, err
		}
		primary, ids := keysetInfo(h)
		now := k.now()
		primaryMS := r.primaryMS
		if newPrimary {
			primaryMS = now.UnixMilli()
		}
		err = k.tx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, k.q(`UPDATE subject_keys SET kek_id = ?, wrapped = ?, updated_ms = ?,
				primary_key_id = ?, primary_ms = ?, key_count = ?, key_ids = ? WHERE subject_id = ? AND wrapped = ?`),
				kekID, wrapped, now.UnixMilli(), int64(primary), primaryMS, len(ids), formatKeyIDs(ids), string(s), r.wrapped)
			if err != nil {
				return errs.E(errs.Unavailable, fmt.Errorf("write keyset of %s: %w", s, err))
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return errConflict
			}
			if len(retired) == 0 {
				return nil
			}
			return k.recordDestroyed(ctx, tx, Evidence{
				Subject: s, Tenant: r.tenant, KeyIDs: retired, KEK: r.kekID,
				DestroyedAt: time.UnixMilli(now.UnixMilli()).UTC(),
			}, "retire")
		})
		if errors.Is(err, errConflict) && attempt < 16 {
			continue
		}
		if errors.Is(err, errConflict) {
			return nil, errs.E(errs.Conflict, fmt.Sprintf("keyset of %s keeps changing concurrently", s))
		}
		if err != nil {
			return nil, err
		}
		k.evict(s)
		return h, nil
	}
}

// Roll adds a new key to the subject's keyset and makes it the primary: new
// seals use it, and the old keys still decrypt. It returns the new key's ID.
// Replicas that cached the keyset keep sealing under the old primary for up
// to CacheTTL; their ciphertexts stay readable until Retire.
func (k *Keys) Roll(ctx context.Context, s registry.SubjectID) (uint32, error) {
	const op errs.Op = "seal.Roll"
	if err := checkIDs("", s); err != nil {
		return 0, errs.E(op, err)
	}
	var id uint32
	_, err := k.update(ctx, s, func(_ *row, m *keyset.Manager) ([]uint32, bool, error) {
		var err error
		if id, err = m.Add(aead.AES256GCMKeyTemplate()); err != nil {
			return nil, false, err
		}
		return nil, true, m.SetPrimary(id)
	})
	if err != nil {
		return 0, errs.E(op, err)
	}
	return id, nil
}

// Retire destroys every key of the subject's keyset except the primary.
// Call it after re-encrypting the data sealed under old keys: afterwards
// Open of such a ciphertext returns ErrErased (the retired keys are
// recorded as destroyed, with the same evidence as Destroy). Retire refuses
// with a Conflict error within CacheTTL of the last Roll, while another
// replica may still seal under the old primary.
func (k *Keys) Retire(ctx context.Context, s registry.SubjectID) error {
	const op errs.Op = "seal.Retire"
	if err := checkIDs("", s); err != nil {
		return errs.E(op, err)
	}
	changed := false
	_, err := k.update(ctx, s, func(r *row, m *keyset.Manager) ([]uint32, bool, error) {
		h, err := m.Handle()
		if err != nil {
			return nil, false, err
		}
		primary, ids := keysetInfo(h)
		var retired []uint32
		for _, id := range ids {
			if id != primary {
				retired = append(retired, id)
			}
		}
		if len(retired) == 0 {
			return nil, false, errUnchanged
		}
		if age := k.now().Sub(time.UnixMilli(r.primaryMS)); k.ttl > 0 && age < k.ttl {
			return nil, false, errs.E(errs.Conflict, fmt.Sprintf("the primary key of %s is younger than the cache TTL (%s); retry later", s, k.ttl))
		}
		for _, id := range retired {
			if err := m.Delete(id); err != nil {
				return nil, false, err
			}
		}
		changed = true
		return retired, false, nil
	})
	if err != nil {
		return errs.E(op, err)
	}
	if changed {
		if err := k.scrub(ctx); err != nil {
			return errs.E(op, err)
		}
	}
	return nil
}

// RotateKEK rewraps every keyset not yet under the current KEK (Config.KEK,
// or the last UseKEK), calling progress(done, total) after each one if
// progress is non-nil. It runs online: Seal, Open, Roll and Retire keep
// working during it, and it can be interrupted (ctx) and run again. When it
// returns nil, the earlier KEKs are no longer needed by this key store,
// unless UseKEK was called again meanwhile: then run it again.
func (k *Keys) RotateKEK(ctx context.Context, progress func(done, total int)) error {
	const op errs.Op = "seal.RotateKEK"
	cur := k.current().ID()
	var total int
	if err := k.db.QueryRowContext(ctx, k.q(`SELECT COUNT(*) FROM subject_keys WHERE kek_id <> ?`), cur).Scan(&total); err != nil {
		return errs.E(op, errs.Unavailable, fmt.Errorf("count keysets to rewrap: %w", err))
	}
	done := 0
	after := ""
	for {
		batch, err := k.staleSubjects(ctx, cur, after, 256)
		if err != nil {
			return errs.E(op, err)
		}
		if len(batch) == 0 {
			break
		}
		for _, s := range batch {
			_, err := k.update(ctx, s, func(r *row, _ *keyset.Manager) ([]uint32, bool, error) {
				if r.kekID == cur {
					return nil, false, errUnchanged
				}
				return nil, false, nil
			})
			if err != nil && !errors.Is(err, ErrErased) && !errors.Is(err, ErrNoKey) {
				return errs.E(op, err)
			}
			done++
			if done > total {
				total = done
			}
			if progress != nil {
				progress(done, total)
			}
		}
		after = string(batch[len(batch)-1])
	}
	if done < total && progress != nil {
		// Concurrent Seal/Roll calls rewrapped some under the current KEK
		// before this pass reached them: all are done.
		progress(total, total)
	}
	if err := k.scrub(ctx); err != nil {
		return errs.E(op, err)
	}
	return nil
}

func (k *Keys) staleSubjects(ctx context.Context, cur, after string, limit int) ([]registry.SubjectID, error) {
	rows, err := k.db.QueryContext(ctx, k.q(`SELECT subject_id FROM subject_keys WHERE kek_id <> ? AND subject_id > ?
		ORDER BY subject_id LIMIT ?`), cur, after, limit)
	if err != nil {
		return nil, errs.E(errs.Unavailable, fmt.Errorf("list keysets to rewrap: %w", err))
	}
	defer rows.Close()
	var out []registry.SubjectID
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, errs.E(errs.Unavailable, err)
		}
		out = append(out, registry.SubjectID(s))
	}
	if err := rows.Err(); err != nil {
		return nil, errs.E(errs.Unavailable, err)
	}
	return out, nil
}

// Status summarises the key store.
type Status struct {
	Subjects  int            `json:"subjects"`    // subjects with a live keyset
	ByKEK     map[string]int `json:"by_kek"`      // live keysets per KEK ID
	Rolling   int            `json:"rolling"`     // keysets with more than one key: a roll in progress
	Destroyed int            `json:"destroyed"`   // subjects erased (Destroy)
	Retired   int            `json:"retired"`     // keys destroyed by Retire
	Current   string         `json:"kek_current"` // the current KEK's ID
}

// Status reports counts; it reads no key material.
func (k *Keys) Status(ctx context.Context) (Status, error) {
	const op errs.Op = "seal.Status"
	st := Status{ByKEK: map[string]int{}, Current: k.current().ID()}
	rows, err := k.db.QueryContext(ctx, `SELECT kek_id, COUNT(*), SUM(CASE WHEN key_count > 1 THEN 1 ELSE 0 END) FROM subject_keys GROUP BY kek_id`)
	if err != nil {
		return Status{}, errs.E(op, errs.Unavailable, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var n, rolling int
		if err := rows.Scan(&id, &n, &rolling); err != nil {
			return Status{}, errs.E(op, errs.Unavailable, err)
		}
		st.ByKEK[id] = n
		st.Subjects += n
		st.Rolling += rolling
	}
	if err := rows.Err(); err != nil {
		return Status{}, errs.E(op, errs.Unavailable, err)
	}
	if err := k.db.QueryRowContext(ctx, `SELECT COUNT(DISTINCT subject_id) FROM destroyed WHERE reason = 'erase'`).Scan(&st.Destroyed); err != nil {
		return Status{}, errs.E(op, errs.Unavailable, err)
	}
	rows2, err := k.db.QueryContext(ctx, `SELECT key_ids FROM destroyed WHERE reason = 'retire'`)
	if err != nil {
		return Status{}, errs.E(op, errs.Unavailable, err)
	}
	defer rows2.Close()
	for rows2.Next() {
		var ids string
		if err := rows2.Scan(&ids); err != nil {
			return Status{}, errs.E(op, errs.Unavailable, err)
		}
		st.Retired += len(parseKeyIDs(ids))
	}
	if err := rows2.Err(); err != nil {
		return Status{}, errs.E(op, errs.Unavailable, err)
	}
	return st, nil
}
