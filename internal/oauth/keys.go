package oauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Keys are the authorization server's secrets. Every hub replica must hold
// the same Keys, like the CA.
type Keys struct {
	// Signing signs access and ID tokens (ES256).
	Signing *ecdsa.PrivateKey
	// Crypto encrypts authorization codes (AES-256-GCM, by op).
	Crypto [32]byte
}

// GenerateKeys makes new Keys from r (nil: crypto/rand).
func GenerateKeys(r io.Reader) (Keys, error) {
	if r == nil {
		r = rand.Reader
	}
	var k Keys
	var err error
	if k.Signing, err = ecdsa.GenerateKey(elliptic.P256(), r); err != nil {
		return k, err
	}
	_, err = io.ReadFull(r, k.Crypto[:])
	return k, err
}

// LoadOrCreateKeys reads Keys from dir (signing.pem and crypto.key, mode
// 0600), creating them on first use. Files readable by group or others are
// refused.
func LoadOrCreateKeys(dir string) (Keys, error) {
	sp, cp := filepath.Join(dir, "signing.pem"), filepath.Join(dir, "crypto.key")
	b, err := os.ReadFile(sp)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return Keys{}, err
		}
		k, err := GenerateKeys(rand.Reader)
		if err != nil {
			return k, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k.Signing)
		if err != nil {
			return k, err
		}
		if err := writeNew(cp, []byte(base64.StdEncoding.EncodeToString(k.Crypto[:])+"\n")); err != nil {
			return k, err
		}
		if err := writeNew(sp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
			return k, err
		}
		return k, nil
	}
	if err != nil {
		return Keys{}, err
	}
	for _, p := range []string{sp, cp} {
		fi, err := os.Stat(p)
		if err != nil {
			return Keys{}, fmt.Errorf("oauth keys: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return Keys{}, fmt.Errorf("oauth keys: %s is readable by group or others (mode %#o); chmod 600 it", p, fi.Mode().Perm())
		}
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return Keys{}, fmt.Errorf("oauth keys: %s holds no PEM block", sp)
	}
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return Keys{}, fmt.Errorf("oauth keys: %s: %w", sp, err)
	}
	var k Keys
	var ok bool
	if k.Signing, ok = key.(*ecdsa.PrivateKey); !ok || k.Signing.Curve != elliptic.P256() {
		return Keys{}, fmt.Errorf("oauth keys: %s is not a P-256 key", sp)
	}
	cb, err := os.ReadFile(cp)
	if err != nil {
		return Keys{}, fmt.Errorf("oauth keys: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(string(trimSpace(cb)))
	if err != nil || len(raw) != 32 {
		return Keys{}, fmt.Errorf("oauth keys: %s must hold 32 bytes in base64", cp)
	}
	copy(k.Crypto[:], raw)
	return k, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if serr := f.Sync(); werr == nil {
		werr = serr
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	return werr
}

// signingKey is the hub's key as op signs with it (op.SigningKey) and
// publishes it (op.Key).
type signingKey struct {
	id  string
	key *ecdsa.PrivateKey
}

func newSigningKey(k *ecdsa.PrivateKey) (*signingKey, error) {
	tp, err := (&jose.JSONWebKey{Key: &k.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &signingKey{id: base64.RawURLEncoding.EncodeToString(tp), key: k}, nil
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (k *signingKey) ID() string                                  { return k.id }

// Key is the private key for op.SigningKey.
func (k *signingKey) Key() any { return k.key }

// publicKey is the published half (op.Key).
type publicKey struct{ k *signingKey }

func (p publicKey) ID() string                         { return p.k.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return &p.k.key.PublicKey }

// keySet verifies tokens against the hub's own key, without a round trip
// through the keys endpoint.
type keySet struct{ k *signingKey }

func (s keySet) VerifySignature(ctx context.Context, jws *jose.JSONWebSignature) ([]byte, error) {
	if len(jws.Signatures) != 1 {
		return nil, errors.New("token must carry exactly one signature")
	}
	h := jws.Signatures[0].Header
	if h.KeyID != s.k.id || h.Algorithm != string(jose.ES256) {
		return nil, errors.New("token is not signed by this hub's key")
	}
	return jws.Verify(&s.k.key.PublicKey)
}

var (
	_ op.SigningKey = (*signingKey)(nil)
	_ op.Key        = publicKey{}
)
