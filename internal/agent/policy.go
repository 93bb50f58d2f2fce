package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/custos-iot/custos/internal/collection"
	"github.com/custos-iot/custos/internal/enrol"
	"github.com/custos-iot/custos/internal/source"
	"github.com/custos-iot/custos/internal/uplink"
	"github.com/custos-iot/custos/internal/wire"
)

// collectionFile holds, next to the spool, the last collection policy
// fetched from the hub and the aggregator's open buckets, so that a
// restarted agent applies the same policy and continues its buckets.
const collectionFile = "collection.json"

type collectionState struct {
	Document   *collection.Document `json:"document,omitempty"`
	Aggregator json.RawMessage      `json:"aggregator,omitempty"`
}

// loadCollection restores the policy and the aggregator. A missing file
// is a fresh start; an unreadable one is logged and replaced.
func (a *Agent) loadCollection() {
	a.agg = collection.NewAggregator()
	b, err := os.ReadFile(filepath.Join(a.cfg.StateDir, collectionFile))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var st collectionState
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	var g *collection.Aggregator
	if err == nil && len(st.Aggregator) > 0 {
		g, err = collection.RestoreAggregator(st.Aggregator, a.cfg.Now())
	}
	if err != nil {
		a.cfg.Log.Warn("agent: collection state unreadable; open buckets are lost, the policy is fetched again", "err", err)
		return
	}
	if g != nil {
		a.agg = g
	}
	if st.Document != nil {
		d := collection.NewDocument(st.Document.Streams) // sorted, as Lookup needs
		a.doc = &d
	}
}

// saveCollectionLocked writes the policy and the aggregator's state
// atomically. Call with a.mu held, after the spool holds every reading
// the aggregator has emitted.
func (a *Agent) saveCollectionLocked() error {
	if !a.aggDirty {
		return nil
	}
	agg, err := a.agg.MarshalState()
	if err != nil {
		return fmt.Errorf("agent: collection state: %w", err)
	}
	b, err := json.Marshal(collectionState{Document: a.doc, Aggregator: agg})
	if err != nil {
		return fmt.Errorf("agent: collection state: %w", err)
	}
	if err := enrol.WriteFile(filepath.Join(a.cfg.StateDir, collectionFile), b, 0o600, false); err != nil {
		return fmt.Errorf("agent: save collection state: %w", err)
	}
	a.aggDirty, a.aggSaved = false, a.cfg.Now()
	return nil
}

// applyLocked applies the collection policy to readings from a source,
// adding what may leave to the pending batch. Sources start only once a
// policy is known (see firstPolicy); against a hub that serves none, every
// stream is sent raw.
func (a *Agent) applyLocked(rs []source.Reading) {
	if a.doc == nil {
		for _, r := range rs {
			a.pendLocked(r.Key, r.Reading)
		}
		return
	}
	now := a.cfg.Now()
	for _, r := range rs {
		p, ok := a.doc.Lookup(r.Key)
		if ok && p.Send && p.Finest == "raw" && !a.aggOpen[r.Key] {
			a.pendLocked(r.Key, r.Reading) // the common case, without the aggregator
			continue
		}
		a.agg.Add(r.Key, p, ok, r.Reading, now, a.pend)
		a.aggOpen[r.Key] = ok && p.Send && p.Finest != "raw"
		a.aggDirty = true
	}
}

// pendLocked adds one reading to the pending batch.
func (a *Agent) pendLocked(key string, r wire.Reading) {
	if a.count == 0 {
		a.first = a.cfg.Now()
	}
	if _, ok := a.pending[key]; !ok {
		a.order = append(a.order, key)
	}
	a.pending[key] = append(a.pending[key], r)
	a.count++
}

var errNoPolicies = errors.New("the hub serves no collection policies (older hub): streams are sent raw")

// firstPolicy waits, on an agent that never had a policy, until the hub
// answers with one: until then the agent does not know what it may
// collect, and collects nothing (fail closed). It returns false if ctx
// ends first.
func (a *Agent) firstPolicy(ctx context.Context) bool {
	a.mu.Lock()
	known := a.doc != nil
	a.mu.Unlock()
	for attempt := 1; !known; attempt++ {
		err := a.fetchPolicy(ctx)
		if err == nil || errors.Is(err, errNoPolicies) {
			return true
		}
		a.cfg.Log.Warn("agent: no collection policy yet; sources wait for it", "err", err)
		t := time.NewTimer(uplink.Backoff(attempt, 250*time.Millisecond, 30*time.Second, nil))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
	return true
}

// policyLoop fetches the collection policy every PolicyEvery.
func (a *Agent) policyLoop(ctx context.Context) {
	for {
		if err := a.fetchPolicy(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, errNoPolicies) {
			a.cfg.Log.Warn("agent: collection policy fetch failed; keeping the current one", "err", err)
		}
		t := time.NewTimer(time.Duration(a.cfg.PolicyEvery))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// fetchPolicy asks the hub for the policy, sending the version it has.
func (a *Agent) fetchPolicy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.device+"/v1/policy", nil)
	if err != nil {
		return err
	}
	a.mu.Lock()
	if a.doc != nil {
		req.Header.Set("If-None-Match", `"`+a.doc.Version+`"`)
	}
	a.mu.Unlock()
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer func() {
		// Drained, so the connection is reused rather than redialled.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	switch resp.StatusCode {
	case http.StatusNotFound:
		// A hub older than collection policies: it stores everything
		// raw, so the agent sends raw.
		a.policyChecked.Store(a.cfg.Now().UnixMilli())
		return errNoPolicies
	case http.StatusNotModified:
		a.policyChecked.Store(a.cfg.Now().UnixMilli())
		return nil
	case http.StatusOK:
	default:
		return fmt.Errorf("hub answered %d", resp.StatusCode)
	}
	var d collection.Document
	dec := json.NewDecoder(io.LimitReader(resp.Body, 8<<20))
	if err := dec.Decode(&d); err != nil {
		return fmt.Errorf("policy document: %w", err)
	}
	for _, s := range d.Streams {
		if err := s.Check(); err != nil {
			return fmt.Errorf("policy document: stream %q: %w", s.Key, err)
		}
	}
	doc := collection.NewDocument(d.Streams)
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := a.doc == nil || a.doc.Version != doc.Version
	a.doc = &doc
	a.policyChecked.Store(a.cfg.Now().UnixMilli())
	if changed {
		a.cfg.Log.Info("agent: collection policy updated", "version", doc.Version, "streams", len(doc.Streams))
		a.aggDirty = true
		return a.persistLocked()
	}
	return nil
}

// persistLocked saves the collection state, sealing the pending batch
// first if there is one: the saved state must never claim a bucket as
// emitted whose reading is not in the spool yet.
func (a *Agent) persistLocked() error {
	if a.count > 0 {
		return a.sealLocked() // saves the state after the spool took the readings
	}
	return a.saveCollectionLocked()
}

// tickCollectionLocked closes idle buckets and saves the aggregator's
// state when it changed and was last saved MaxDelay ago.
func (a *Agent) tickCollectionLocked() error {
	a.agg.CloseIdle(a.cfg.Now(), time.Duration(a.cfg.BucketIdle), a.pend)
	if a.aggDirty && a.cfg.Now().Sub(a.aggSaved) >= time.Duration(a.cfg.Batch.MaxDelay) {
		return a.persistLocked()
	}
	return nil
}
