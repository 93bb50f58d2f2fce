package seal

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/errs"
)

func TestFileKEK(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string) // before LoadOrCreateFileKEK
		wantErr errs.Kind                       // 0: success
		check   func(t *testing.T, path string, k *FileKEK)
	}{
		{
			name: "created 0600",
			check: func(t *testing.T, path string, k *FileKEK) {
				st, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o600 {
					t.Errorf("mode %04o, want 0600", st.Mode().Perm())
				}
				if !strings.HasPrefix(k.ID(), "file:") || len(k.ID()) != len("file:")+8 {
					t.Errorf("ID %q, want file:<8 hex>", k.ID())
				}
				left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".kek-*"))
				if len(left) != 0 {
					t.Errorf("temporary files left: %v", left)
				}
			},
		},
		{
			name: "reopen gives the same key",
			check: func(t *testing.T, path string, k *FileKEK) {
				c, err := k.Encrypt([]byte("keyset"), []byte("ad"))
				if err != nil {
					t.Fatal(err)
				}
				k2, err := LoadOrCreateFileKEK(path)
				if err != nil {
					t.Fatal(err)
				}
				if k2.ID() != k.ID() {
					t.Errorf("ID changed: %s then %s", k.ID(), k2.ID())
				}
				p, err := k2.Decrypt(c, []byte("ad"))
				if err != nil || string(p) != "keyset" {
					t.Errorf("reopened KEK: %q, %v", p, err)
				}
			},
		},
		{
			name: "wrong associated data fails",
			check: func(t *testing.T, path string, k *FileKEK) {
				c, err := k.Encrypt([]byte("keyset"), []byte("subject A"))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := k.Decrypt(c, []byte("subject B")); err == nil {
					t.Error("decrypt with wrong associated data succeeded")
				}
				c[len(c)-1] ^= 1
				if _, err := k.Decrypt(c, []byte("subject A")); err == nil {
					t.Error("decrypt of tampered ciphertext succeeded")
				}
			},
		},
		{
			name: "a second file is a different KEK",
			check: func(t *testing.T, path string, k *FileKEK) {
				k2, err := LoadOrCreateFileKEK(path + ".2")
				if err != nil {
					t.Fatal(err)
				}
				c, _ := k.Encrypt([]byte("x"), nil)
				if k2.ID() == k.ID() {
					t.Error("two fresh KEKs share an ID")
				}
				if _, err := k2.Decrypt(c, nil); err == nil {
					t.Error("another KEK decrypted")
				}
			},
		},
		{
			name: "group-readable refused",
			prepare: func(t *testing.T, path string) {
				if _, err := LoadOrCreateFileKEK(path); err != nil {
					t.Fatal(err)
				}
				os.Chmod(path, 0o640)
			},
			wantErr: errs.Invalid,
		},
		{
			name: "world-writable refused",
			prepare: func(t *testing.T, path string) {
				if _, err := LoadOrCreateFileKEK(path); err != nil {
					t.Fatal(err)
				}
				os.Chmod(path, 0o602)
			},
			wantErr: errs.Invalid,
		},
		{
			name: "symlink refused",
			prepare: func(t *testing.T, path string) {
				real := path + ".real"
				if _, err := LoadOrCreateFileKEK(real); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(real, path); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: errs.Invalid,
		},
		{
			name: "not a keyset",
			prepare: func(t *testing.T, path string) {
				os.WriteFile(path, bytes.Repeat([]byte{0xff}, 40), 0o600)
			},
			wantErr: errs.Integrity,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", "kek.bin")
			os.MkdirAll(filepath.Dir(path), 0o700)
			if tt.prepare != nil {
				tt.prepare(t, path)
			}
			k, err := LoadOrCreateFileKEK(path)
			if tt.prepare != nil && tt.check == nil {
				if err == nil {
					t.Fatalf("LoadOrCreateFileKEK succeeded, want a %v error", tt.wantErr)
				}
				if got := errs.KindOf(err); got != tt.wantErr {
					t.Errorf("error kind %v (%v), want %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, path, k)
		})
	}
}
