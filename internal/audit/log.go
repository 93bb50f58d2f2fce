package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Config configures a [Log].
type Config struct {
	// Storage keeps the leaves and checkpoints. Must be non-nil. The Log
	// must be its only writer.
	Storage Storage
	// Origin is the checkpoint origin, e.g. "custos.example/audit". Must be
	// non-empty and equal to the names of Signer and Verifier.
	Origin string
	// Signer signs checkpoints (see [GenerateKey]). Must be non-nil.
	Signer note.Signer
	// Verifier is Signer's public half. Must be non-nil.
	Verifier note.Verifier
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// CheckpointInterval is how often a checkpoint is signed while the tree
	// grows. Default 10 s; negative disables the timer (only [Log.Sign]).
	CheckpointInterval time.Duration
	// MaxBatch is the most entries committed with one storage write.
	// Default 8192.
	MaxBatch int
	// Linger is how long a commit waits for more entries before it writes
	// when the previous commit gathered several requests, trading a little
	// latency for fewer fsyncs under concurrent load; a lone request is
	// written at once. Default 0: always write what is queued at once.
	Linger time.Duration
}

// Errors a caller of the Log may want to tell apart.
var (
	// ErrClosed: the Log was closed. Refuse the action.
	ErrClosed = errors.New("audit log closed")
	// ErrTooLarge: a proof or range was asked for beyond the tree's size.
	// Ask again with a size the log has checkpointed.
	ErrTooLarge = errors.New("beyond the tree size")
)

// cachedLevel is the lowest tree level whose node hashes the Log keeps in
// memory (two hashes per 2^cachedLevel leaves); lower nodes are rehashed
// from at most 2^cachedLevel leaves read back from Storage.
const cachedLevel = 6

// Log is the sequencer of one audit log: it appends entries durably in
// group-committed batches, keeps the Merkle tree's compact range and the
// node hashes proofs need, signs checkpoints and serves proofs. Open one
// per Storage; it is safe for concurrent use.
type Log struct {
	cfg    Config
	hasher *rfc6962.Hasher
	reqs   chan *appendReq
	stop   chan struct{}
	wg     sync.WaitGroup

	mu       sync.RWMutex
	size     uint64
	rng      *compact.Range
	levels   [][]byte // levels[k]: hashes of level cachedLevel+k, 32 bytes each
	lastWhen int64

	// appendMu orders appends with catching up on a shared storage.
	appendMu sync.Mutex
	async    AsyncStorage // cfg.Storage, if it can start appends; nil if shared
	started  *startedAppend
	// contended is set while the sequencer gathers several requests per
	// commit: Begin then leaves batching to it.
	contended atomic.Bool
	// syncOnly is set once the storage said it cannot start appends.
	syncOnly atomic.Bool

	signMu sync.Mutex
	cp     []byte // latest signed checkpoint note
	cpSize uint64

	closeMu sync.RWMutex
	closed  bool
}

type appendReq struct {
	ctx     context.Context
	entries []Entry
	done    chan appendResult
}

// startedAppend is an append a Begin started on its own goroutine; it
// joins the tree when it is finished, before any later append.
type startedAppend struct {
	r      *appendReq
	leaves [][]byte
	when   int64
	first  uint64
}

type appendResult struct {
	first uint64
	err   error
}

var factory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// Open rebuilds the tree from cfg.Storage and starts the sequencer. It fails
// with errs.Integrity if the stored leaves do not reproduce the latest stored
// checkpoint (entries lost or rewritten while the hub was down).
func Open(ctx context.Context, cfg Config) (*Log, error) {
	const op errs.Op = "audit.Open"
	if cfg.Storage == nil || cfg.Signer == nil || cfg.Verifier == nil || cfg.Origin == "" {
		return nil, errs.E(op, errs.Invalid, "Storage, Signer, Verifier and Origin are required")
	}
	if cfg.Signer.Name() != cfg.Origin || cfg.Verifier.Name() != cfg.Origin || cfg.Signer.KeyHash() != cfg.Verifier.KeyHash() {
		return nil, errs.E(op, errs.Invalid, "signer, verifier and origin do not match")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = 10 * time.Second
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 8192
	}
	l := &Log{
		cfg:    cfg,
		hasher: rfc6962.DefaultHasher,
		rng:    factory.NewEmptyRange(0),
		reqs:   make(chan *appendReq, cfg.MaxBatch),
		stop:   make(chan struct{}),
	}
	if a, ok := cfg.Storage.(AsyncStorage); ok {
		if _, shared := cfg.Storage.(SharedStorage); !shared {
			l.async = a
		}
	}
	stored, err := cfg.Storage.LatestCheckpoint(ctx)
	if err != nil {
		return nil, errs.E(op, err)
	}
	var want *log.Checkpoint
	if stored != nil {
		want, _, _, err = log.ParseCheckpoint(stored, cfg.Origin, cfg.Verifier)
		if err != nil {
			return nil, errs.E(op, errs.Integrity, fmt.Errorf("stored checkpoint: %w", err))
		}
	}
	size, err := cfg.Storage.Size(ctx)
	if err != nil {
		return nil, errs.E(op, err)
	}
	if want != nil && want.Size > size {
		return nil, errs.E(op, errs.Integrity, fmt.Errorf("storage holds %d entries but checkpoint %d was signed: acknowledged entries are lost", size, want.Size))
	}
	const chunk = 4096
	for from := uint64(0); from < size; from += chunk {
		leaves, err := cfg.Storage.Leaves(ctx, from, min(from+chunk, size))
		if err != nil {
			return nil, errs.E(op, err)
		}
		for i, leaf := range leaves {
			var e Entry
			if err := parseLeaf(leaf, &e); err != nil {
				return nil, errs.E(op, errs.Integrity, fmt.Errorf("entry %d: %w", from+uint64(i), err))
			}
			l.lastWhen = max(l.lastWhen, e.When)
			l.addLeaf(leaf)
			if want != nil && l.size == want.Size {
				if err := l.checkRoot(want); err != nil {
					return nil, errs.E(op, err)
				}
			}
		}
	}
	if want != nil && want.Size == 0 {
		if err := l.checkRoot(want); err != nil {
			return nil, errs.E(op, err)
		}
	}
	if stored != nil {
		l.cp, l.cpSize = stored, want.Size
	}
	l.wg.Add(1)
	go l.sequence()
	if cfg.CheckpointInterval > 0 {
		l.wg.Add(1)
		go l.tick()
	}
	return l, nil
}

func (l *Log) checkRoot(want *log.Checkpoint) error {
	root, err := rootHash(l.rng)
	if err != nil {
		return err
	}
	if string(root) != string(want.Hash) {
		return errs.E(errs.Integrity, fmt.Errorf("stored entries do not reproduce the root of checkpoint %d: entries were rewritten", want.Size))
	}
	return nil
}

// addLeaf appends one leaf to the tree; l.mu must be held for writing (or
// the Log not yet shared).
func (l *Log) addLeaf(leaf []byte) {
	// The visitor error cannot happen on a range built only by Append.
	_ = l.rng.Append(l.hasher.HashLeaf(leaf), func(id compact.NodeID, hash []byte) {
		if id.Level < cachedLevel {
			return
		}
		k := int(id.Level - cachedLevel)
		for len(l.levels) <= k {
			l.levels = append(l.levels, nil)
		}
		l.levels[k] = append(l.levels[k], hash...)
	})
	l.size++
}

// Append sequences e, makes it durable and returns its index. It returns
// only when the entry is durable, or with an error — then nothing was
// acknowledged and the caller MUST refuse the action it records. Concurrent
// calls are committed together. e.When is replaced by the sequencing time.
func (l *Log) Append(ctx context.Context, e Entry) (uint64, error) {
	return l.AppendBatch(ctx, []Entry{e})
}

// AppendBatch is Append for several entries, which get consecutive indexes;
// it returns the first. All are durable, or none is acknowledged.
func (l *Log) AppendBatch(ctx context.Context, entries []Entry) (uint64, error) {
	p, err := l.Begin(ctx, entries...)
	if err != nil {
		return 0, err
	}
	return p.Wait()
}

// Pending is an append on its way to disk.
type Pending struct {
	r *appendReq
	l *Log // set if Begin started the append itself
}

// Discarded is a Pending that succeeds without anything written, for
// benchmarks that time a hub without its log.
func Discarded() Pending {
	r := &appendReq{done: make(chan appendResult, 1)}
	r.done <- appendResult{}
	return Pending{r: r}
}

// Begin queues entries for appending and returns at once, so that the
// caller can prepare its action while they are made durable; it must call
// Wait before acknowledging the action. Entries of one Begin get
// consecutive indexes.
//
// When no other append is under way and the storage can start appends
// (an [AsyncStorage]), Begin starts the write itself, on the caller's
// goroutine: the device is already writing while the caller works, with no
// thread to wake first — on a busy two-core machine the sequencer was often
// not scheduled before the caller's work was done (docs/design-notes.md).
func (l *Log) Begin(ctx context.Context, entries ...Entry) (Pending, error) {
	const op errs.Op = "audit.Append"
	if len(entries) == 0 || len(entries) > l.cfg.MaxBatch {
		return Pending{}, errs.E(op, errs.Invalid, fmt.Errorf("batch of %d entries", len(entries)))
	}
	for i := range entries {
		e := entries[i]
		e.When = 0
		if err := e.Validate(); err != nil {
			return Pending{}, errs.E(op, errs.Invalid, err)
		}
	}
	r := &appendReq{ctx: ctx, entries: entries, done: make(chan appendResult, 1)}
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return Pending{}, errs.E(op, errs.Unavailable, ErrClosed)
	}
	// TryLock: the direct start is only worth it uncontended; otherwise
	// the sequencer gathers this request with the others.
	if l.async != nil && !l.syncOnly.Load() && !l.contended.Load() && len(l.reqs) == 0 && l.appendMu.TryLock() {
		started := l.startLocked(r)
		l.appendMu.Unlock()
		if started {
			l.closeMu.RUnlock()
			return Pending{r: r, l: l}, nil
		}
	}
	select {
	case l.reqs <- r:
		l.closeMu.RUnlock()
	case <-ctx.Done():
		l.closeMu.RUnlock()
		return Pending{}, errs.E(op, errs.Unavailable, ctx.Err())
	}
	return Pending{r: r}, nil
}

// startLocked stamps r's entries and starts writing them; appendMu held.
// A failure is r's verdict. It returns false, with r untouched, if the
// storage cannot start appends (then the sequencer writes them).
func (l *Log) startLocked(r *appendReq) bool {
	l.finishLocked()
	if err := r.ctx.Err(); err != nil {
		r.done <- appendResult{err: errs.E(errs.Unavailable, err)}
		return true
	}
	when := max(l.cfg.Now().UnixMilli(), l.lastWhenLocked())
	leaves := stamp(nil, r.entries, when)
	first, err := l.async.StartAppend(leaves)
	if errors.Is(err, errors.ErrUnsupported) {
		l.syncOnly.Store(true)
		return false
	}
	if err != nil {
		r.done <- appendResult{err: err}
		return true
	}
	l.started = &startedAppend{r: r, leaves: leaves, when: when, first: first}
	return true
}

// finishLocked waits for the append Begin started, if any, adds it to the
// tree and gives its verdict; appendMu held.
func (l *Log) finishLocked() {
	s := l.started
	if s == nil {
		return
	}
	l.started = nil
	err := l.async.FinishAppend()
	if err == nil && s.first != l.Size() {
		err = errs.E(errs.Integrity, fmt.Errorf("storage placed the batch at %d, the tree has %d leaves: another writer?", s.first, l.Size()))
	}
	if err != nil {
		s.r.done <- appendResult{err: err}
		return
	}
	l.mu.Lock()
	for _, leaf := range s.leaves {
		l.addLeaf(leaf)
	}
	l.lastWhen = max(l.lastWhen, s.when)
	l.mu.Unlock()
	s.r.done <- appendResult{first: s.first}
}

// Wait returns the index of the first entry once all are durable, or an
// error — then nothing was acknowledged and the caller MUST refuse the
// action they record. Once queued, the verdict is awaited even if the
// context ends: the entries may already be on their way to disk, and the
// caller must know.
func (p Pending) Wait() (uint64, error) {
	if p.r == nil {
		return 0, errs.E(errs.Op("audit.Append"), errs.Unavailable, "nothing was queued")
	}
	if p.l != nil {
		select {
		case res := <-p.r.done: // finished by a later append already
			p.r.done <- res
		default:
			p.l.appendMu.Lock()
			if p.l.started != nil && p.l.started.r == p.r {
				p.l.finishLocked()
			}
			p.l.appendMu.Unlock()
		}
	}
	res := <-p.r.done
	p.r.done <- res // a second Wait gets the same verdict
	if res.err != nil {
		return 0, errs.E(errs.Op("audit.Append"), res.err)
	}
	return res.first, nil
}

// stamp appends to leaves the encodings of entries, timed when.
func stamp(leaves [][]byte, entries []Entry, when int64) [][]byte {
	for _, e := range entries {
		e.When = when
		leaf, err := e.MarshalBinary()
		if err != nil { // validated in Begin; cannot happen
			panic(err)
		}
		leaves = append(leaves, leaf)
	}
	return leaves
}

func (l *Log) sequence() {
	defer l.wg.Done()
	batch := make([]*appendReq, 0, 64)
	busy := false
	for {
		batch = batch[:0]
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
		case <-l.stop:
			l.drain()
			return
		}
		n := len(batch[0].entries)
		// Linger only under concurrent load (the last commit gathered
		// several requests): a lone request is written at once.
		var linger <-chan time.Time
		if l.cfg.Linger > 0 && busy {
			linger = time.After(l.cfg.Linger)
		}
	more:
		for n < l.cfg.MaxBatch {
			var r *appendReq
			if linger != nil {
				select {
				case r = <-l.reqs:
				case <-linger:
					break more
				}
			} else {
				select {
				case r = <-l.reqs:
				default:
					break more
				}
			}
			if n+len(r.entries) > l.cfg.MaxBatch {
				l.commit(batch)
				batch, n = append(batch[:0], r), 0
			} else {
				batch = append(batch, r)
			}
			n += len(r.entries)
		}
		busy = len(batch) > 1
		l.contended.Store(busy)
		l.commit(batch)
	}
}

// drain fails requests queued when the Log closed.
func (l *Log) drain() {
	for {
		select {
		case r := <-l.reqs:
			r.done <- appendResult{err: errs.E(errs.Unavailable, ErrClosed)}
		default:
			return
		}
	}
}

func (l *Log) commit(batch []*appendReq) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- appendResult{err: errs.E(errs.Unavailable, err)}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	l.finishLocked()
	when := max(l.cfg.Now().UnixMilli(), l.lastWhenLocked())
	var leaves [][]byte
	build := func(lastWhen int64) ([][]byte, error) {
		when = max(when, lastWhen)
		leaves = leaves[:0]
		for _, r := range live {
			leaves = stamp(leaves, r.entries, when)
		}
		return leaves, nil
	}
	var first uint64
	var err error
	s, shared := l.cfg.Storage.(SharedStorage)
	if shared {
		first, err = s.AppendStamped(context.Background(), build)
	} else {
		leaves, _ = build(0)
		first, err = l.cfg.Storage.Append(context.Background(), leaves)
	}
	if err == nil && first > l.Size() && shared {
		// Other replicas appended since: take their entries in first.
		err = l.catchUp(context.Background(), first)
	}
	if err == nil && first != l.Size() {
		err = errs.E(errs.Integrity, fmt.Errorf("storage placed the batch at %d, the tree has %d leaves: another writer?", first, l.Size()))
	}
	if err != nil {
		for _, r := range live {
			r.done <- appendResult{err: err}
		}
		return
	}
	l.mu.Lock()
	for _, leaf := range leaves {
		l.addLeaf(leaf)
	}
	l.lastWhen = max(l.lastWhen, when)
	l.mu.Unlock()
	idx := first
	for _, r := range live {
		r.done <- appendResult{first: idx}
		idx += uint64(len(r.entries))
	}
}

func (l *Log) tick() {
	defer l.wg.Done()
	t := time.NewTicker(l.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			// A failure here is retried at the next tick; Sign reports it to
			// callers who ask.
			_, _ = l.Sign(context.Background())
		case <-l.stop:
			return
		}
	}
}

// Size returns the number of durable entries.
func (l *Log) Size() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.size
}

func (l *Log) lastWhenLocked() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.lastWhen
}

// catchUp adds the entries other writers of a shared storage appended,
// up to (not including) index to. l.appendMu must be held.
func (l *Log) catchUp(ctx context.Context, to uint64) error {
	const chunk = 4096
	for from := l.Size(); from < to; from = l.Size() {
		leaves, err := l.cfg.Storage.Leaves(ctx, from, min(from+chunk, to))
		if err != nil {
			return err
		}
		l.mu.Lock()
		for i, leaf := range leaves {
			var e Entry
			if err := parseLeaf(leaf, &e); err != nil {
				l.mu.Unlock()
				return errs.E(errs.Integrity, fmt.Errorf("entry %d: %w", from+uint64(i), err))
			}
			l.lastWhen = max(l.lastWhen, e.When)
			l.addLeaf(leaf)
		}
		l.mu.Unlock()
	}
	return nil
}

// sync brings a Log on a shared storage up to what every replica appended;
// on a private storage it does nothing.
func (l *Log) sync(ctx context.Context) error {
	if _, shared := l.cfg.Storage.(SharedStorage); !shared {
		return nil
	}
	n, err := l.cfg.Storage.Size(ctx)
	if err != nil {
		return err
	}
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if n > l.Size() {
		return l.catchUp(ctx, n)
	}
	return nil
}

// Origin returns the log's checkpoint origin.
func (l *Log) Origin() string { return l.cfg.Origin }

// Sign signs and stores a checkpoint for the current tree, unless the latest
// one already covers it, and returns the latest checkpoint note.
func (l *Log) Sign(ctx context.Context) ([]byte, error) {
	const op errs.Op = "audit.Sign"
	if err := l.sync(ctx); err != nil {
		return nil, errs.E(op, err)
	}
	l.signMu.Lock()
	defer l.signMu.Unlock()
	l.mu.RLock()
	size := l.size
	root, err := rootHash(l.rng)
	l.mu.RUnlock()
	if err != nil {
		return nil, errs.E(op, err)
	}
	if l.cp != nil && size == l.cpSize {
		return l.cp, nil
	}
	cp := log.Checkpoint{Origin: l.cfg.Origin, Size: size, Hash: root}
	signed, err := note.Sign(&note.Note{Text: string(cp.Marshal())}, l.cfg.Signer)
	if err != nil {
		return nil, errs.E(op, err)
	}
	if err := l.cfg.Storage.StoreCheckpoint(ctx, signed); err != nil {
		return nil, errs.E(op, err)
	}
	l.cp, l.cpSize = signed, size
	return signed, nil
}

// Checkpoint returns the latest signed checkpoint note, signing one first if
// none exists yet. Serve it at the well-known URL; witnesses fetch it.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	l.signMu.Lock()
	cp := l.cp
	l.signMu.Unlock()
	if cp != nil {
		return cp, nil
	}
	return l.Sign(ctx)
}

// Leaves returns the encoded entries [from, to).
func (l *Log) Leaves(ctx context.Context, from, to uint64) ([][]byte, error) {
	if size := l.Size(); from > to || to > size {
		return nil, errs.E(errs.Op("audit.Leaves"), errs.Invalid, fmt.Errorf("%w: [%d, %d) of %d", ErrTooLarge, from, to, size))
	}
	return l.cfg.Storage.Leaves(ctx, from, to)
}

// Entries returns the decoded entries [from, to).
func (l *Log) Entries(ctx context.Context, from, to uint64) ([]Entry, error) {
	leaves, err := l.Leaves(ctx, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(leaves))
	for i, leaf := range leaves {
		if err := parseLeaf(leaf, &out[i]); err != nil {
			return nil, errs.E(errs.Op("audit.Entries"), errs.Integrity, fmt.Errorf("entry %d: %w", from+uint64(i), err))
		}
	}
	return out, nil
}

// InclusionProof returns the proof that entry index is in the tree of the
// given size (a checkpointed size: the client holds its root). Check it
// with [VerifyInclusion].
func (l *Log) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	const op errs.Op = "audit.InclusionProof"
	if size > l.Size() {
		if err := l.sync(ctx); err != nil {
			return nil, errs.E(op, err)
		}
	}
	if size > l.Size() {
		return nil, errs.E(op, errs.Invalid, fmt.Errorf("%w: size %d", ErrTooLarge, size))
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, err)
	}
	return l.rehash(ctx, nodes)
}

// ConsistencyProof returns the proof that the tree of size1 is a prefix of
// the tree of size2. Check it with [VerifyConsistency].
func (l *Log) ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error) {
	const op errs.Op = "audit.ConsistencyProof"
	if size2 > l.Size() {
		if err := l.sync(ctx); err != nil {
			return nil, errs.E(op, err)
		}
	}
	if size2 > l.Size() {
		return nil, errs.E(op, errs.Invalid, fmt.Errorf("%w: size %d", ErrTooLarge, size2))
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, err)
	}
	return l.rehash(ctx, nodes)
}

func (l *Log) rehash(ctx context.Context, nodes proof.Nodes) ([][]byte, error) {
	hashes, err := l.nodeHashes(ctx, nodes.IDs)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hashes, l.hasher.HashChildren)
}

// nodeHashes returns the hashes of perfect subtrees already in the tree.
// Nodes below cachedLevel are rehashed from their aligned block of
// 2^cachedLevel leaves, each block read from Storage once per call.
func (l *Log) nodeHashes(ctx context.Context, ids []compact.NodeID) ([][]byte, error) {
	const op errs.Op = "audit.nodeHashes"
	out := make([][]byte, len(ids))
	blocks := map[uint64][][]byte{} // block number -> leaf hashes
	for i, id := range ids {
		if id.Level >= cachedLevel {
			k := int(id.Level - cachedLevel)
			l.mu.RLock()
			if k >= len(l.levels) || uint64(len(l.levels[k])) < 32*(id.Index+1) {
				l.mu.RUnlock()
				return nil, errs.E(op, fmt.Errorf("node %d/%d not in the tree", id.Level, id.Index))
			}
			out[i] = append([]byte(nil), l.levels[k][32*id.Index:32*(id.Index+1)]...)
			l.mu.RUnlock()
			continue
		}
		begin, end := id.Coverage()
		block := begin >> cachedLevel
		hashes, ok := blocks[block]
		if !ok {
			from := block << cachedLevel
			to := min(from+1<<cachedLevel, l.Size())
			if end > to {
				return nil, errs.E(op, fmt.Errorf("node %d/%d not in the tree", id.Level, id.Index))
			}
			leaves, err := l.cfg.Storage.Leaves(ctx, from, to)
			if err != nil {
				return nil, errs.E(op, err)
			}
			hashes = make([][]byte, len(leaves))
			for j, leaf := range leaves {
				hashes[j] = l.hasher.HashLeaf(leaf)
			}
			blocks[block] = hashes
		}
		r := factory.NewEmptyRange(begin)
		for _, h := range hashes[begin-block<<cachedLevel : end-block<<cachedLevel] {
			_ = r.Append(h, nil)
		}
		h := r.Hashes()
		if len(h) != 1 {
			return nil, errs.E(op, fmt.Errorf("node %d/%d is not a perfect subtree", id.Level, id.Index))
		}
		out[i] = h[0]
	}
	return out, nil
}

// rangeHashes returns the compact range of [begin, end), for export bundles.
func (l *Log) rangeHashes(ctx context.Context, begin, end uint64) ([][]byte, error) {
	return l.nodeHashes(ctx, compact.RangeNodes(begin, end, nil))
}

// Close stops the sequencer and the checkpoint timer. Appends after Close
// fail with ErrClosed. It does not close the Storage.
func (l *Log) Close() error {
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return nil
	}
	l.closed = true
	l.closeMu.Unlock()
	close(l.stop)
	l.wg.Wait()
	l.appendMu.Lock()
	l.finishLocked() // a started append gets its verdict before the storage closes
	l.appendMu.Unlock()
	return nil
}

// rootHash returns the RFC 6962 root of a compact range starting at 0; the
// empty tree's root is the hash of nothing.
func rootHash(r *compact.Range) ([]byte, error) {
	if r.End() == 0 {
		return rfc6962.DefaultHasher.EmptyRoot(), nil
	}
	return r.GetRootHash(nil)
}
