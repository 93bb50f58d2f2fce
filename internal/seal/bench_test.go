package seal

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"testing"

	"github.com/custos-iot/custos/internal/registry"
)

func benchKeys(b *testing.B) (*Keys, registry.TenantID) {
	b.Helper()
	k := open(b, Config{Path: filepath.Join(b.TempDir(), "keys.db"), KEK: newKEK(b)})
	return k, registry.TenantID(newID(b, "ten"))
}

// BenchmarkSeal seals 2 KiB through Keys.Seal (cached primitive) and
// through the AEAD a hot path holds for a batch.
func BenchmarkSeal(b *testing.B) {
	ctx := context.Background()
	k, t := benchKeys(b)
	s := subject(b)
	if err := k.Create(ctx, t, s); err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 2048)
	rand.Read(msg)
	ad := []byte("str_aaaaaaaaaaaaaaaaaaaa|1740830400")
	b.Run("Keys.Seal/2KiB", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := k.Seal(ctx, s, msg, ad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AEAD/2KiB", func(b *testing.B) {
		a, err := k.AEAD(ctx, s)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := a.Encrypt(msg, ad); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkOpen opens 2 KiB through Keys.Open with a cached primitive.
func BenchmarkOpen(b *testing.B) {
	ctx := context.Background()
	k, t := benchKeys(b)
	s := subject(b)
	if err := k.Create(ctx, t, s); err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 2048)
	rand.Read(msg)
	ad := []byte("str_aaaaaaaaaaaaaaaaaaaa|1740830400")
	c, err := k.Seal(ctx, s, msg, ad)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := k.Open(ctx, s, c, ad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreate makes, wraps and durably stores one keyset per op
// (SQLite, synchronous=FULL: bound by fsync).
func BenchmarkCreate(b *testing.B) {
	ctx := context.Background()
	k, t := benchKeys(b)
	for b.Loop() {
		if err := k.Create(ctx, t, subject(b)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnwrap measures a cache miss: read the row, unwrap under the
// file KEK, build the primitive.
func BenchmarkUnwrap(b *testing.B) {
	ctx := context.Background()
	k, t := benchKeys(b)
	s := subject(b)
	if err := k.Create(ctx, t, s); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		k.evict(s)
		if _, err := k.AEAD(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
}
