package audit

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/custos-iot/custos/internal/errs"
)

// Queued is an entry made durable outside the log, in the same database
// transaction as the action it records (an ingested batch), and waiting to
// be integrated into the log. This is the queue-then-integrate design of
// transparency logs: the action pays no second fsync, and its entry is
// exactly as durable as the action.
type Queued struct {
	Seq   uint64
	Entry Entry
}

// Queue holds queued entries until an Integrator moves them into the log.
type Queue interface {
	// Pending returns up to max queued entries, in Seq order.
	Pending(ctx context.Context, max int) ([]Queued, error)
	// Remove deletes the queued entries with Seq <= upTo.
	Remove(ctx context.Context, upTo uint64) error
}

// Leader is implemented by a Queue shared by several hub replicas: only
// the replica that holds the lead integrates (so no entry is integrated
// twice by two replicas at once). Lead returns whether this replica leads
// now; it must be cheap to call again.
type Leader interface {
	Lead(ctx context.Context) (bool, error)
}

// MaxIntegrate is the most queued entries integrated with one append.
const MaxIntegrate = 4096

// dedupWindow is how far back from the end of the log an Integrator looks
// for entries it appended but could not yet remove from the queue (a crash
// between the two steps): the last integration plus whatever other writers
// appended meanwhile.
const dedupWindow = 1 << 16

// Integrator moves queued entries into a Log, in queue order, each exactly
// once: after a crash between appending a batch and removing it from the
// queue, the first pass finds the appended entries at the end of the log
// (by principal, action, resource and request, which name a queued action
// uniquely) and removes them without appending them again.
type Integrator struct {
	log  *Log
	q    Queue
	wake chan struct{}

	mu       sync.Mutex // one pass at a time
	deduped  bool       // the tail of the log was checked since taking the lead
	interval time.Duration
}

// NewIntegrator returns an Integrator of q's entries into l.
func NewIntegrator(l *Log, q Queue) *Integrator {
	return &Integrator{log: l, q: q, wake: make(chan struct{}, 1), interval: 50 * time.Millisecond}
}

// Wake asks for a pass soon (after new entries were queued).
func (in *Integrator) Wake() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// Run integrates until ctx ends: after every Wake, and at least every
// 50 ms. Errors are retried at the next pass; report receives them.
func (in *Integrator) Run(ctx context.Context, report func(error)) {
	t := time.NewTicker(in.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-in.wake:
		case <-t.C:
		}
		if err := in.Flush(ctx); err != nil && !errors.Is(err, context.Canceled) && report != nil {
			report(err)
		}
	}
}

// Flush integrates every entry queued before the call (if this replica
// leads). Reads that must see every acknowledged action — export, signing
// a checkpoint for a verifier — call it first.
func (in *Integrator) Flush(ctx context.Context) error {
	const op errs.Op = "audit.Integrate"
	in.mu.Lock()
	defer in.mu.Unlock()
	if ld, ok := in.q.(Leader); ok {
		lead, err := ld.Lead(ctx)
		if err != nil {
			in.deduped = false
			return errs.E(op, errs.Unavailable, err)
		}
		if !lead {
			in.deduped = false
			return nil
		}
	}
	for {
		qs, err := in.q.Pending(ctx, MaxIntegrate)
		if err != nil {
			return errs.E(op, errs.Unavailable, err)
		}
		if len(qs) == 0 {
			return nil
		}
		if !in.deduped {
			if qs, err = in.dedup(ctx, qs); err != nil {
				return errs.E(op, err)
			}
			in.deduped = true
			if len(qs) == 0 {
				continue
			}
		}
		entries := make([]Entry, len(qs))
		for i, q := range qs {
			entries[i] = q.Entry
		}
		if _, err := in.log.AppendBatch(ctx, entries); err != nil {
			return errs.E(op, err)
		}
		// The entries are in the log; a crash before this removal is
		// what dedup repairs.
		if err := in.q.Remove(ctx, qs[len(qs)-1].Seq); err != nil {
			in.deduped = false // the next pass must look for them first
			return errs.E(op, errs.Unavailable, err)
		}
	}
}

type entryKey struct {
	p PrincipalID
	a Action
	r Resource
	q RequestID
}

// dedup removes from the queue (and from qs) the queued entries already at
// the end of the log, and returns the rest.
func (in *Integrator) dedup(ctx context.Context, qs []Queued) ([]Queued, error) {
	if err := in.log.sync(ctx); err != nil {
		return nil, err
	}
	size := in.log.Size()
	from := uint64(0)
	if size > dedupWindow {
		from = size - dedupWindow
	}
	if from == size {
		return qs, nil
	}
	tail, err := in.log.Entries(ctx, from, size)
	if err != nil {
		return nil, err
	}
	seen := make(map[entryKey]bool, len(tail))
	for _, e := range tail {
		seen[entryKey{e.Principal, e.Action, e.Resource, e.Request}] = true
	}
	n := 0
	for n < len(qs) && seen[entryKey{qs[n].Entry.Principal, qs[n].Entry.Action, qs[n].Entry.Resource, qs[n].Entry.Request}] {
		n++
	}
	if n == 0 {
		return qs, nil
	}
	if err := in.q.Remove(ctx, qs[n-1].Seq); err != nil {
		return nil, errs.E(errs.Unavailable, err)
	}
	return qs[n:], nil
}
