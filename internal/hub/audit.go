package hub

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/audit"
)

// openAudit opens the tamper-evident audit log: the entries (append-only,
// durable before an action is acknowledged) and the latest signed
// checkpoint in <DataDir>/audit (SQLite) or in the database shared by all
// replicas (PostgreSQL), and the log's signing key (<DataDir>/audit/log.key,
// 0600, created on first start; replicas must share it, like the CA) with
// its public half (log.pub) for verifiers.
func (h *Hub) openAudit(ctx context.Context) error {
	dir := filepath.Join(h.cfg.DataDir, "audit")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("hub: audit directory: %w", err)
	}
	origin := h.cfg.Names[0] + "/custos-audit"
	skey, vkey, err := loadOrCreateLogKey(dir, origin)
	if err != nil {
		return err
	}
	signer, err := audit.NewSigner(skey)
	if err != nil {
		return fmt.Errorf("hub: audit signing key: %w", err)
	}
	verifier, err := audit.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("hub: audit public key: %w", err)
	}
	// On PostgreSQL the replicas share one log in the database; one hub on
	// SQLite keeps it in files beside its data.
	var st audit.Storage
	if h.cfg.PostgresDSN != "" {
		st = h.Store.AuditLog()
	} else if st, err = audit.OpenFileStorage(filepath.Join(dir, "log")); err != nil {
		return err
	}
	// A short linger gathers the entries of concurrent requests (ingest
	// batches from many connectors) into fewer fsyncs.
	h.Audit, err = audit.Open(ctx, audit.Config{Storage: st, Origin: signer.Name(), Signer: signer, Verifier: verifier, Now: h.cfg.Now, Linger: time.Millisecond})
	if err != nil {
		return err
	}
	h.AuditKey = vkey
	return nil
}

// loadOrCreateLogKey reads the audit log's note keys, creating them on
// first start. The signing key is written 0600 and refused if looser.
func loadOrCreateLogKey(dir, origin string) (skey, vkey string, err error) {
	return loadOrCreateNoteKey(dir, "log", origin)
}

// loadOrCreateNoteKey reads the note keys <dir>/<base>.key (0600) and
// <base>.pub, creating them on first start.
func loadOrCreateNoteKey(dir, base, origin string) (skey, vkey string, err error) {
	kp, pp := filepath.Join(dir, base+".key"), filepath.Join(dir, base+".pub")
	b, err := os.ReadFile(kp)
	if errors.Is(err, fs.ErrNotExist) {
		if skey, vkey, err = audit.GenerateKey(rand.Reader, origin); err != nil {
			return "", "", err
		}
		f, err := os.OpenFile(kp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", "", fmt.Errorf("hub: create %s: %w", kp, err)
		}
		_, werr := f.WriteString(skey + "\n")
		if serr := f.Sync(); werr == nil {
			werr = serr
		}
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return "", "", werr
		}
		if err := os.WriteFile(pp, []byte(vkey+"\n"), 0o644); err != nil {
			return "", "", err
		}
		return skey, vkey, nil
	}
	if err != nil {
		return "", "", err
	}
	if fi, err := os.Stat(kp); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return "", "", fmt.Errorf("hub: %s is readable by group or others (mode %#o); chmod 600 it", kp, fi.Mode().Perm())
	}
	pub, err := os.ReadFile(pp)
	if err != nil {
		return "", "", fmt.Errorf("hub: audit public key: %w", err)
	}
	return strings.TrimSpace(string(b)), strings.TrimSpace(string(pub)), nil
}
