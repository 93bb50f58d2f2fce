package enrol

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/custos-iot/custos/internal/errs"
)

// CSRCommonName is the subject common name of every CSR the agent sends.
// The hub ignores it: the certificate's identity comes from the enrolment.
const CSRCommonName = "custos-connector"

const pemPrivateKey = "PRIVATE KEY"

// maxKeyFile bounds how much of a key file is read.
const maxKeyFile = 64 << 10

// LoadOrCreateKey returns the private key stored at path, creating it if the
// file does not exist: a new ECDSA P-256 key, stored as PKCS#8 PEM with mode
// 0600. Creation is atomic and exclusive: the file appears complete or not
// at all, and of two processes racing on a missing file exactly one key
// wins and both return it.
//
// An existing key file that is readable or writable by group or others is
// refused, with an error naming the path and its mode; fix it with
// chmod 600. Accepted keys are ECDSA P-256/P-384 and Ed25519.
//
// Since Go 1.26 key generation ignores rand (see crypto/ecdsa.GenerateKey);
// it is passed on for callers that set GODEBUG=cryptocustomrand=1.
func LoadOrCreateKey(path string, rand io.Reader) (crypto.Signer, error) {
	const op errs.Op = "enrol.LoadOrCreateKey"
	key, err := loadKey(path)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, errs.E(op, err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand)
	if err != nil {
		return nil, errs.E(op, fmt.Errorf("generate key: %w", err))
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, errs.E(op, fmt.Errorf("encode key: %w", err))
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der})
	switch err := writeFileExclusive(path, data, 0o600); {
	case err == nil:
		return k, nil
	case errors.Is(err, fs.ErrExist):
		// Another process created it first: use theirs.
		key, err := loadKey(path)
		if err != nil {
			return nil, errs.E(op, err)
		}
		return key, nil
	default:
		return nil, errs.E(op, err)
	}
}

// loadKey reads and checks a key file. A missing file is reported with an
// error matching fs.ErrNotExist.
func loadKey(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("open key file %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, errs.E(errs.Invalid, fmt.Sprintf("key file %s is not a regular file", path))
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, errs.E(errs.Forbidden, fmt.Sprintf(
			"key file %s has mode %#o, which lets group or others access it; refusing to use it (run chmod 600 %s)",
			path, perm, path))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, errs.E(errs.Invalid, fmt.Sprintf("key file %s is too large", path))
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemPrivateKey {
		return nil, errs.E(errs.Integrity, fmt.Sprintf("key file %s holds no PKCS#8 PEM private key", path))
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errs.E(errs.Integrity, fmt.Sprintf("key file %s: malformed PKCS#8 key", path))
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, errs.E(errs.Invalid, fmt.Sprintf("key file %s: unsupported ECDSA curve", path))
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, errs.E(errs.Invalid, fmt.Sprintf("key file %s: unsupported key type %T", path, k))
	}
}

// CreateCSR returns a DER-encoded certificate signing request for key with
// subject CN "custos-connector" and no extensions.
func CreateCSR(key crypto.Signer, rand io.Reader) ([]byte, error) {
	const op errs.Op = "enrol.CreateCSR"
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: CSRCommonName}}
	der, err := x509.CreateCertificateRequest(rand, tmpl, key)
	if err != nil {
		return nil, errs.E(op, fmt.Errorf("create CSR: %w", err))
	}
	return der, nil
}

// writeFileExclusive writes a new file atomically; fs.ErrExist if path exists.
func writeFileExclusive(path string, data []byte, perm fs.FileMode) error {
	return WriteFile(path, data, perm, true)
}

// WriteFile writes data to path with mode perm atomically: a synced
// temporary file in the same directory is either hard-linked into place
// (exclusive: fails with fs.ErrExist if path exists, like O_EXCL) or renamed
// over path. Readers never see a partial file; a crash leaves the old file
// or the new one. The hub's CA files and the agent's credentials use it.
func WriteFile(path string, data []byte, perm fs.FileMode, exclusive bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // after a link or rename: drops the spare name, or nothing
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmpName, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmpName, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmpName, err)
	}
	if exclusive {
		if err := os.Link(tmpName, path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fs.ErrExist
			}
			return fmt.Errorf("link %s: %w", path, err)
		}
	} else if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	syncDir(dir)
	return nil
}

// syncDir makes a new directory entry durable; failures are not fatal
// (some file systems do not support syncing directories).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
