// Package pkcs11 provides a key-encryption key (seal.KEK) kept in an HSM
// and used through PKCS#11: an AES-256 secret key that is generated inside
// the token, marked sensitive and non-extractable, and never leaves it.
//
// Encrypt is CKM_AES_GCM with a fresh random 96-bit IV, the associated data
// and a 128-bit tag; its output is IV || ciphertext || tag. The package needs
// cgo (it loads the vendor's PKCS#11 module); built without cgo, Open returns
// an error saying so. It is tested against SoftHSM2.
//
// This package must never log the PIN or export key material.
package pkcs11

import "errors"

// Config names the HSM key.
type Config struct {
	// Module is the path of the vendor's PKCS#11 library, e.g.
	// /usr/lib/softhsm/libsofthsm2.so.
	Module string
	// TokenLabel selects the token (slot) holding the key.
	TokenLabel string
	// PIN is the token's user PIN.
	PIN string
	// KeyLabel names the key (CKA_LABEL). Open creates the key if no key
	// has this label. A new KEK version needs a new label.
	KeyLabel string
	// Sessions bounds the sessions opened for concurrent use. Default 4.
	Sessions int
	// Existing makes Open fail with a NotFound error when no key has
	// KeyLabel, instead of generating one: for earlier KEK versions, which
	// must never be replaced by a fresh key.
	Existing bool
}

// ErrNoCgo is returned by Open in a binary built without cgo.
var ErrNoCgo = errors.New("pkcs11: this binary was built without cgo, so it cannot load a PKCS#11 module; rebuild with CGO_ENABLED=1 or use the file KEK")

const ivSize, tagSize = 12, 16
