package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// memQueue is a Queue in memory; failRemove makes the next Remove fail
// after it was asked (a crash between append and removal).
type memQueue struct {
	mu         sync.Mutex
	next       uint64
	items      []Queued
	failRemove bool
}

func (q *memQueue) add(es ...Entry) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range es {
		q.next++
		q.items = append(q.items, Queued{Seq: q.next, Entry: e})
	}
}

func (q *memQueue) Pending(_ context.Context, max int) ([]Queued, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.items[:min(max, len(q.items))]), nil
}

func (q *memQueue) Remove(_ context.Context, upTo uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failRemove {
		q.failRemove = false
		return errors.New("crash")
	}
	q.items = slices.DeleteFunc(q.items, func(x Queued) bool { return x.Seq <= upTo })
	return nil
}

func batchEntry(i int) Entry {
	return Entry{Principal: "con_1", Action: "ingest.batch", Resource: Resource(fmt.Sprintf("batch/%06d", i)), Outcome: Allowed, Request: RequestID(fmt.Sprintf("req-%d", i/3))}
}

// TestIntegratorExactlyOnce: queued entries reach the log in queue order,
// interleaved with direct appends, each exactly once — also when the
// integrator "crashes" between appending and removing, and a new one
// (a restarted hub) takes over.
func TestIntegratorExactlyOnce(t *testing.T) {
	ctx := context.Background()
	st := NewMemoryStorage()
	l := openTestLog(t, st, 1)
	q := &memQueue{}
	in := NewIntegrator(l, q)
	for i := range 10 {
		q.add(batchEntry(i))
	}
	fill(t, l, 0, 3) // other requests' entries in between
	if err := in.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 5000; i++ {
		q.add(batchEntry(i))
	}
	q.failRemove = true
	if err := in.Flush(ctx); err == nil {
		t.Fatal("Flush succeeded through a failed removal")
	}
	fill(t, l, 3, 2)
	// Neither the same integrator retrying nor a restarted hub's may
	// append the first 4096 again.
	if err := in.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 5000; i < 5100; i++ {
		q.add(batchEntry(i))
	}
	q.failRemove = true
	if err := in.Flush(ctx); err == nil {
		t.Fatal("Flush succeeded through a failed removal")
	}
	in2 := NewIntegrator(l, q)
	if err := in2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(q.items) != 0 {
		t.Fatalf("%d entries left in the queue", len(q.items))
	}
	es, err := l.Entries(ctx, 0, l.Size())
	if err != nil {
		t.Fatal(err)
	}
	var got []Resource
	for _, e := range es {
		if e.Action == "ingest.batch" && e.Principal == "con_1" {
			got = append(got, e.Resource)
		}
	}
	if len(got) != 5100 {
		t.Fatalf("%d batch entries in the log, want 5100 (each once)", len(got))
	}
	for i, r := range got {
		if want := batchEntry(i).Resource; r != want {
			t.Fatalf("entry %d is %s, want %s (queue order)", i, r, want)
		}
	}
	if l.Size() != 5105 {
		t.Errorf("log size %d, want 5105", l.Size())
	}
}

// notLeader is a queue whose replica does not lead.
type notLeader struct{ memQueue }

func (*notLeader) Lead(context.Context) (bool, error) { return false, nil }

func TestIntegratorFollowerWaits(t *testing.T) {
	l := openTestLog(t, NewMemoryStorage(), 1)
	q := &notLeader{}
	q.add(batchEntry(1))
	if err := NewIntegrator(l, q).Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l.Size() != 0 || len(q.items) != 1 {
		t.Errorf("a follower integrated: log %d, queue %d", l.Size(), len(q.items))
	}
}
