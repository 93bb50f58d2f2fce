package rights_test

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/series"
)

func TestParseCorrections(t *testing.T) {
	const t1 = 1780477201000 // 2026-06-03T09:00:01Z
	cases := []struct {
		name, in string
		want     rights.CorrectionsFile
		err      string // part of the error message
	}{
		{name: "csv ms", in: "1780477201000,12.5\n1780477202000,-3\n",
			want: rights.CorrectionsFile{Corrections: []series.Correction{{Time: t1, Value: 12.5}, {Time: t1 + 1000, Value: -3}}}},
		{name: "csv rfc3339 with header and comment", in: "time,value\n# the meter was swapped\n2026-06-03T09:00:01Z, 7\n2026-06-03T11:00:01.5+02:00,8\n",
			want: rights.CorrectionsFile{Corrections: []series.Correction{{Time: t1, Value: 7}, {Time: t1 + 500, Value: 8}}}},
		{name: "an export's readings CSV", in: "time_ms,value_W,quality\n1780477201000,230,0\n",
			want: rights.CorrectionsFile{Corrections: []series.Correction{{Time: t1, Value: 230}}}},
		{name: "json object", in: ` {"corrections": [{"t": 1780477201000, "v": 1}, {"t": "2026-06-03T09:00:02Z", "v": 2}], "delete": [{"from": "2026-06-03T10:00:00Z", "to": 1780484400000}]}`,
			want: rights.CorrectionsFile{Corrections: []series.Correction{{Time: t1, Value: 1}, {Time: t1 + 1000, Value: 2}}, Delete: []series.TimeRange{{From: 1780480800000, To: 1780484400000}}}},
		{name: "json array", in: `[{"t": 1780477201000, "v": 0}]`,
			want: rights.CorrectionsFile{Corrections: []series.Correction{{Time: t1, Value: 0}}}},
		{name: "json deletions only", in: `{"delete": [{"from": 0, "to": 1}]}`,
			want: rights.CorrectionsFile{Delete: []series.TimeRange{{From: 0, To: 1}}}},
		{name: "empty", in: " \n", err: "empty"},
		{name: "header only", in: "time,value\n", err: "no corrections"},
		{name: "bad value", in: "1780477201000,12.5\n1780477202000,lots\n", err: "line 2: the value is not a finite number"},
		{name: "NaN", in: "1780477201000,NaN\n", err: "line 1: the value is not a finite number"},
		{name: "bad time after the first line", in: "1780477201000,1\nyesterday,2\n", err: "line 2: the time is neither"},
		{name: "negative time", in: "-5,1\n", err: "line 1: the time is outside"},
		{name: "sub-millisecond", in: "2026-06-03T09:00:01.0005Z,1\n", err: "finer than a millisecond"},
		{name: "one column", in: "1780477201000\n", err: "line 1: want time,value"},
		{name: "bad quoting", in: "1780477201000,\"1\n", err: "malformed CSV"},
		{name: "json unknown field", in: `{"corrections": [], "values": 1}`, err: `unknown field "values"`},
		{name: "json missing value", in: `[{"t": 1}]`, err: "correction 1: want"},
		{name: "json bad time", in: `[{"t": "soon", "v": 1}]`, err: "the time is neither"},
		{name: "json trailing", in: `[{"t": 1, "v": 1}] x`, err: "trailing data"},
		{name: "json syntax", in: `{"corrections": [`, err: "malformed JSON"},
		{name: "json overlapping ranges", in: `{"delete": [{"from": 0, "to": 10}, {"from": 5, "to": 20}]}`, err: "overlap"},
		{name: "json empty", in: `{}`, err: "no corrections and no delete ranges"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := rights.ParseCorrections(strings.NewReader(c.in))
			if c.err != "" {
				if !errs.Is(errs.Invalid, err) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, want an invalid-input error containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Corrections, c.want.Corrections) || !slices.Equal(got.Delete, c.want.Delete) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestRectificationRequest(t *testing.T) {
	claim := func(c rights.RectificationClaim) *rights.RectificationClaim { return &c }
	for _, c := range []struct {
		r    rights.Request
		kind errs.Kind
	}{
		{rights.Request{Kind: rights.Rectification, RequestedBy: rights.BySubject, Rectification: claim(rights.RectificationClaim{Stream: "str_1", Grounds: "meter swapped"})}, errs.Other},
		{rights.Request{Kind: rights.Rectification, RequestedBy: rights.BySubject}, errs.Invalid},
		{rights.Request{Kind: rights.Rectification, RequestedBy: rights.BySubject, Rectification: claim(rights.RectificationClaim{Stream: "str_1"})}, errs.Invalid},
		{rights.Request{Kind: rights.Rectification, RequestedBy: rights.BySubject, Rectification: claim(rights.RectificationClaim{Stream: "str_1", Grounds: strings.Repeat("x", 2001)})}, errs.Invalid},
		{rights.Request{Kind: rights.Rectification, RequestedBy: rights.BySubject, Rectification: claim(rights.RectificationClaim{Stream: "str_1", Grounds: "g", Delete: []series.TimeRange{{From: 5, To: 5}}})}, errs.Invalid},
		{rights.Request{Kind: rights.Access, RequestedBy: rights.BySubject, Rectification: claim(rights.RectificationClaim{Stream: "str_1", Grounds: "g"})}, errs.Invalid},
	} {
		err := c.r.Check()
		if (err == nil) != (c.kind == errs.Other) || (err != nil && !errs.Is(c.kind, err)) {
			t.Errorf("%+v: %v", c.r, err)
		}
	}

	r := rights.Request{Kind: rights.Rectification, Status: rights.Open, Rectification: claim(rights.RectificationClaim{Stream: "str_1", Grounds: "g", Delete: []series.TimeRange{{From: 0, To: 10}}})}
	if err := r.AddCorrections(5, []series.TimeRange{{From: 20, To: 30}}); err != nil || r.Rectification.Corrections != 5 || r.Rectification.Parts != 1 || len(r.Rectification.Delete) != 2 {
		t.Fatalf("%+v %v", r.Rectification, err)
	}
	before := *r.Rectification
	for _, bad := range []struct {
		n    int
		del  []series.TimeRange
		kind errs.Kind
	}{
		{0, []series.TimeRange{{From: 5, To: 25}}, errs.Invalid},
		{series.MaxCorrections, nil, errs.Invalid},
	} {
		if err := r.AddCorrections(bad.n, bad.del); !errs.Is(bad.kind, err) {
			t.Errorf("AddCorrections(%d, %v): %v", bad.n, bad.del, err)
		}
	}
	if fmt.Sprint(*r.Rectification) != fmt.Sprint(before) {
		t.Errorf("a refused part changed the request: %+v", r.Rectification)
	}
	r.Status = rights.Refused
	if err := r.AddCorrections(1, nil); !errs.Is(errs.Conflict, err) {
		t.Errorf("a refused request took corrections: %v", err)
	}
	a := rights.Request{Kind: rights.Access, Status: rights.Open}
	if err := a.AddCorrections(1, nil); !errs.Is(errs.Conflict, err) {
		t.Errorf("an access request took corrections: %v", err)
	}
}

// FuzzParseCorrections: any input is parsed or refused as invalid, never
// panics; what is accepted passes the checks and survives being written
// as CSV (Unix ms) and parsed again.
func FuzzParseCorrections(f *testing.F) {
	for _, s := range []string{
		"1780477201000,12.5\n", "time,value\n2026-06-03T09:00:01Z,7\n", `{"corrections":[{"t":1,"v":2}],"delete":[{"from":3,"to":4}]}`,
		`[{"t":"2026-06-03T09:00:01.123Z","v":-0}]`, "#c\n1,1e308\n", "\"a\"\"b\",1\n2,3",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := rights.ParseCorrections(strings.NewReader(string(b)))
		if err != nil {
			if !errs.Is(errs.Invalid, err) {
				t.Fatalf("error of kind %v: %v", errs.KindOf(err), err)
			}
			return
		}
		if err := series.CheckCorrections(got.Corrections, 1); err != nil {
			t.Fatal(err)
		}
		if err := series.CheckRanges(got.Delete); err != nil {
			t.Fatal(err)
		}
		if len(got.Corrections) == 0 {
			return
		}
		var csv strings.Builder
		for _, c := range got.Corrections {
			fmt.Fprintf(&csv, "%d,%v\n", c.Time, c.Value)
		}
		again, err := rights.ParseCorrections(strings.NewReader(csv.String()))
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !slices.EqualFunc(again.Corrections, got.Corrections, func(a, b series.Correction) bool {
			return a.Time == b.Time && (a.Value == b.Value || math.IsNaN(a.Value) && math.IsNaN(b.Value))
		}) {
			t.Fatalf("round trip: %v vs %v", again.Corrections, got.Corrections)
		}
	})
}
