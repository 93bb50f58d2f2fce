//go:build !cgo

package pkcs11

import "github.com/custos-iot/custos/internal/errs"

// KEK is an HSM key-encryption key. Without cgo it cannot be opened.
type KEK struct{}

// Open returns ErrNoCgo: this binary was built without cgo.
func Open(cfg Config) (*KEK, error) {
	return nil, errs.E(errs.Op("pkcs11.Open"), errs.Unavailable, ErrNoCgo)
}

// ID is empty: a KEK cannot be opened without cgo.
func (k *KEK) ID() string { return "" }

// Encrypt fails with ErrNoCgo.
func (k *KEK) Encrypt(plaintext, associatedData []byte) ([]byte, error) { return nil, ErrNoCgo }

// Decrypt fails with ErrNoCgo.
func (k *KEK) Decrypt(ciphertext, associatedData []byte) ([]byte, error) { return nil, ErrNoCgo }

// Close does nothing.
func (k *KEK) Close() error { return nil }
