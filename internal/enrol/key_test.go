package enrol

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/custos-iot/custos/internal/errs"
)

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.key")
	k1, err := LoadOrCreateKey(path, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ek, ok := k1.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		t.Fatalf("key is %T, want ECDSA P-256", k1)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("key file mode = %#o, want 0600", perm)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "-----BEGIN PRIVATE KEY-----") {
		t.Fatalf("key file is not PKCS#8 PEM")
	}
	k2, err := LoadOrCreateKey(path, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !ek.Equal(k2) {
		t.Fatal("reload returned a different key")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the key (temporary file left behind?)", len(entries))
	}
}

func TestLoadOrCreateKeyRefusesLoosePermissions(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		path := filepath.Join(t.TempDir(), "device.key")
		if _, err := LoadOrCreateKey(path, rand.Reader); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateKey(path, rand.Reader)
		if err == nil {
			t.Fatalf("mode %#o: key accepted", mode)
		}
		msg := err.Error()
		if !strings.Contains(msg, path) || !strings.Contains(msg, fmt.Sprintf("%#o", mode)) {
			t.Errorf("mode %#o: error %q does not name the path and mode", mode, msg)
		}
		if !errs.Is(errs.Forbidden, err) {
			t.Errorf("mode %#o: kind = %v, want Forbidden", mode, errs.KindOf(err))
		}
	}
}

func TestLoadOrCreateKeyMalformed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.key")
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path, rand.Reader); !errs.Is(errs.Integrity, err) {
		t.Fatalf("err = %v, want Integrity", err)
	}
	// The malformed file must not have been overwritten.
	if data, _ := os.ReadFile(path); string(data) != "not a key" {
		t.Fatal("malformed key file was replaced")
	}
}

func TestLoadOrCreateKeyRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.key")
	const n = 8
	keys := make([]*ecdsa.PrivateKey, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, err := LoadOrCreateKey(path, rand.Reader)
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = k.(*ecdsa.PrivateKey)
		})
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if keys[i] == nil || !keys[0].Equal(keys[i]) {
			t.Fatalf("racing creators got different keys")
		}
	}
}

func TestCreateCSR(t *testing.T) {
	key, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := CreateCSR(key, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	if csr.Subject.CommonName != "custos-connector" {
		t.Errorf("CN = %q", csr.Subject.CommonName)
	}
	if !key.Public().(*ecdsa.PublicKey).Equal(csr.PublicKey) {
		t.Error("CSR carries another key")
	}
}
