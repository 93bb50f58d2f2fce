//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/seal"
	"github.com/custos-iot/custos/internal/testenv"
)

var _ seal.KEK = (*KEK)(nil)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

// softHSM makes a fresh SoftHSM2 token "custos-test" (user PIN 1234) in a
// temporary directory and returns a Config for it.
func softHSM(t *testing.T) Config {
	t.Helper()
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		testenv.Unavailable(t, "SoftHSM2", "apt-get install softhsm2")
	}
	if _, err := os.Stat(softhsmModule); err != nil {
		testenv.Unavailable(t, "SoftHSM2", "apt-get install softhsm2")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	t.Setenv("SOFTHSM2_CONF", conf)
	out, err := exec.Command(util, "--init-token", "--free", "--label", "custos-test", "--pin", "1234", "--so-pin", "5678").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return Config{Module: softhsmModule, TokenLabel: "custos-test", PIN: "1234", KeyLabel: "custos-kek-1"}
}

func openKEK(t *testing.T, cfg Config) *KEK {
	t.Helper()
	k, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func TestKEK(t *testing.T) {
	cfg := softHSM(t)
	k := openKEK(t, cfg)
	if k.ID() != "pkcs11:custos-kek-1" {
		t.Errorf("ID = %q", k.ID())
	}
	msg, ad := []byte("a subject keyset"), []byte("tenant|subject")
	c, err := k.Encrypt(msg, ad)
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != 12+len(msg)+16 {
		t.Errorf("ciphertext of %d bytes, want IV(12)+%d+tag(16)", len(c), len(msg))
	}
	c2, _ := k.Encrypt(msg, ad)
	if bytes.Equal(c[:12], c2[:12]) {
		t.Error("two encryptions share an IV")
	}

	tampered := func(i int) []byte { b := bytes.Clone(c); b[i] ^= 1; return b }
	tests := []struct {
		name   string
		c, ad  []byte
		wantOK bool
	}{
		{"round trip", c, ad, true},
		{"empty associated data round trip", mustEncrypt(t, k, msg, nil), nil, true},
		{"wrong associated data", c, []byte("tenant|other"), false},
		{"missing associated data", c, nil, false},
		{"tampered IV", tampered(0), ad, false},
		{"tampered ciphertext", tampered(14), ad, false},
		{"tampered tag", tampered(len(c) - 1), ad, false},
		{"truncated", c[:20], ad, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := k.Decrypt(tt.c, tt.ad)
			if tt.wantOK {
				if err != nil || (!bytes.Equal(p, msg)) {
					t.Errorf("Decrypt = %q, %v", p, err)
				}
				return
			}
			if err == nil {
				t.Fatal("Decrypt succeeded")
			}
			if errs.Is(errs.Unavailable, err) {
				t.Errorf("authentication failure reported as Unavailable: %v", err)
			}
		})
	}
	// The session still works after failures.
	if _, err := k.Decrypt(c, ad); err != nil {
		t.Errorf("Decrypt after failures: %v", err)
	}

	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 50 {
					c, err := k.Encrypt(msg, ad)
					if err == nil {
						_, err = k.Decrypt(c, ad)
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	})

	t.Run("key reused after reopen", func(t *testing.T) {
		k.Close()
		k2 := openKEK(t, cfg)
		if p, err := k2.Decrypt(c, ad); err != nil || !bytes.Equal(p, msg) {
			t.Errorf("reopened KEK: %q, %v", p, err)
		}
		if _, err := k.Encrypt(msg, ad); err == nil {
			t.Error("closed KEK still encrypts")
		}
	})

	t.Run("second label is another key", func(t *testing.T) {
		cfg2 := cfg
		cfg2.KeyLabel = "custos-kek-2"
		k1, k2 := openKEK(t, cfg), openKEK(t, cfg2)
		if k2.ID() == k1.ID() {
			t.Error("same ID for two labels")
		}
		if _, err := k2.Decrypt(c, ad); err == nil {
			t.Error("the second key decrypted the first key's ciphertext")
		}
		// Closing one KEK leaves the other usable (shared module and login).
		k2.Close()
		if _, err := k1.Decrypt(c, ad); err != nil {
			t.Errorf("first KEK after closing the second: %v", err)
		}
	})

	t.Run("bad config", func(t *testing.T) {
		tests := []struct {
			name string
			mod  func(*Config)
			kind errs.Kind
		}{
			{"wrong PIN", func(c *Config) { c.PIN = "0000" }, errs.Unauthenticated},
			{"unknown token", func(c *Config) { c.TokenLabel = "nope" }, errs.NotFound},
			{"missing module", func(c *Config) { c.Module = "/nonexistent/libpkcs11.so" }, errs.Unavailable},
			{"no key label", func(c *Config) { c.KeyLabel = "" }, errs.Invalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := cfg
				tt.mod(&c)
				k, err := Open(c)
				if err == nil {
					k.Close()
					t.Fatal("Open succeeded")
				}
				if errs.KindOf(err) != tt.kind {
					t.Errorf("error %v (kind %v), want %v", err, errs.KindOf(err), tt.kind)
				}
			})
		}
	})
}

func mustEncrypt(t *testing.T, k *KEK, p, ad []byte) []byte {
	t.Helper()
	c, err := k.Encrypt(p, ad)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKeysRotateToHSM moves a key store from a file KEK to the HSM KEK and
// destroys a subject under it.
func TestKeysRotateToHSM(t *testing.T) {
	ctx := context.Background()
	hsm := openKEK(t, softHSM(t))
	file, err := seal.LoadOrCreateFileKEK(filepath.Join(t.TempDir(), "kek.bin"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.db")
	tenant, _ := registry.NewID(rand.Reader, "ten")
	sub, _ := registry.NewID(rand.Reader, "sub")
	s := registry.SubjectID(sub)

	k1, err := seal.Open(ctx, seal.Config{Path: path, KEK: file})
	if err != nil {
		t.Fatal(err)
	}
	if err := k1.Create(ctx, registry.TenantID(tenant), s); err != nil {
		t.Fatal(err)
	}
	c, err := k1.Seal(ctx, s, []byte("reading"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	k1.Close()

	k2, err := seal.Open(ctx, seal.Config{Path: path, KEK: hsm, Old: []seal.KEK{file}})
	if err != nil {
		t.Fatal(err)
	}
	if err := k2.RotateKEK(ctx, nil); err != nil {
		t.Fatal(err)
	}
	k2.Close()

	k3, err := seal.Open(ctx, seal.Config{Path: path, KEK: hsm})
	if err != nil {
		t.Fatal(err)
	}
	defer k3.Close()
	if p, err := k3.Open(ctx, s, c, []byte("ad")); err != nil || string(p) != "reading" {
		t.Fatalf("open under the HSM KEK: %q, %v", p, err)
	}
	st, _ := k3.Status(ctx)
	if st.ByKEK[hsm.ID()] != 1 {
		t.Errorf("ByKEK = %v", st.ByKEK)
	}
	if _, err := k3.Destroy(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := k3.Open(ctx, s, c, []byte("ad")); !errors.Is(err, seal.ErrErased) {
		t.Errorf("open after destroy: %v", err)
	}
}
