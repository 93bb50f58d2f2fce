package rights_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/datamap"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/rights"
)

var t0 = time.Date(2026, 1, 31, 10, 0, 0, 0, time.UTC)

func TestDeadlineAndTransitions(t *testing.T) {
	if got := rights.DueAfter(t0); !got.Equal(time.Date(2026, 3, 3, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("due: %v", got) // Go normalises 31 Feb to 3 Mar
	}
	r := rights.Request{Status: rights.Open, Opened: t0, Due: rights.DueAfter(t0)}
	if !r.Overdue(r.Due.Add(time.Second)) || r.Overdue(r.Due) {
		t.Error("overdue")
	}
	cases := []struct {
		from, to rights.Status
		reason   string
		kind     errs.Kind
	}{
		{rights.Open, rights.InProgress, "", errs.Other},
		{rights.Open, rights.Refused, "", errs.Invalid},
		{rights.Open, rights.Refused, "manifestly unfounded", errs.Other},
		{rights.InProgress, rights.Done, "", errs.Other},
		{rights.Done, rights.InProgress, "", errs.Conflict},
		{rights.Refused, rights.Done, "", errs.Conflict},
	}
	for _, c := range cases {
		err := rights.Request{Status: c.from}.Transition(c.to, c.reason)
		if (err == nil) != (c.kind == errs.Other) || (err != nil && !errs.Is(c.kind, err)) {
			t.Errorf("%s -> %s (%q): %v", c.from, c.to, c.reason, err)
		}
	}
	for _, bad := range []rights.Request{
		{Kind: "forget-me", RequestedBy: rights.BySubject},
		{Kind: rights.Access, RequestedBy: "neighbour"},
		{Kind: rights.Objection, RequestedBy: rights.BySubject},
		{Kind: rights.Access, RequestedBy: rights.BySubject, Purpose: "monitoring"},
	} {
		if err := bad.Check(); !errs.Is(errs.Invalid, err) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

func TestExportAndErase(t *testing.T) {
	var erased []string
	m := &datamap.Map{Stores: []datamap.Store{
		{Name: "a", Categories: []string{"x"},
			Export: func(_ context.Context, r datamap.Ref, s datamap.Sink) error {
				return s.CSV("rows.csv", []string{"subject"}, [][]string{{string(r.Subject)}})
			},
			Erase: func(context.Context, datamap.Ref) (datamap.Erased, error) {
				erased = append(erased, "a")
				return datamap.Erased{Items: 2}, nil
			}},
		{Name: "b", Categories: []string{"y"},
			Export: func(_ context.Context, _ datamap.Ref, s datamap.Sink) error { return s.JSON("../escape.json", 1) },
			Erase: func(context.Context, datamap.Ref) (datamap.Erased, error) {
				return datamap.Erased{}, errors.New("down")
			}},
	}}
	ref := datamap.Ref{Tenant: "ten", Subject: "sub"}
	if _, err := rights.Export(context.Background(), m, ref, t0, io.Discard, nil); err == nil {
		t.Error("a file name escaping the store's folder was accepted")
	}
	m.Stores[1].Export = func(_ context.Context, _ datamap.Ref, s datamap.Sink) error {
		return s.JSON("profile.json", map[string]string{"k": "v"})
	}
	var buf bytes.Buffer
	var steps []int
	man, err := rights.Export(context.Background(), m, ref, t0, &buf, func(d, n int) { steps = append(steps, d) })
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 || len(man.Stores) != 2 || man.Stores[0].Files[0] != "a/rows.csv" {
		t.Errorf("manifest %+v steps %v", man, steps)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range zr.File {
		names[f.Name] = true
	}
	for _, n := range []string{"a/rows.csv", "b/profile.json", "manifest.json"} {
		if !names[n] {
			t.Errorf("archive lacks %s: %v", n, names)
		}
	}
	ev, err := rights.Erase(context.Background(), m, ref)
	if err == nil || len(ev) != 1 || ev[0].Store != "a" || ev[0].Items != 2 {
		t.Errorf("erase: %+v %v", ev, err)
	}
}
