package consent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/consent"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rollup"
)

// fake is an in-memory Source.
type fake struct {
	purposes     map[consent.PurposeID]consent.Purpose
	latest       map[string]consent.Record
	restrictions map[string]consent.Restriction
	fail         bool
}

func key(s registry.SubjectID, p consent.PurposeID) string { return string(s) + "|" + string(p) }

func (f *fake) Purpose(_ context.Context, _ registry.TenantID, p consent.PurposeID) (consent.Purpose, error) {
	if f.fail {
		return consent.Purpose{}, errors.New("database down")
	}
	v, ok := f.purposes[p]
	if !ok {
		return v, errs.E(errs.NotFound, "purpose not found")
	}
	return v, nil
}

func (f *fake) LatestConsent(_ context.Context, _ registry.TenantID, s registry.SubjectID, p consent.PurposeID) (consent.Record, bool, error) {
	r, ok := f.latest[key(s, p)]
	return r, ok, nil
}

func (f *fake) Restriction(_ context.Context, _ registry.TenantID, s registry.SubjectID, p consent.PurposeID) (consent.Restriction, bool, error) {
	r, ok := f.restrictions[key(s, p)]
	return r, ok, nil
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func world() *fake {
	return &fake{
		purposes: map[consent.PurposeID]consent.Purpose{
			"monitoring": {ID: "monitoring", Version: 1, Basis: consent.BasisConsent, Categories: []registry.Category{"energy.consumption"}, Finest: rollup.Raw, Notice: "we watch"},
			"billing":    {ID: "billing", Version: 1, Basis: consent.BasisContract, Categories: []registry.Category{"energy.consumption"}, Finest: rollup.Min15, Notice: "we bill"},
		},
		latest:       map[string]consent.Record{},
		restrictions: map[string]consent.Restriction{},
	}
}

func TestGate(t *testing.T) {
	given := consent.Record{ID: "cns_1", Event: consent.Given, NoticeVersion: 1, At: t0}
	cases := []struct {
		name    string
		setup   func(f *fake)
		purpose consent.PurposeID
		cat     registry.Category
		at      time.Time
		want    bool
		reason  string
		err     bool
	}{
		{"no consent", func(*fake) {}, "monitoring", "energy.consumption", t0, false, "no consent", false},
		{"consent given", func(f *fake) { f.latest[key("s", "monitoring")] = given }, "monitoring", "energy.consumption", t0, true, "consent cns_1", false},
		{"withdrawn", func(f *fake) {
			f.latest[key("s", "monitoring")] = consent.Record{Event: consent.Withdrawn, At: t0}
		}, "monitoring", "energy.consumption", t0, false, "withdrawn", false},
		{"expired by time", func(f *fake) {
			g := given
			g.Expires = t0.Add(time.Hour)
			f.latest[key("s", "monitoring")] = g
		}, "monitoring", "energy.consumption", t0.Add(time.Hour), false, "expired", false},
		{"in force before expiry", func(f *fake) {
			g := given
			g.Expires = t0.Add(time.Hour)
			f.latest[key("s", "monitoring")] = g
		}, "monitoring", "energy.consumption", t0.Add(time.Hour - time.Millisecond), true, "", false},
		{"contract needs no consent", func(*fake) {}, "billing", "energy.consumption", t0, true, "contract", false},
		{"category not covered", func(f *fake) { f.latest[key("s", "monitoring")] = given }, "monitoring", "location", t0, false, "does not cover", false},
		{"unknown purpose", func(*fake) {}, "marketing", "energy.consumption", t0, false, "not defined", false},
		{"objection stops contract basis too", func(f *fake) {
			f.restrictions[key("s", "billing")] = consent.Restriction{Kind: consent.Objected}
		}, "billing", "energy.consumption", t0, false, "objection", false},
		{"restriction beats consent", func(f *fake) {
			f.latest[key("s", "monitoring")] = given
			f.restrictions[key("s", "monitoring")] = consent.Restriction{Kind: consent.Restricted}
		}, "monitoring", "energy.consumption", t0, false, "restriction", false},
		{"store down fails closed", func(f *fake) { f.fail = true }, "billing", "energy.consumption", t0, false, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := world()
			tc.setup(f)
			ok, reason, err := consent.Gate{Source: f}.Allowed(context.Background(), "ten", "s", tc.purpose, tc.cat, tc.at)
			if ok != tc.want || (err != nil) != tc.err || !strings.Contains(reason, tc.reason) {
				t.Fatalf("Allowed = %v %q %v; want %v %q err=%v", ok, reason, err, tc.want, tc.reason, tc.err)
			}
		})
	}
}

func TestCollections(t *testing.T) {
	f := world()
	g := consent.Gate{Source: f}
	streams := []consent.StreamRef{{Stream: "st_a", Subject: "a", Category: "energy.consumption"}, {Stream: "st_b", Subject: "b", Category: "energy.consumption"}, {Stream: "st_loc", Subject: "a", Category: "location"}}
	f.latest[key("a", "monitoring")] = consent.Record{Event: consent.Given, At: t0}
	got, err := g.Collections(context.Background(), "ten", []consent.PurposeID{"monitoring", "billing"}, streams, t0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[registry.StreamID]rollup.Resolution{"st_a": rollup.Raw, "st_b": rollup.Min15, "st_loc": ""}
	for _, c := range got {
		if c.Finest != want[c.Stream] || c.Collect != (want[c.Stream] != "") {
			t.Errorf("%s: %+v, want finest %q", c.Stream, c, want[c.Stream])
		}
	}
	// Withdrawal: a's stream falls back to billing's 15 minutes.
	f.latest[key("a", "monitoring")] = consent.Record{Event: consent.Withdrawn, At: t0}
	got, _ = g.Collections(context.Background(), "ten", []consent.PurposeID{"monitoring", "billing"}, streams[:1], t0)
	if got[0].Finest != rollup.Min15 {
		t.Errorf("after withdrawal: %+v", got[0])
	}
	f.fail = true
	if got, err := g.Collections(context.Background(), "ten", []consent.PurposeID{"billing"}, streams, t0); err == nil || got != nil {
		t.Errorf("failing store: %v %v", got, err)
	}
}

func TestReceipt(t *testing.T) {
	skey, vkey, err := consent.GenerateReceiptKey(rand.Reader, "hub.example/custos-consent")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := noteSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	p := consent.Purpose{ID: "monitoring", Version: 3, Basis: consent.BasisConsent, Notice: "We show your consumption."}
	r := consent.Record{ID: "cns_x", Tenant: "ten_1", Subject: "sub_1", Purpose: "monitoring", NoticeVersion: 3, Event: consent.Given, Method: "web-form", At: t0, Expires: t0.AddDate(1, 0, 0)}
	msg, err := consent.SignReceipt(signer, r, p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := consent.VerifyReceipt(msg, vkey)
	if err != nil {
		t.Fatal(err)
	}
	if got.Record != r || got.Basis != consent.BasisConsent || got.NoticeSHA256 != consent.NoticeHash(p.Notice) {
		t.Fatalf("round trip: %+v", got)
	}
	// Altered: the event changed from given to withdrawn.
	bad := bytes.Replace(msg, []byte("event given"), []byte("event withdrawn"), 1)
	if _, err := consent.VerifyReceipt(bad, vkey); !errs.Is(errs.Integrity, err) {
		t.Errorf("altered receipt: %v", err)
	}
	_, other, _ := consent.GenerateReceiptKey(rand.Reader, "hub.example/custos-consent")
	if _, err := consent.VerifyReceipt(msg, other); !errs.Is(errs.Integrity, err) {
		t.Errorf("other key: %v", err)
	}
	// A field with white space cannot be signed (it would be ambiguous).
	r.Method = "web form"
	if _, err := consent.SignReceipt(signer, r, p); err == nil {
		t.Error("signed a field with a space")
	}
}

func TestPurposeCheck(t *testing.T) {
	ok := consent.Purpose{ID: "research-open-data", Basis: consent.BasisConsent, Categories: []registry.Category{"energy.consumption"}, Recipients: []string{"University"}, RetentionDays: 365, Finest: rollup.Day, Notice: "n"}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*consent.Purpose){
		"bad id":       func(p *consent.Purpose) { p.ID = "Bad ID" },
		"bad basis":    func(p *consent.Purpose) { p.Basis = "because" },
		"no category":  func(p *consent.Purpose) { p.Categories = nil },
		"bad category": func(p *consent.Purpose) { p.Categories = []registry.Category{"dna"} },
		"no retention": func(p *consent.Purpose) { p.RetentionDays = 0 },
		"bad finest":   func(p *consent.Purpose) { p.Finest = "1s" },
		"no notice":    func(p *consent.Purpose) { p.Notice = "" },
	} {
		p := ok
		mut(&p)
		if err := p.Check(); !errs.Is(errs.Invalid, err) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
