package seal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// KeyInfo describes a subject's live keyset without key material: what a
// re-encryption job needs to know (which key is the primary) and what an
// operator may see.
type KeyInfo struct {
	Subject registry.SubjectID `json:"subject"`
	Tenant  registry.TenantID  `json:"tenant"`
	KEK     string             `json:"kek"` // the KEK the keyset is wrapped under
	Primary uint32             `json:"primary"`
	KeyIDs  []uint32           `json:"key_ids"`
	// PrimarySince is when the primary key became the primary (Create or
	// Roll). Retire refuses to run before PrimarySince + CacheTTL.
	PrimarySince time.Time `json:"primary_since"`
}

// Rolling reports whether the keyset holds keys besides the primary: a roll
// whose old keys are not retired yet.
func (i KeyInfo) Rolling() bool { return len(i.KeyIDs) > 1 }

const infoColumns = `subject_id, tenant_id, kek_id, primary_key_id, key_ids, primary_ms`

func scanInfo(sc interface{ Scan(...any) error }) (KeyInfo, error) {
	var i KeyInfo
	var primary, ms int64
	var ids string
	if err := sc.Scan(&i.Subject, &i.Tenant, &i.KEK, &primary, &ids, &ms); err != nil {
		return KeyInfo{}, err
	}
	i.Primary = uint32(primary)
	i.KeyIDs = parseKeyIDs(ids)
	i.PrimarySince = time.UnixMilli(ms).UTC()
	return i, nil
}

// Info describes the subject's keyset. It reads no key material and needs
// no KEK. A subject without a live keyset is ErrErased if it was erased,
// else ErrNoKey.
func (k *Keys) Info(ctx context.Context, s registry.SubjectID) (KeyInfo, error) {
	const op errs.Op = "seal.Info"
	if err := checkIDs("", s); err != nil {
		return KeyInfo{}, errs.E(op, err)
	}
	i, err := scanInfo(k.db.QueryRowContext(ctx, k.q(`SELECT `+infoColumns+` FROM subject_keys WHERE subject_id = ?`), string(s)))
	if errors.Is(err, sql.ErrNoRows) {
		if erased, err := k.erased(ctx, s); err != nil {
			return KeyInfo{}, errs.E(op, err)
		} else if erased {
			return KeyInfo{}, errs.E(op, ErrErased)
		}
		return KeyInfo{}, errs.E(op, ErrNoKey)
	}
	if err != nil {
		return KeyInfo{}, errs.E(op, errs.Unavailable, fmt.Errorf("read keyset of %s: %w", s, err))
	}
	return i, nil
}

// List describes up to limit live keysets of subjects whose ID sorts after
// after, in subject order; rollingOnly keeps those with keys besides the
// primary. Page by passing the last subject returned.
func (k *Keys) List(ctx context.Context, after registry.SubjectID, limit int, rollingOnly bool) ([]KeyInfo, error) {
	const op errs.Op = "seal.List"
	if limit <= 0 {
		limit = 256
	}
	cond := ""
	if rollingOnly {
		cond = ` AND key_count > 1`
	}
	rows, err := k.db.QueryContext(ctx, k.q(`SELECT `+infoColumns+` FROM subject_keys WHERE subject_id > ?`+cond+`
		ORDER BY subject_id LIMIT ?`), string(after), limit)
	if err != nil {
		return nil, errs.E(op, errs.Unavailable, fmt.Errorf("list keysets: %w", err))
	}
	defer rows.Close()
	var out []KeyInfo
	for rows.Next() {
		i, err := scanInfo(rows)
		if err != nil {
			return nil, errs.E(op, errs.Unavailable, err)
		}
		out = append(out, i)
	}
	if err := rows.Err(); err != nil {
		return nil, errs.E(op, errs.Unavailable, err)
	}
	return out, nil
}

// CacheTTL is how long this key store caches an unwrapped keyset: the time
// to wait after a Roll before Retire (0 when the cache is off).
func (k *Keys) CacheTTL() time.Duration { return max(k.ttl, 0) }
