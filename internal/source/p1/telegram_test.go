package p1

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden and the FuzzParse seed corpus")

// seal turns a telegram written with "\n" line ends and ending in "!" into
// wire form: CR LF line ends and the correct CRC.
func seal(s string) []byte {
	s = strings.ReplaceAll(s, "\n", "\r\n")
	b := []byte(strings.TrimSuffix(s, "\r\n"))
	return append(b, []byte(strings.ToUpper(hex4(CRC16(b)))+"\r\n")...)
}

func hex4(v uint16) string {
	const digits = "0123456789ABCDEF"
	return string([]byte{digits[v>>12], digits[v>>8&15], digits[v>>4&15], digits[v&15]})
}

func TestCRC16(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint16
	}{
		{"", 0},
		{"123456789", 0xBB3D}, // the CRC-16/ARC check value
		{"/!", CRC16([]byte("/!"))},
	} {
		if got := CRC16([]byte(tc.in)); got != tc.want {
			t.Errorf("CRC16(%q) = %04X, want %04X", tc.in, got, tc.want)
		}
	}
}

type goldenMeasurement struct {
	Metric Metric    `json:"metric"`
	Time   time.Time `json:"time"`
	Value  float64   `json:"value"`
}

type golden struct {
	Header       string              `json:"header"`
	Version      string              `json:"version"`
	Time         time.Time           `json:"time"`
	Objects      int                 `json:"objects"`
	Measurements []goldenMeasurement `json:"measurements"`
	Equipment    string              `json:"equipment,omitempty"`
}

// TestGolden parses the real-format telegrams in testdata/*.txt, checks
// that each round-trips byte for byte, and compares what was read with
// testdata/*.golden (rewritten with -update).
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) < 4 {
		t.Fatalf("expected the golden telegrams in testdata, found %d", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			tg, err := Parse(in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			out, _ := tg.AppendBinary(nil)
			if !bytes.Equal(out, in) {
				t.Fatalf("round trip differs:\n%q\n%q", out, in)
			}
			g := golden{Header: tg.Header, Version: tg.Version, Time: tg.Time, Objects: len(tg.Objects), Equipment: tg.Equipment}
			for _, m := range tg.Measurements {
				g.Measurements = append(g.Measurements, goldenMeasurement(m))
			}
			got, _ := json.MarshalIndent(g, "", "\t")
			got = append(got, '\n')
			path := strings.TrimSuffix(f, ".txt") + ".golden"
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs (run with -update if intended):\n%s", path, got)
			}
		})
	}
}

func TestGoldenValues(t *testing.T) {
	// A few values checked by hand, so the golden files are not the only
	// witness of unit scaling and time zones.
	read := func(name string) Telegram {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		tg, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	find := func(tg Telegram, m Metric) Measurement {
		for _, x := range tg.Measurements {
			if x.Metric == m {
				return x
			}
		}
		t.Fatalf("no %s", m)
		return Measurement{}
	}
	nl := read("dsmr5_3phase_gas.txt")
	for _, tc := range []struct {
		tg     Telegram
		metric Metric
		value  float64
		time   string
	}{
		{nl, ImportEnergyT1, 1234567, "2023-11-26T11:00:00Z"},
		{nl, ImportPower, 537, "2023-11-26T11:00:00Z"},
		{nl, ImportPowerL3, 37, "2023-11-26T11:00:00Z"},
		{nl, VoltageL2, 230.4, "2023-11-26T11:00:00Z"},
		{nl, Tariff, 2, "2023-11-26T11:00:00Z"},
		{nl, Gas, 3456.789, "2023-11-26T10:55:00Z"},
		{read("dsmr5_1phase_summer.txt"), ExportPower, 2315, "2023-07-02T12:30:12Z"},
		{read("emucs_3phase_gas.txt"), AverageDemand, 2345, "2023-11-26T12:30:15Z"},
		{read("emucs_3phase_gas.txt"), MonthPeak, 4321, "2023-11-15T17:00:00Z"},
		{read("emucs_3phase_gas.txt"), Gas, 1234.567, "2023-11-26T12:30:00Z"},
		{read("emucs_3phase_gas.txt"), CurrentL2, 1.45, "2023-11-26T12:30:15Z"},
		{read("emucs_1phase_water.txt"), Water, 123.456, "2023-07-02T06:10:00Z"},
	} {
		m := find(tc.tg, tc.metric)
		if d := m.Value - tc.value; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s %s = %v, want %v", tc.tg.Header, tc.metric, m.Value, tc.value)
		}
		if got := m.Time.Format(time.RFC3339); got != tc.time {
			t.Errorf("%s %s time = %s, want %s", tc.tg.Header, tc.metric, got, tc.time)
		}
	}
	if v := read("emucs_3phase_gas.txt").Version; v != "50217" {
		t.Errorf("e-MUCS version = %q", v)
	}
	for _, m := range read("dsmr5_1phase_summer.txt").Measurements {
		if m.Metric == Gas {
			t.Error("placeholder M-Bus channel produced a gas reading")
		}
	}
}

const minimal = "/ISK5\\2M550T-1012\n\n1-3:0.2.8(50)\n0-0:1.0.0(231126120000W)\n1-0:1.8.1(001234.567*kWh)\n!"

func TestParseRejects(t *testing.T) {
	good := seal(minimal)
	if _, err := Parse(good); err != nil {
		t.Fatalf("minimal telegram: %v", err)
	}
	flipped := bytes.Replace(good, []byte("1234.567"), []byte("1234.568"), 1)
	lower := append([]byte(nil), good...)
	copy(lower[len(lower)-6:], strings.ToLower(string(lower[len(lower)-6:])))
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"bit flip, CRC kept", flipped, ErrChecksum},
		{"CRC off by one", append(good[:len(good)-3:len(good)-3], '0', '\r', '\n'), ErrChecksum},
		{"empty", nil, ErrMalformed},
		{"no slash", good[1:], ErrMalformed},
		{"no end", good[:len(good)-7], ErrMalformed},
		{"CRC short", good[:len(good)-3], ErrMalformed},
		{"trailing bytes", append(append([]byte(nil), good...), 'x'), ErrMalformed},
		{"lower-case CRC", lower, ErrMalformed},
		{"LF only", []byte(strings.ReplaceAll(string(good), "\r\n", "\n")), ErrMalformed},
		{"no empty line", seal("/ISK5\\2M550T-1012\n1-0:1.8.1(001234.567*kWh)\n!"), ErrMalformed},
		{"no objects", seal("/ISK5\\2M550T-1012\n\n!"), ErrMalformed},
		{"baud 4", seal(strings.Replace(minimal, "ISK5", "ISK4", 1)), ErrMalformed},
		{"digit manufacturer", seal(strings.Replace(minimal, "ISK5", "IS15", 1)), ErrMalformed},
		{"no identification", seal("/ISK5\n\n1-0:1.8.1(001234.567*kWh)\n!"), ErrMalformed},
		{"bad OBIS", seal(strings.Replace(minimal, "1-0:1.8.1", "1-0:1.8", 1)), ErrMalformed},
		{"OBIS field 256", seal(strings.Replace(minimal, "1-0:1.8.1", "1-0:256.8.1", 1)), ErrMalformed},
		{"repeated OBIS", seal(minimal[:len(minimal)-1] + "1-0:1.8.1(001234.567*kWh)\n!"), ErrMalformed},
		{"no value", seal(strings.Replace(minimal, "(50)", "", 1)), ErrMalformed},
		{"text between values", seal(strings.Replace(minimal, "(50)", "(50)x(1)", 1)), ErrMalformed},
		{"unterminated value", seal(strings.Replace(minimal, "(50)", "(50", 1)), ErrMalformed},
		{"control char", seal(strings.Replace(minimal, "(50)", "(5\t0)", 1)), ErrMalformed},
		{"wrong unit", seal(strings.Replace(minimal, "*kWh", "*Wh", 1)), ErrMalformed},
		{"no unit", seal(strings.Replace(minimal, "*kWh", "", 1)), ErrMalformed},
		{"negative", seal(strings.Replace(minimal, "001234.567", "-01234.567", 1)), ErrMalformed},
		{"exponent", seal(strings.Replace(minimal, "001234.567", "1.234567e3", 1)), ErrMalformed},
		{"two values", seal(strings.Replace(minimal, "(001234.567*kWh)", "(1*kWh)(2*kWh)", 1)), ErrMalformed},
		{"30 February", seal(strings.Replace(minimal, "231126120000W", "230230120000W", 1)), ErrMalformed},
		{"hour 24", seal(strings.Replace(minimal, "231126120000W", "231126240000W", 1)), ErrMalformed},
		{"DST flag X", seal(strings.Replace(minimal, "231126120000W", "231126120000X", 1)), ErrMalformed},
		{"gas without time", seal(minimal[:len(minimal)-1] + "0-1:24.2.1(00012.345*m3)\n!"), ErrMalformed},
		{"gas in GJ", seal(minimal[:len(minimal)-1] + "0-1:24.2.1(231126115500W)(00012.345*GJ)\n!"), ErrMalformed},
		{"peak without time", seal(minimal[:len(minimal)-1] + "1-0:1.6.0(04.321*kW)\n!"), ErrMalformed},
		{"too large", append(seal(minimal), make([]byte, MaxTelegramBytes)...), ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg, err := Parse(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %v, want %v", err, tc.want)
			}
			if len(tg.Objects) != 0 && tc.want != ErrMalformed {
				t.Errorf("a rejected telegram returned objects")
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"231126120000W", "2023-11-26T11:00:00Z"},
		{"230702143012S", "2023-07-02T12:30:12Z"},
		// The hour that repeats when summer time ends, 29 Oct 2023:
		{"231029023000S", "2023-10-29T00:30:00Z"},
		{"231029023000W", "2023-10-29T01:30:00Z"},
		{"240229000000W", "2024-02-28T23:00:00Z"},
		{"000101000000W", "1999-12-31T23:00:00Z"},
		{"230229000000W", ""},
		{"231126120060W", ""},
		{"23112612000W", ""},
		{"2311261200000", ""},
		{"23112612000aW", ""},
	} {
		got, err := ParseTime(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseTime(%q) = %v, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got.Format(time.RFC3339) != tc.want {
			t.Errorf("ParseTime(%q) = %v, %v, want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestErrorsDoNotQuoteTelegram(t *testing.T) {
	in := seal(strings.Replace(minimal, "001234.567*kWh", "001234.567*kWX", 1))
	_, err := Parse(in)
	if err == nil || strings.Contains(err.Error(), "1234.567") || strings.Contains(err.Error(), "2M550T") {
		t.Fatalf("error %v quotes the telegram", err)
	}
}
