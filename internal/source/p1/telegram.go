package p1

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Errors returned by Parse, matched with errors.Is. Neither says anything
// about the telegram's contents.
var (
	// ErrMalformed means the bytes do not follow the telegram grammar or
	// a mapped register has an unexpected form or unit. Drop the telegram;
	// the next one may be fine (a garbled line, a meter in a strange mode).
	ErrMalformed = errors.New("p1: malformed telegram")
	// ErrChecksum means the telegram is well formed but its CRC does not
	// match: bits were lost or flipped on the line. Drop the telegram.
	ErrChecksum = errors.New("p1: telegram CRC mismatch")
	// ErrTooLarge means the telegram exceeds MaxTelegramBytes. Drop it.
	ErrTooLarge = errors.New("p1: telegram too large")
)

// MaxTelegramBytes bounds a telegram. A DSMR 5 telegram with a full text
// message (1024 bytes, hex encoded) and an e-MUCS telegram with thirteen
// months of peak history both stay well below it.
const MaxTelegramBytes = 16 << 10

// maxValueBytes bounds one parenthesised value (the hex-encoded text
// message 0-0:96.13.0 is the longest, 2048 digits).
const maxValueBytes = 2048

// Telegram is a parsed, checked telegram.
type Telegram struct {
	// Header is the identification line without '/' and CR LF, e.g.
	// "ISK5\2M550T-1012".
	Header string
	// Objects are the data objects in the order the meter sent them.
	Objects []Object
	// CRC is the checksum the meter sent (and Parse verified).
	CRC uint16
	// Time is the meter's clock (0-0:1.0.0) in UTC; zero if absent.
	Time time.Time
	// Version is the protocol version: 1-3:0.2.8 for DSMR (e.g. "50"),
	// 0-0:96.1.4 for e-MUCS (e.g. "50217"); empty if absent.
	Version string
	// Measurements are the mapped registers, in object order.
	Measurements []Measurement
	// Equipment is the electricity meter's equipment identifier
	// (0-0:96.1.1), decoded from hex when the meter hex-encodes it (DSMR);
	// empty if absent or not a usable identity (see wire.Meter). It is
	// personal data: never logged.
	Equipment string
}

// Object is one data object line: an OBIS reference and its values, each
// as sent between the parentheses.
type Object struct {
	OBIS   string
	Values []string
}

// Measurement is one mapped register value.
type Measurement struct {
	Metric Metric
	// Time is when the meter took the value, in UTC.
	Time  time.Time
	Value float64
}

// Object returns the data object with the given OBIS reference.
func (t *Telegram) Object(obis string) (Object, bool) {
	for _, o := range t.Objects {
		if o.OBIS == obis {
			return o, true
		}
	}
	return Object{}, false
}

// AppendBinary appends the telegram as the meter sent it, from '/' through
// the CR LF after the CRC. For a telegram from Parse this is the input
// byte for byte (with CR LF added if the input lacked the final one).
func (t *Telegram) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, '/')
	b = append(b, t.Header...)
	b = append(b, "\r\n\r\n"...)
	for _, o := range t.Objects {
		b = append(b, o.OBIS...)
		for _, v := range o.Values {
			b = append(b, '(')
			b = append(b, v...)
			b = append(b, ')')
		}
		b = append(b, "\r\n"...)
	}
	b = append(b, '!')
	b = fmt.Appendf(b, "%04X", t.CRC)
	return append(b, "\r\n"...), nil
}

// CRC16 returns the CRC-16/ARC of b: polynomial 0xA001 (reflected 0x8005),
// initial value 0, no final XOR. The check value of "123456789" is 0xBB3D.
func CRC16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

func malformed(line int, what string) error {
	return fmt.Errorf("%w: line %d: %s", ErrMalformed, line, what)
}

// Parse parses and checks one telegram: b runs from '/' through the four
// CRC digits, optionally followed by CR LF. The grammar is in the package
// documentation. Errors wrap ErrMalformed, ErrChecksum or ErrTooLarge and
// never quote the input.
func Parse(b []byte) (Telegram, error) {
	var t Telegram
	if len(b) > MaxTelegramBytes {
		return t, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxTelegramBytes)
	}
	if len(b) == 0 || b[0] != '/' {
		return t, malformed(1, "does not start with '/'")
	}
	bang := bytes.IndexByte(b, '!')
	if bang < 0 {
		return t, malformed(1, "no '!' end marker")
	}
	tail := b[bang+1:]
	switch {
	case len(tail) == 4:
	case len(tail) == 6 && tail[4] == '\r' && tail[5] == '\n':
	default:
		return t, malformed(0, "end marker must be '!' followed by four hex digits and CR LF")
	}
	sent, ok := hex16(tail[:4])
	if !ok {
		return t, malformed(0, "CRC is not four upper-case hex digits")
	}
	t.CRC = sent

	// Grammar first, so that a garbled telegram is reported as such and
	// only a well-formed one with a wrong checksum as ErrChecksum.
	body := b[:bang]
	lines := bytes.Split(body, []byte("\r\n"))
	// lines: header, "", objects..., "" (after the last CR LF before '!').
	if len(lines) < 3 {
		return t, malformed(1, "missing header, empty line or data")
	}
	if err := parseHeader(lines[0], &t); err != nil {
		return t, err
	}
	if len(lines[1]) != 0 {
		return t, malformed(2, "header must be followed by an empty line")
	}
	if last := lines[len(lines)-1]; len(last) != 0 {
		return t, malformed(len(lines), "'!' must start a line")
	}
	objs := lines[2 : len(lines)-1]
	if len(objs) == 0 {
		return t, malformed(3, "no data objects")
	}
	t.Objects = make([]Object, 0, len(objs))
	seen := make(map[string]bool, len(objs))
	for i, ln := range objs {
		o, err := parseObject(ln, i+3)
		if err != nil {
			return t, err
		}
		if seen[o.OBIS] {
			return t, malformed(i+3, "repeated OBIS reference")
		}
		seen[o.OBIS] = true
		t.Objects = append(t.Objects, o)
	}
	if got := CRC16(b[:bang+1]); got != sent {
		return Telegram{}, fmt.Errorf("%w: computed %04X, telegram says %04X", ErrChecksum, got, sent)
	}
	if err := t.interpret(); err != nil {
		return Telegram{}, err
	}
	return t, nil
}

func hex16(b []byte) (uint16, bool) {
	var v uint16
	for _, c := range b {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint16(d)
	}
	return v, true
}

func parseHeader(h []byte, t *Telegram) error {
	// "/XXX5" then at least one identification character.
	if len(h) < 6 || len(h) > 128 {
		return malformed(1, "header must be '/XXX5' and an identification of at most 122 characters")
	}
	for _, c := range h[1:4] {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return malformed(1, "manufacturer code must be three letters")
		}
	}
	if h[4] != '5' {
		return malformed(1, "baud rate identifier must be '5' (DSMR 5 / e-MUCS)")
	}
	for _, c := range h[5:] {
		if c < 0x20 || c > 0x7e || c == '/' || c == '!' {
			return malformed(1, "identification must be printable ASCII")
		}
	}
	t.Header = string(h[1:])
	return nil
}

func parseObject(ln []byte, line int) (Object, error) {
	var o Object
	open := bytes.IndexByte(ln, '(')
	if open < 0 {
		return o, malformed(line, "data object has no value")
	}
	if !validOBIS(ln[:open]) {
		return o, malformed(line, "invalid OBIS reference")
	}
	o.OBIS = string(ln[:open])
	rest := ln[open:]
	for len(rest) > 0 {
		if rest[0] != '(' {
			return o, malformed(line, "text between values")
		}
		end := bytes.IndexByte(rest, ')')
		if end < 0 {
			return o, malformed(line, "unterminated value")
		}
		v := rest[1:end]
		if len(v) > maxValueBytes {
			return o, malformed(line, "value too long")
		}
		for _, c := range v {
			if c < 0x20 || c > 0x7e || c == '(' || c == '!' || c == '/' {
				return o, malformed(line, "value must be printable ASCII without '(', '/' or '!'")
			}
		}
		o.Values = append(o.Values, string(v))
		rest = rest[end+1:]
	}
	return o, nil
}

// validOBIS reports whether b is A-B:C.D.E, each field 1 to 3 decimal
// digits with a value of at most 255.
func validOBIS(b []byte) bool {
	seps := [...]byte{'-', ':', '.', '.', 0}
	for _, sep := range seps {
		n, v := 0, 0
		for n < len(b) && '0' <= b[n] && b[n] <= '9' {
			v = v*10 + int(b[n]-'0')
			n++
			if n > 3 {
				return false
			}
		}
		if n == 0 || v > 255 {
			return false
		}
		b = b[n:]
		if sep == 0 {
			return len(b) == 0
		}
		if len(b) == 0 || b[0] != sep {
			return false
		}
		b = b[1:]
	}
	return false
}

// ParseTime parses a DSMR timestamp YYMMDDhhmmssX (X = W for winter time,
// UTC+1, or S for summer time, UTC+2) and returns it in UTC.
func ParseTime(s string) (time.Time, error) {
	if len(s) != 13 {
		return time.Time{}, fmt.Errorf("%w: timestamp must be YYMMDDhhmmss and W or S", ErrMalformed)
	}
	var f [6]int
	for i := range f {
		a, b := s[2*i], s[2*i+1]
		if a < '0' || a > '9' || b < '0' || b > '9' {
			return time.Time{}, fmt.Errorf("%w: timestamp must be YYMMDDhhmmss and W or S", ErrMalformed)
		}
		f[i] = int(a-'0')*10 + int(b-'0')
	}
	var off int
	switch s[12] {
	case 'W':
		off = 1
	case 'S':
		off = 2
	default:
		return time.Time{}, fmt.Errorf("%w: timestamp DST flag must be W or S", ErrMalformed)
	}
	loc := time.FixedZone("", off*3600)
	tm := time.Date(2000+f[0], time.Month(f[1]), f[2], f[3], f[4], f[5], 0, loc)
	if tm.Month() != time.Month(f[1]) || tm.Day() != f[2] || tm.Hour() != f[3] || tm.Minute() != f[4] || tm.Second() != f[5] {
		return time.Time{}, fmt.Errorf("%w: timestamp out of range", ErrMalformed)
	}
	return tm.UTC(), nil
}

// parseQuantity parses "<decimal>*<unit>" and checks the unit.
func parseQuantity(s, unit string) (float64, error) {
	star := -1
	for i := 0; i < len(s); i++ {
		if s[i] == '*' {
			star = i
			break
		}
	}
	if star < 0 {
		return 0, fmt.Errorf("%w: value has no unit", ErrMalformed)
	}
	if s[star+1:] != unit {
		return 0, fmt.Errorf("%w: unit is not %s", ErrMalformed, unit)
	}
	num := s[:star]
	if !decimal(num) {
		return 0, fmt.Errorf("%w: value is not a decimal number", ErrMalformed)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: value is not a decimal number", ErrMalformed)
	}
	return v, nil
}

// decimal reports whether s is digits with an optional fraction: the only
// number form DSMR uses (no sign, exponent, or special values).
func decimal(s string) bool {
	if len(s) == 0 || len(s) > 20 {
		return false
	}
	dot := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9':
		case c == '.' && !dot && i > 0 && i < len(s)-1:
			dot = true
		default:
			return false
		}
	}
	return true
}
