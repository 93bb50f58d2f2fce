package rights

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/series"
	"github.com/custos-iot/custos/internal/wire"
)

// RectificationClaim is what a rectification request (art. 16) asks for: the
// subject's stream whose readings are inaccurate, why, the ranges of
// readings that are wrong altogether, and how many corrected readings
// were submitted. The corrected values themselves are kept apart, sealed
// under the subject's key, until the request is applied (they then are the
// stored readings) or refused (they are deleted).
type RectificationClaim struct {
	Stream registry.StreamID `json:"stream"`
	// Grounds says why the readings are inaccurate (1-2000 characters).
	Grounds string `json:"grounds"`
	// Delete are ranges whose readings are deleted as wrong.
	Delete []series.TimeRange `json:"delete,omitempty"`
	// Corrections counts the corrected readings submitted, in Parts parts.
	Corrections int `json:"corrections"`
	Parts       int `json:"parts"`
}

func (r *RectificationClaim) check() error {
	switch {
	case r == nil || r.Stream == "":
		return errs.E(errs.Invalid, "a rectification request names the stream whose readings are inaccurate")
	case r.Grounds == "" || utf8.RuneCountInString(r.Grounds) > 2000:
		return errs.E(errs.Invalid, "a rectification request states its grounds: why the readings are inaccurate (1-2000 characters)")
	}
	return series.CheckRanges(r.Delete)
}

// AddCorrections records a further part of a rectification request: n
// corrected readings (already checked with series.CheckCorrections; a
// part is counted if n > 0) and more delete ranges. The request must be a
// rectification that is not final.
func (r *Request) AddCorrections(n int, del []series.TimeRange) error {
	if r.Kind != Rectification || r.Rectification == nil {
		return errs.E(errs.Conflict, fmt.Sprintf("corrections go with a rectification request, not a %s request", r.Kind))
	}
	if r.Final() {
		return errs.E(errs.Conflict, fmt.Sprintf("the request is %s: it takes no more corrections", r.Status))
	}
	rc := *r.Rectification
	if rc.Corrections+n > series.MaxCorrections {
		return errs.E(errs.Invalid, fmt.Sprintf("at most %d corrections per request; split the rectification into several requests", series.MaxCorrections))
	}
	rc.Delete = append(append([]series.TimeRange{}, rc.Delete...), del...)
	if err := series.CheckRanges(rc.Delete); err != nil {
		return err
	}
	rc.Corrections += n
	if n > 0 {
		rc.Parts++
	}
	r.Rectification = &rc
	return nil
}

// RectificationEvidence is what an applied rectification leaves as
// evidence: how many readings changed and which rollup buckets were
// recomputed — never the wrong values, which were inaccurate personal data.
type RectificationEvidence struct {
	Stream  registry.StreamID `json:"stream"`
	Applied time.Time         `json:"applied"`
	series.Rectified
}

// CorrectionsFile is the content of a corrections file.
type CorrectionsFile struct {
	Corrections []series.Correction `json:"corrections"`
	Delete      []series.TimeRange  `json:"delete,omitempty"`
}

// ParseCorrections reads a corrections file, as a person or a DPO writes
// it, and checks every entry (series.CheckCorrections, CheckRanges); it
// does not check for duplicate times (applying does). Two formats:
//
// CSV: one correction per line, "time,value"; further columns are ignored,
// so the readings CSV of an export (time_ms,value_<unit>,quality) can be
// edited and sent back. The time is Unix milliseconds or RFC 3339
// (2026-06-03T10:00:01Z, at most millisecond precision). A first line
// whose first field holds no digit is a header. Lines starting with # are
// comments. A CSV file cannot name delete ranges.
//
// JSON: {"corrections": [{"t": time, "v": value}, ...], "delete": [{"from":
// time, "to": time}, ...]} or just the array of corrections, the times
// as numbers (Unix ms) or RFC 3339 strings.
//
// Errors are of kind errs.Invalid and name the line (CSV) or entry (JSON);
// they never quote a value.
func ParseCorrections(r io.Reader) (CorrectionsFile, error) {
	br := bufio.NewReader(r)
	for {
		b, err := br.Peek(1)
		if err != nil {
			return CorrectionsFile{}, errs.E(errs.Invalid, "the corrections file is empty")
		}
		switch b[0] {
		case ' ', '\t', '\r', '\n':
			br.ReadByte()
			continue
		case '{', '[':
			return parseJSON(br)
		}
		return parseCSV(br)
	}
}

func parseCSV(r io.Reader) (CorrectionsFile, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.Comment = '#'
	cr.ReuseRecord = true
	var out CorrectionsFile
	for n := 0; ; n++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return CorrectionsFile{}, errs.E(errs.Invalid, fmt.Sprintf("line %d: malformed CSV", pe.Line))
			}
			return CorrectionsFile{}, errs.E(errs.Invalid, "the corrections file cannot be read")
		}
		line, _ := cr.FieldPos(0)
		t, terr := ParseTime(rec[0])
		if terr != nil && n == 0 && !strings.ContainsAny(rec[0], "0123456789") {
			continue // a header
		}
		if terr != nil {
			return CorrectionsFile{}, errs.E(errs.Invalid, fmt.Sprintf("line %d: %v", line, terr))
		}
		if len(rec) < 2 {
			return CorrectionsFile{}, errs.E(errs.Invalid, fmt.Sprintf("line %d: want time,value", line))
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rec[1]), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return CorrectionsFile{}, errs.E(errs.Invalid, fmt.Sprintf("line %d: the value is not a finite number", line))
		}
		if len(out.Corrections) == series.MaxCorrections {
			return CorrectionsFile{}, errs.E(errs.Invalid, fmt.Sprintf("more than %d corrections: split the file", series.MaxCorrections))
		}
		out.Corrections = append(out.Corrections, series.Correction{Time: t, Value: v})
	}
	if len(out.Corrections) == 0 {
		return CorrectionsFile{}, errs.E(errs.Invalid, "the corrections file holds no corrections")
	}
	return out, nil
}

// ParseTime parses a time as a corrections file gives it: Unix ms or RFC
// 3339 with at most millisecond precision, within 1970 to 2200.
func ParseTime(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		if ms < 0 || ms >= wire.MaxTime {
			return 0, errors.New("the time is outside 1970-01-01 to 2200-01-01")
		}
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, errors.New("the time is neither Unix milliseconds nor RFC 3339 (2026-06-03T10:00:01Z)")
	}
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		return 0, errors.New("the time is finer than a millisecond")
	}
	if t.Year() < 1970 || t.Year() >= 2200 {
		return 0, errors.New("the time is outside 1970-01-01 to 2200-01-01")
	}
	return t.UnixMilli(), nil
}

// fileTime is a time in a JSON corrections file: Unix ms or RFC 3339.
type fileTime int64

func (f *fileTime) UnmarshalJSON(b []byte) error {
	var s string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	} else {
		s = string(b)
	}
	t, err := ParseTime(s)
	if err != nil {
		return err
	}
	*f = fileTime(t)
	return nil
}

func parseJSON(r io.Reader) (CorrectionsFile, error) {
	type corr struct {
		T *fileTime `json:"t"`
		V *float64  `json:"v"`
	}
	type rng struct {
		From *fileTime `json:"from"`
		To   *fileTime `json:"to"`
	}
	var in struct {
		Corrections []corr `json:"corrections"`
		Delete      []rng  `json:"delete"`
	}
	b, err := io.ReadAll(io.LimitReader(r, 1<<30))
	if err != nil {
		return CorrectionsFile{}, errs.E(errs.Invalid, "the corrections file cannot be read")
	}
	b = bytes.TrimSpace(b)
	var dec *json.Decoder
	if len(b) > 0 && b[0] == '[' {
		dec = json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		err = dec.Decode(&in.Corrections)
	} else {
		dec = json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		err = dec.Decode(&in)
	}
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON document")
	}
	if err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return CorrectionsFile{}, errs.E(errs.Invalid, fmt.Sprintf("malformed JSON at byte %d", se.Offset))
		case errors.As(err, &te):
			return CorrectionsFile{}, errs.E(errs.Invalid, fmt.Sprintf("JSON field %q has the wrong type", te.Field))
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return CorrectionsFile{}, errs.E(errs.Invalid, strings.TrimPrefix(err.Error(), "json: "))
		case strings.HasPrefix(err.Error(), "the time"), strings.HasPrefix(err.Error(), "trailing"):
			return CorrectionsFile{}, errs.E(errs.Invalid, "JSON: "+err.Error())
		}
		return CorrectionsFile{}, errs.E(errs.Invalid, "malformed JSON")
	}
	if len(in.Corrections) > series.MaxCorrections {
		return CorrectionsFile{}, errs.E(errs.Invalid, fmt.Sprintf("more than %d corrections: split the file", series.MaxCorrections))
	}
	var out CorrectionsFile
	for i, c := range in.Corrections {
		if c.T == nil || c.V == nil {
			return CorrectionsFile{}, errs.E(errs.Invalid, fmt.Sprintf("correction %d: want {\"t\": time, \"v\": value}", i+1))
		}
		out.Corrections = append(out.Corrections, series.Correction{Time: int64(*c.T), Value: *c.V})
	}
	for i, d := range in.Delete {
		if d.From == nil || d.To == nil {
			return CorrectionsFile{}, errs.E(errs.Invalid, fmt.Sprintf("delete range %d: want {\"from\": time, \"to\": time}", i+1))
		}
		out.Delete = append(out.Delete, series.TimeRange{From: int64(*d.From), To: int64(*d.To)})
	}
	if len(out.Corrections) == 0 && len(out.Delete) == 0 {
		return CorrectionsFile{}, errs.E(errs.Invalid, "the corrections file holds no corrections and no delete ranges")
	}
	if err := series.CheckCorrections(out.Corrections, 1); err != nil {
		return CorrectionsFile{}, err
	}
	if err := series.CheckRanges(out.Delete); err != nil {
		return CorrectionsFile{}, err
	}
	return out, nil
}
