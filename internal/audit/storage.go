package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Storage keeps the leaves and the latest signed checkpoint of one log.
// [Log] is its only writer; reads may run concurrently with an Append.
type Storage interface {
	// Append stores leaves after the existing ones and returns the index of
	// the first. It MUST NOT return nil before every leaf is durable, and
	// MUST NOT leave a partial batch visible to Leaves or Size if it fails.
	Append(ctx context.Context, leaves [][]byte) (first uint64, err error)
	// Leaves returns the leaves with indexes in [from, to); to MUST NOT
	// exceed Size.
	Leaves(ctx context.Context, from, to uint64) ([][]byte, error)
	// Size returns the number of durable leaves.
	Size(ctx context.Context) (uint64, error)
	// StoreCheckpoint durably replaces the latest signed checkpoint.
	StoreCheckpoint(ctx context.Context, note []byte) error
	// LatestCheckpoint returns the latest stored checkpoint, or nil if none.
	LatestCheckpoint(ctx context.Context) ([]byte, error)
}

// SharedStorage is a Storage that several Logs append to: the hub's
// replicas on one database. AppendStamped places a batch after whatever any
// writer appended (so first may be beyond the caller's tree, which then
// catches up). Times never decrease along the log: the storage holds its
// writers' lock while it asks build for the batch's leaves, passing the time
// of the newest stored entry, so build can stamp the batch no earlier. The
// storage's plain Append is not used by a Log. StoreCheckpoint keeps the
// checkpoint of the largest tree.
type SharedStorage interface {
	Storage
	// AppendStamped calls build once, under the lock that orders writers,
	// with the time (Unix ms) of the newest stored entry (0 if none), and
	// appends the leaves it returns. It returns the index of the first leaf
	// and follows Append's rules on durability and partial batches.
	AppendStamped(ctx context.Context, build func(lastWhen int64) ([][]byte, error)) (first uint64, err error)
}

// AsyncStorage is a Storage that can begin an append and finish it later,
// so that the goroutine that records an action can carry the action out
// while the device writes the entry (see [Log.Begin]). A Log starts at most
// one such append at a time and finishes it before any other append.
type AsyncStorage interface {
	Storage
	// StartAppend places leaves after the existing ones, returns the index
	// of the first and starts making them durable. They are not visible
	// to Leaves or Size before FinishAppend succeeds. It fails with
	// errors.ErrUnsupported, having done nothing, if it cannot start an
	// append without waiting for it.
	StartAppend(leaves [][]byte) (first uint64, err error)
	// FinishAppend waits until the started append is durable. It follows
	// Append's rules on durability and partial batches.
	FinishAppend() error
}

// MemoryStorage is a Storage in memory, for tests and ephemeral demos. It is
// not durable: it loses everything with the process.
type MemoryStorage struct {
	mu     sync.RWMutex
	leaves [][]byte
	cp     []byte
}

// NewMemoryStorage returns an empty MemoryStorage.
func NewMemoryStorage() *MemoryStorage { return &MemoryStorage{} }

var errRange = errors.New("leaf range out of bounds")

// Append implements Storage.
func (m *MemoryStorage) Append(ctx context.Context, leaves [][]byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	first := uint64(len(m.leaves))
	for _, l := range leaves {
		m.leaves = append(m.leaves, slices.Clone(l))
	}
	return first, nil
}

// Leaves implements Storage.
func (m *MemoryStorage) Leaves(ctx context.Context, from, to uint64) ([][]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if from > to || to > uint64(len(m.leaves)) {
		return nil, fmt.Errorf("%w: [%d, %d) of %d", errRange, from, to, len(m.leaves))
	}
	out := make([][]byte, 0, to-from)
	for _, l := range m.leaves[from:to] {
		out = append(out, slices.Clone(l))
	}
	return out, nil
}

// Size implements Storage.
func (m *MemoryStorage) Size(context.Context) (uint64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return uint64(len(m.leaves)), nil
}

// StoreCheckpoint implements Storage.
func (m *MemoryStorage) StoreCheckpoint(_ context.Context, note []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cp = slices.Clone(note)
	return nil
}

// LatestCheckpoint implements Storage.
func (m *MemoryStorage) LatestCheckpoint(context.Context) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.cp), nil
}
