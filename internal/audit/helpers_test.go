package audit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

const testOrigin = "custos.example/audit"

// testKey returns a deterministic note key pair for name.
func testKey(t testing.TB, name string, seed byte) (note.Signer, note.Verifier, string) {
	t.Helper()
	skey, vkey, err := GenerateKey(rand.NewChaCha8([32]byte{seed}), name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v, vkey
}

// stepClock returns a clock that advances 1 ms per call, from a fixed epoch.
func stepClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Millisecond)
		return t
	}
}

func testEntry(i int) Entry {
	e := Entry{
		Principal: PrincipalID(fmt.Sprintf("p-%04d", i%17)),
		Action:    []Action{"series.read", "grant.create", "login", "ingest.batch"}[i%4],
		Resource:  Resource(fmt.Sprintf("stream/meter-%d/import_power_w", i%5)),
		Outcome:   []Outcome{Allowed, Denied, Failed}[i%3],
		Request:   RequestID(fmt.Sprintf("req-%06d", i)),
	}
	if e.Action == "series.read" {
		e.Resolution, e.Purpose, e.Subject = "15m", "billing", SubjectID(fmt.Sprintf("s-%d", i%7))
	}
	return e
}

func openTestLog(t testing.TB, st Storage, seed byte) *Log {
	t.Helper()
	s, v, _ := testKey(t, testOrigin, seed)
	l, err := Open(context.Background(), Config{Storage: st, Origin: testOrigin, Signer: s, Verifier: v, Now: stepClock(), CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// fill appends n entries one by one (each its own batch: distinct times).
func fill(t testing.TB, l *Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := l.Append(context.Background(), testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
}
