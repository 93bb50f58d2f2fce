package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/collection"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
	"github.com/custos-iot/custos/internal/store"
)

func TestCollectionPolicies(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000).UTC()
	clock := func() time.Time { return now }
	for name, open := range backends(t, clock) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := context.Background()
			f := seed(t, s, "a")
			other := seed(t, s, "b")

			r, err := s.CollectionPolicy(ctx, f.tenant.ID, f.stream.ID)
			if err != nil || r.Version != 0 || r.Policy != collection.Default {
				t.Fatalf("default: %+v %v", r, err)
			}
			q15 := collection.Policy{Send: true, Finest: rollup.Min15}
			r, err = s.SetCollectionPolicy(ctx, f.tenant.ID, f.stream.ID, q15, "no consent to real-time monitoring")
			if err != nil || r.Version != 1 || r.Policy != q15 || r.Previous != collection.Default || !r.Updated.Equal(now) {
				t.Fatalf("set: %+v %v", r, err)
			}
			// The same policy again changes nothing.
			now = now.Add(time.Hour)
			if r2, err := s.SetCollectionPolicy(ctx, f.tenant.ID, f.stream.ID, q15, "again"); err != nil || r2.Version != 1 || !r2.Updated.Equal(r.Updated) {
				t.Fatalf("idempotent set: %+v %v", r2, err)
			}
			off := collection.Policy{Send: false, Finest: rollup.Raw}
			if _, err := s.SetCollectionPolicyIf(ctx, f.tenant.ID, f.stream.ID, off, "", 0); !errs.Is(errs.Conflict, err) {
				t.Fatalf("stale version: %v", err)
			}
			r, err = s.SetCollectionPolicyIf(ctx, f.tenant.ID, f.stream.ID, off, "withdrawn", 1)
			if err != nil || r.Version != 2 || r.Previous != q15 || r.Send {
				t.Fatalf("set off: %+v %v", r, err)
			}
			// Bad input: nothing changes.
			for _, bad := range []error{
				func() error {
					_, err := s.SetCollectionPolicy(ctx, f.tenant.ID, f.stream.ID, collection.Policy{Send: true, Finest: "5m"}, "")
					return err
				}(),
				func() error {
					_, err := s.SetCollectionPolicy(ctx, f.tenant.ID, f.stream.ID, q15, "a\x00b")
					return err
				}(),
			} {
				if !errs.Is(errs.Invalid, bad) {
					t.Errorf("bad input: %v", bad)
				}
			}
			// Tenant isolation: another tenant's stream is not found.
			if _, err := s.SetCollectionPolicy(ctx, f.tenant.ID, other.stream.ID, q15, ""); !errs.Is(errs.NotFound, err) {
				t.Errorf("cross-tenant set: %v", err)
			}
			if _, err := s.CollectionPolicy(ctx, f.tenant.ID, other.stream.ID); !errs.Is(errs.NotFound, err) {
				t.Errorf("cross-tenant get: %v", err)
			}
			if err := s.CountPolicyRefusals(ctx, f.stream.ID, 7, 1234); err != nil {
				t.Fatal(err)
			}
			m, err := s.ConnectorCollectionPolicies(ctx, f.connector.ID)
			if err != nil || len(m) != 1 || m[f.stream.ID].Version != 2 || m[f.stream.ID].Refused != 7 || m[f.stream.ID].LastRefused.UnixMilli() != 1234 {
				t.Fatalf("connector policies: %+v %v", m, err)
			}
			if m, _ := s.ConnectorCollectionPolicies(ctx, other.connector.ID); len(m) != 0 {
				t.Errorf("other connector sees %v", m)
			}
			if m, _ := s.ConnectorCollectionPolicies(ctx, registry.ConnectorID("con_none")); len(m) != 0 {
				t.Errorf("unknown connector sees %v", m)
			}
			// Erasing the subject erases the stream's policy (and its reason) too.
			if err := s.EraseSubject(ctx, &store.Erasure{Tenant: f.tenant.ID, Subject: f.subject.ID, Requested: now}); err != nil {
				t.Fatal(err)
			}
			var left int
			if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM collection_policies`).Scan(&left); err != nil || left != 0 {
				t.Errorf("%d policies left after erasure (%v)", left, err)
			}
		})
	}
}
