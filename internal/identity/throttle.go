package identity

import (
	"sync"
	"time"
)

// ThrottleConfig sets how failed logins slow down further attempts.
type ThrottleConfig struct {
	// Free is the number of failures allowed without delay. Default 5.
	Free int
	// Base is the delay after the first failure beyond Free; it doubles
	// with each further failure. Default 1 s.
	Base time.Duration
	// Max caps the delay: the temporary lockout. Default 15 min.
	Max time.Duration
	// Forget drops a key's failures after this long without one. Default 24 h.
	Forget time.Duration
	// Keys bounds the number of keys remembered. Default 100,000.
	Keys int
}

func (c *ThrottleConfig) setDefaults(free int) {
	if c.Free == 0 {
		c.Free = free
	}
	if c.Base == 0 {
		c.Base = time.Second
	}
	if c.Max == 0 {
		c.Max = 15 * time.Minute
	}
	if c.Forget == 0 {
		c.Forget = 24 * time.Hour
	}
	if c.Keys == 0 {
		c.Keys = 100_000
	}
}

// throttle counts failed attempts per key (an account, a client address)
// and answers how long a key must wait before its next attempt: nothing
// for the first Free failures, then Base, 2·Base, 4·Base, ... up to Max.
// Every attempt counts as a failure when it starts (so that concurrent
// attempts cannot slip past the count) and is taken back on success.
type throttle struct {
	cfg ThrottleConfig
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*fails
}

type fails struct {
	n    int
	last time.Time
}

func newThrottle(cfg ThrottleConfig, now func() time.Time) *throttle {
	return &throttle{cfg: cfg, now: now, m: map[string]*fails{}}
}

func (t *throttle) delay(n int) time.Duration {
	if n < t.cfg.Free {
		return 0
	}
	k := n - t.cfg.Free
	if k > 30 {
		return t.cfg.Max
	}
	return min(t.cfg.Base<<k, t.cfg.Max)
}

// wait is how long key must still wait; the caller holds mu.
func (t *throttle) wait(key string, now time.Time) time.Duration {
	f := t.m[key]
	if f == nil {
		return 0
	}
	if now.Sub(f.last) >= t.cfg.Forget {
		delete(t.m, key)
		return 0
	}
	return max(f.last.Add(t.delay(f.n)).Sub(now), 0)
}

// attempt starts an attempt for every key at once: if any key must wait,
// nothing is counted and the longest wait is returned; otherwise each key
// is charged one failure.
func (t *throttle) attempt(keys ...string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var w time.Duration
	for _, k := range keys {
		w = max(w, t.wait(k, now))
	}
	if w > 0 {
		return w
	}
	for _, k := range keys {
		f := t.m[k]
		if f == nil {
			t.evictLocked(now)
			f = &fails{}
			t.m[k] = f
		}
		f.n++
		f.last = now
	}
	return 0
}

// forgive takes back the failure charged to key by a successful attempt
// and, with reset, forgets key's earlier failures too.
func (t *throttle) forgive(key string, reset bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.m[key]
	if f == nil {
		return
	}
	f.n--
	if reset || f.n <= 0 {
		delete(t.m, key)
	}
}

// evictLocked makes room for a new key: first keys that no longer delay
// anything, then arbitrary ones (an attacker spraying keys can only make
// the throttle forget, never make it refuse a fresh key).
func (t *throttle) evictLocked(now time.Time) {
	if len(t.m) < t.cfg.Keys {
		return
	}
	for k := range t.m {
		if t.wait(k, now) == 0 {
			delete(t.m, k)
		}
	}
	for k := range t.m {
		if len(t.m) < t.cfg.Keys {
			break
		}
		delete(t.m, k)
	}
}
