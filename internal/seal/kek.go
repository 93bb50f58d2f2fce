package seal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/custos-iot/custos/internal/errs"
)

// KEK is a key-encryption key: it wraps subject keysets. It is a tink.AEAD
// with a name.
//
// Implementations MUST be safe for concurrent use, MUST authenticate the
// associated data, and SHOULD report a dependency outage (an HSM or KMS that
// cannot be reached) as errs.Unavailable so that it is not mistaken for a
// corrupt keyset.
type KEK interface {
	// ID is the stable name of this KEK version, e.g. "file:1a2b3c4d" or
	// "pkcs11:custos-kek-2025". It is stored next to every keyset it wraps
	// and MUST differ between KEK versions.
	ID() string
	Encrypt(plaintext, associatedData []byte) ([]byte, error)
	Decrypt(ciphertext, associatedData []byte) ([]byte, error)
}

// FileKEK is a KEK kept in a local file: a Tink AES256-GCM keyset.
type FileKEK struct {
	id   string
	aead tink.AEAD
}

const (
	aesGCMTypeURL = "type.googleapis.com/google.crypto.tink.AesGcmKey"
	maxKEKFile    = 64 << 10
)

// LoadOrCreateFileKEK loads the KEK keyset at path, creating it (mode 0600,
// atomically: a concurrent creator's file wins) if it does not exist.
//
// The file holds the keyset in clear, written with Tink's
// insecurecleartextkeyset on purpose: it is the root of the key hierarchy,
// so there is nothing left to wrap it with. It is protected by its file
// permissions, and operators who need more replace it with an HSM
// (seal/pkcs11). A file readable or writable by group or others is refused,
// as is anything but a regular file.
func LoadOrCreateFileKEK(path string) (*FileKEK, error) {
	const op errs.Op = "seal.LoadOrCreateFileKEK"
	k, err := loadFileKEK(path)
	if !errors.Is(err, fs.ErrNotExist) {
		if err != nil {
			return nil, errs.E(op, err)
		}
		return k, nil
	}
	if err := createFileKEK(path); err != nil {
		return nil, errs.E(op, err)
	}
	k, err = loadFileKEK(path)
	if err != nil {
		return nil, errs.E(op, err)
	}
	return k, nil
}

// LoadFileKEK loads the KEK keyset at path with the checks of
// LoadOrCreateFileKEK, but never creates one: an earlier KEK version that
// is missing must be reported (errors.Is(err, fs.ErrNotExist)), not
// replaced by a fresh key that unwraps nothing.
func LoadFileKEK(path string) (*FileKEK, error) {
	k, err := loadFileKEK(path)
	if err != nil {
		return nil, errs.E(errs.Op("seal.LoadFileKEK"), err)
	}
	return k, nil
}

func loadFileKEK(path string) (*FileKEK, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if errors.Is(err, syscall.ELOOP) {
			return nil, errs.E(errs.Invalid, fmt.Sprintf("KEK file %s is a symbolic link; refusing it", path))
		}
		return nil, fmt.Errorf("open KEK file %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat KEK file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, errs.E(errs.Invalid, fmt.Sprintf("KEK file %s is not a regular file", path))
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, errs.E(errs.Invalid, fmt.Sprintf("KEK file %s has mode %04o; it must not be accessible by group or others (chmod 600)", path, st.Mode().Perm()))
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxKEKFile+1))
	if err != nil {
		return nil, fmt.Errorf("read KEK file %s: %w", path, err)
	}
	if len(raw) > maxKEKFile {
		return nil, errs.E(errs.Invalid, fmt.Sprintf("KEK file %s is too large to be a keyset", path))
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewBinaryReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, errs.E(errs.Integrity, fmt.Sprintf("KEK file %s is not a Tink keyset", path))
	}
	info := h.KeysetInfo()
	for _, ki := range info.GetKeyInfo() {
		if ki.GetKeyId() == info.GetPrimaryKeyId() && ki.GetTypeUrl() != aesGCMTypeURL {
			return nil, errs.E(errs.Invalid, fmt.Sprintf("KEK file %s: primary key is %s, want AES-GCM", path, ki.GetTypeUrl()))
		}
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, errs.E(errs.Invalid, fmt.Errorf("KEK file %s: %w", path, err))
	}
	return &FileKEK{id: fmt.Sprintf("file:%08x", info.GetPrimaryKeyId()), aead: a}, nil
}

// createFileKEK writes a fresh keyset to a temporary file in the target
// directory and links it into place, which fails if path exists: the file
// appears complete or not at all, and never replaces an existing KEK.
func createFileKEK(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory for KEK file %s: %w", path, err)
	}
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return fmt.Errorf("generate KEK: %w", err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewBinaryWriter(&buf)); err != nil {
		return fmt.Errorf("encode KEK: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".kek-*") // mode 0600
	if err != nil {
		return fmt.Errorf("create KEK file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(buf.Bytes())
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write KEK file %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // another process created it first: use theirs
		}
		return fmt.Errorf("install KEK file %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ID returns "file:" and the primary key ID of the keyset in hex.
func (k *FileKEK) ID() string { return k.id }

// Encrypt encrypts with AES256-GCM under the KEK.
func (k *FileKEK) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	return k.aead.Encrypt(plaintext, associatedData)
}

// Decrypt decrypts and authenticates a ciphertext made by Encrypt.
func (k *FileKEK) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	return k.aead.Decrypt(ciphertext, associatedData)
}
