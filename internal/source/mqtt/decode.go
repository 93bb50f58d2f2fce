package mqtt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Reason says why a payload was dropped. The values are stable: the agent
// reports them.
type Reason string

// The reasons a payload is dropped.
const (
	ReasonNone                Reason = ""
	ReasonTooLarge            Reason = "too_large"            // payload over MaxPayloadBytes
	ReasonInvalidJSON         Reason = "invalid_json"         // payload (or discovery config) is not JSON
	ReasonMissingField        Reason = "missing_field"        // the configured path is not in the payload
	ReasonNotNumber           Reason = "not_number"           // the value is not a finite number
	ReasonUnavailable         Reason = "unavailable"          // Home Assistant says "unavailable" or "unknown"
	ReasonUnitMismatch        Reason = "unit_mismatch"        // the value's unit cannot be converted to the stream's
	ReasonBadDiscovery        Reason = "bad_discovery"        // a discovery config without a usable state topic
	ReasonUnsupportedTemplate Reason = "unsupported_template" // a value_template beyond {{ value_json.x }}
)

// Reasons lists every reason, in a fixed order.
func Reasons() []Reason {
	return []Reason{ReasonTooLarge, ReasonInvalidJSON, ReasonMissingField, ReasonNotNumber,
		ReasonUnavailable, ReasonUnitMismatch, ReasonBadDiscovery, ReasonUnsupportedTemplate}
}

// MaxPayloadBytes bounds a payload the source decodes.
const MaxPayloadBytes = 64 << 10

// Path selects a value in a JSON document: object members and array
// indexes, written "a.b[0]" or "a['b c']". The empty path is the whole
// payload.
type Path []pathElem

type pathElem struct {
	name  string
	index int // used when name is ""
	isIdx bool
}

// String formats the path as ParsePath reads it.
func (p Path) String() string {
	var b strings.Builder
	for i, e := range p {
		switch {
		case e.isIdx:
			fmt.Fprintf(&b, "[%d]", e.index)
		case isIdent(e.name):
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(e.name)
		default:
			// ParsePath admits no quote or backslash in a name.
			b.WriteString(`["` + e.name + `"]`)
		}
	}
	return b.String()
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// ParsePath parses "a.b[0]", "a['b']" or `a["b"]`. Identifiers are letters,
// digits (not first), '_' and ':'.
func ParsePath(s string) (Path, error) {
	var p Path
	i := 0
	for i < len(s) {
		switch {
		case s[i] == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("path: unterminated [")
			}
			in := s[i+1 : i+end]
			i += end + 1
			if len(in) >= 2 && (in[0] == '\'' || in[0] == '"') && in[len(in)-1] == in[0] {
				name := in[1 : len(in)-1]
				if name == "" || strings.ContainsAny(name, `'"\`) {
					return nil, fmt.Errorf("path: bad quoted name")
				}
				p = append(p, pathElem{name: name})
				continue
			}
			n, err := strconv.Atoi(in)
			if err != nil || n < 0 || n > 1<<16 || strconv.Itoa(n) != in {
				return nil, fmt.Errorf("path: bad index")
			}
			p = append(p, pathElem{index: n, isIdx: true})
		case s[i] == '.' && len(p) > 0:
			i++
			j := i
			for j < len(s) && s[j] != '.' && s[j] != '[' {
				j++
			}
			if !isIdent(s[i:j]) {
				return nil, fmt.Errorf("path: bad name")
			}
			p = append(p, pathElem{name: s[i:j]})
			i = j
		case len(p) == 0:
			j := i
			for j < len(s) && s[j] != '.' && s[j] != '[' {
				j++
			}
			if !isIdent(s[i:j]) {
				return nil, fmt.Errorf("path: bad name")
			}
			p = append(p, pathElem{name: s[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("path: unexpected character")
		}
	}
	return p, nil
}

// Decode reads one number from payload: the whole payload as plain text if
// path is empty, else the JSON value at path. Numbers, numeric strings and
// booleans (1 or 0) are accepted; the result is always finite.
func Decode(payload []byte, path Path) (float64, Reason) {
	var p payloadDoc
	return p.value(payload, path)
}

// payloadDoc decodes a payload as JSON at most once, however many values
// are read from it.
type payloadDoc struct {
	done bool
	doc  any
	r    Reason
}

func (p *payloadDoc) value(payload []byte, path Path) (float64, Reason) {
	if len(payload) > MaxPayloadBytes {
		return 0, ReasonTooLarge
	}
	if len(path) == 0 {
		return plain(payload)
	}
	if !p.done {
		p.done = true
		d := json.NewDecoder(bytes.NewReader(payload))
		d.UseNumber()
		if err := d.Decode(&p.doc); err != nil {
			p.r = ReasonInvalidJSON
		} else if _, err := d.Token(); err != io.EOF {
			p.r = ReasonInvalidJSON // trailing data
		}
	}
	if p.r != ReasonNone {
		return 0, p.r
	}
	v := p.doc
	for _, e := range path {
		switch x := v.(type) {
		case map[string]any:
			if e.isIdx {
				return 0, ReasonMissingField
			}
			var ok bool
			if v, ok = x[e.name]; !ok {
				return 0, ReasonMissingField
			}
		case []any:
			if !e.isIdx || e.index >= len(x) {
				return 0, ReasonMissingField
			}
			v = x[e.index]
		default:
			return 0, ReasonMissingField
		}
	}
	switch x := v.(type) {
	case json.Number:
		return finite(x.String())
	case string:
		return plain([]byte(x))
	case bool:
		if x {
			return 1, ReasonNone
		}
		return 0, ReasonNone
	case nil:
		return 0, ReasonUnavailable
	default:
		return 0, ReasonNotNumber
	}
}

// plain reads a state published as text, as Home Assistant does.
func plain(b []byte) (float64, Reason) {
	s := strings.TrimSpace(string(b))
	switch strings.ToLower(s) {
	case "unavailable", "unknown", "none", "":
		return 0, ReasonUnavailable
	case "on", "true":
		return 1, ReasonNone
	case "off", "false":
		return 0, ReasonNone
	}
	return finite(s)
}

func finite(s string) (float64, Reason) {
	if len(s) > 64 {
		return 0, ReasonNotNumber
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, ReasonNotNumber
	}
	// ParseFloat accepts "Inf", "0x1p3", "1_000": only decimal forms here.
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E') {
			return 0, ReasonNotNumber
		}
	}
	return v, ReasonNone
}

// ParseTemplate reads a Home Assistant value_template of the supported
// form: "{{ value }}" or "{{ value_json<path> }}", optionally followed by
// "| float", "| int", "| float(<default>)", "| int(<default>)" or
// "| round(<n>)" filters, which change nothing the source keeps (it stores
// the full value). The empty template means the plain payload.
func ParseTemplate(tpl string) (Path, bool) {
	s := strings.TrimSpace(tpl)
	if s == "" {
		return nil, true
	}
	if !strings.HasPrefix(s, "{{") || !strings.HasSuffix(s, "}}") || strings.Count(s, "{{") != 1 {
		return nil, false
	}
	s = strings.TrimSpace(s[2 : len(s)-2])
	parts := strings.Split(s, "|")
	for _, f := range parts[1:] {
		if !simpleFilter(strings.TrimSpace(f)) {
			return nil, false
		}
	}
	expr := strings.TrimSpace(parts[0])
	if expr == "value" {
		return nil, true
	}
	rest, ok := strings.CutPrefix(expr, "value_json")
	if !ok || rest == "" || (rest[0] != '.' && rest[0] != '[') {
		return nil, false
	}
	if rest[0] == '.' {
		rest = rest[1:]
	}
	p, err := ParsePath(rest)
	if err != nil || len(p) == 0 {
		return nil, false
	}
	return p, true
}

func simpleFilter(f string) bool {
	name, arg, hasArg := strings.Cut(f, "(")
	name = strings.TrimSpace(name)
	if name != "float" && name != "int" && name != "round" {
		return false
	}
	if !hasArg {
		return name != "round"
	}
	arg, ok := strings.CutSuffix(arg, ")")
	if !ok {
		return false
	}
	_, err := strconv.ParseFloat(strings.TrimSpace(arg), 64)
	return err == nil
}

// unitScale gives, per unit, its dimension and its factor to the
// dimension's base unit.
var unitScale = map[string]struct {
	dim    string
	factor float64
}{
	"W": {"power", 1}, "kW": {"power", 1e3}, "MW": {"power", 1e6},
	"Wh": {"energy", 1}, "kWh": {"energy", 1e3}, "MWh": {"energy", 1e6},
	"V": {"voltage", 1}, "mV": {"voltage", 1e-3}, "kV": {"voltage", 1e3},
	"A": {"current", 1}, "mA": {"current", 1e-3},
	"m³": {"volume", 1}, "m3": {"volume", 1}, "L": {"volume", 1e-3},
	"VA": {"apparent", 1}, "kVA": {"apparent", 1e3},
	"var": {"reactive", 1}, "kvar": {"reactive", 1e3},
	"Hz": {"frequency", 1},
	"%":  {"ratio", 1},
	"°C": {"temperature", 1},
}

// Convert returns the factor that converts a value in unit from to unit
// to. An empty unit on either side means unknown: no conversion.
func Convert(from, to string) (float64, bool) {
	from, to = strings.TrimSpace(from), strings.TrimSpace(to)
	if from == "" || to == "" || from == to {
		return 1, true
	}
	f, ok1 := unitScale[from]
	t, ok2 := unitScale[to]
	if !ok1 || !ok2 || f.dim != t.dim {
		return 0, false
	}
	return f.factor / t.factor, true
}

// discovery is a parsed Home Assistant discovery config.
type discovery struct {
	StateTopic string
	Unit       string
	Class      string
	Path       Path
}

// parseDiscovery reads a discovery config payload. Abbreviated keys and
// the "~" base topic are expanded.
func parseDiscovery(payload []byte) (discovery, Reason) {
	var d discovery
	if len(payload) > MaxPayloadBytes {
		return d, ReasonTooLarge
	}
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		return d, ReasonInvalidJSON
	}
	str := func(keys ...string) (string, bool) {
		for _, k := range keys {
			if v, ok := m[k]; ok {
				s, ok := v.(string)
				return s, ok
			}
		}
		return "", true
	}
	base, ok1 := str("~")
	st, ok2 := str("state_topic", "stat_t")
	unit, ok3 := str("unit_of_measurement", "unit_of_meas")
	class, ok4 := str("device_class", "dev_cla")
	tpl, ok5 := str("value_template", "val_tpl")
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
		return d, ReasonBadDiscovery
	}
	if base != "" {
		if strings.HasPrefix(st, "~") {
			st = base + st[1:]
		} else if strings.HasSuffix(st, "~") {
			st = st[:len(st)-1] + base
		}
	}
	if !validTopic(st) {
		return d, ReasonBadDiscovery
	}
	p, ok := ParseTemplate(tpl)
	if !ok {
		return d, ReasonUnsupportedTemplate
	}
	return discovery{StateTopic: st, Unit: unit, Class: class, Path: p}, ReasonNone
}

// validTopic reports whether s is a topic name one may subscribe to
// exactly: non-empty, no wildcards, no NUL, at most 1024 bytes.
func validTopic(s string) bool {
	return s != "" && len(s) <= 1024 && !strings.ContainsAny(s, "+#\x00")
}

// unitOf reads a unit from a statestream attribute topic: a JSON string
// (unit_of_measurement) or a JSON object with unit_of_measurement
// (attributes). ok is false if the payload says nothing about the unit.
func unitOf(payload []byte) (unit string, ok bool, r Reason) {
	if len(payload) > MaxPayloadBytes {
		return "", false, ReasonTooLarge
	}
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		return "", false, ReasonInvalidJSON
	}
	switch x := v.(type) {
	case string:
		return x, true, ReasonNone
	case map[string]any:
		u, found := x["unit_of_measurement"]
		if !found {
			return "", false, ReasonNone
		}
		s, isStr := u.(string)
		if !isStr {
			return "", false, ReasonUnitMismatch
		}
		return s, true, ReasonNone
	default:
		return "", false, ReasonNone
	}
}
