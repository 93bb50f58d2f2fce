package mqtt

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestDecode(t *testing.T) {
	tasmota := `{"Time":"2023-11-26T12:00:00","ENERGY":{"TotalStartTime":"2023-01-01T00:00:00","Total":12.345,"Power":[450,12,0],"Voltage":231,"Current":1.95,"Factor":0.9}}`
	shelly := `{"id":0,"source":"timer","output":true,"apower":1200.5,"voltage":229.8,"current":5.2,"aenergy":{"total":5432.1,"by_minute":[1,2,3],"minute_ts":1700000000},"temperature":{"tC":45.1,"tF":113.2}}`
	for _, tc := range []struct {
		name, payload, path string
		want                float64
		reason              Reason
	}{
		{"plain", "21.5", "", 21.5, ReasonNone},
		{"plain spaces", " -3e2\n", "", -300, ReasonNone},
		{"plain on", "on", "", 1, ReasonNone},
		{"plain off", "OFF", "", 0, ReasonNone},
		{"unavailable", "unavailable", "", 0, ReasonUnavailable},
		{"unknown", "unknown", "", 0, ReasonUnavailable},
		{"empty", "", "", 0, ReasonUnavailable},
		{"text", "hello", "", 0, ReasonNotNumber},
		{"NaN", "NaN", "", 0, ReasonNotNumber},
		{"Inf", "+Inf", "", 0, ReasonNotNumber},
		{"hex float", "0x1p3", "", 0, ReasonNotNumber},
		{"underscore", "1_000", "", 0, ReasonNotNumber},
		{"overflow", "1e400", "", 0, ReasonNotNumber},
		{"tasmota total", tasmota, "ENERGY.Total", 12.345, ReasonNone},
		{"tasmota phase", tasmota, "ENERGY.Power[1]", 12, ReasonNone},
		{"tasmota array", tasmota, "ENERGY.Power", 0, ReasonNotNumber},
		{"tasmota missing", tasmota, "ENERGY.Today", 0, ReasonMissingField},
		{"tasmota index out", tasmota, "ENERGY.Power[3]", 0, ReasonMissingField},
		{"tasmota string", tasmota, "Time", 0, ReasonNotNumber},
		{"shelly energy", shelly, "aenergy.total", 5432.1, ReasonNone},
		{"shelly quoted", shelly, "temperature['tC']", 45.1, ReasonNone},
		{"shelly bool", shelly, "output", 1, ReasonNone},
		{"index into object", shelly, "aenergy[0]", 0, ReasonMissingField},
		{"name into number", shelly, "apower.x", 0, ReasonMissingField},
		{"numeric string", `{"v":"3.25"}`, "v", 3.25, ReasonNone},
		{"null", `{"v":null}`, "v", 0, ReasonUnavailable},
		{"not json", "{", "v", 0, ReasonInvalidJSON},
		{"trailing", `{"v":1} x`, "v", 0, ReasonInvalidJSON},
		{"two docs", `{"v":1}{"v":2}`, "v", 0, ReasonInvalidJSON},
		{"too large", strings.Repeat(" ", MaxPayloadBytes+1), "", 0, ReasonTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePath(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			got, r := Decode([]byte(tc.payload), p)
			if r != tc.reason || (r == ReasonNone && got != tc.want) {
				t.Fatalf("Decode = %v, %q; want %v, %q", got, r, tc.want, tc.reason)
			}
		})
	}
}

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		ok      bool
	}{
		{"", "", true},
		{"a", "a", true},
		{"ENERGY.Power[0]", "ENERGY.Power[0]", true},
		{"a['b c']", `a["b c"]`, true},
		{`a["x"].y`, "a.x.y", true},
		{"em:0.a", "em:0.a", true},
		{"a.", "", false},
		{".a", "", false},
		{"a..b", "", false},
		{"a[", "", false},
		{"a[-1]", "", false},
		{"a[01]", "", false},
		{"a[x]", "", false},
		{"a b", "", false},
		{"1a", "", false},
		{"a['']", "", false},
	} {
		p, err := ParsePath(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParsePath(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && p.String() != tc.out {
			t.Errorf("ParsePath(%q).String() = %q, want %q", tc.in, p.String(), tc.out)
		}
	}
}

func TestParseTemplate(t *testing.T) {
	for _, tc := range []struct {
		in, path string
		ok       bool
	}{
		{"", "", true},
		{"{{ value }}", "", true},
		{"{{value_json.power}}", "power", true},
		{"{{ value_json.ENERGY.Power }}", "ENERGY.Power", true},
		{"{{ value_json['temp'] }}", "temp", true},
		{"{{ value_json.a[1] | float }}", "a[1]", true},
		{"{{ value_json.a | float(0) | round(2) }}", "a", true},
		{"{{ value | int }}", "", true},
		{"{{ value_json.a * 1000 }}", "", false},
		{"{{ value_json.a | multiply(1000) }}", "", false},
		{"{% if value %}1{% endif %}", "", false},
		{"{{ value_json }}", "", false},
		{"{{ states('sensor.x') }}", "", false},
		{"{{ value_json.a }} {{ value }}", "", false},
		{"{{ value | round }}", "", false},
	} {
		p, ok := ParseTemplate(tc.in)
		if ok != tc.ok || (ok && p.String() != tc.path) {
			t.Errorf("ParseTemplate(%q) = %q, %v; want %q, %v", tc.in, p, ok, tc.path, tc.ok)
		}
	}
}

func TestConvert(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		f        float64
		ok       bool
	}{
		{"kW", "W", 1000, true},
		{"W", "kW", 0.001, true},
		{"kWh", "Wh", 1000, true},
		{"m³", "m3", 1, true},
		{"L", "m3", 0.001, true},
		{"", "W", 1, true},
		{"W", "", 1, true},
		{"furlongs", "furlongs", 1, true},
		{"kWh", "W", 0, false},
		{"°C", "W", 0, false},
		{"furlongs", "W", 0, false},
	} {
		f, ok := Convert(tc.from, tc.to)
		if ok != tc.ok || f != tc.f {
			t.Errorf("Convert(%q, %q) = %v, %v; want %v, %v", tc.from, tc.to, f, ok, tc.f, tc.ok)
		}
	}
}

func TestParseDiscovery(t *testing.T) {
	for _, tc := range []struct {
		name, payload string
		want          discovery
		reason        Reason
	}{
		{"full", `{"name":"PV","state_topic":"pv/state","unit_of_measurement":"kW","device_class":"power","value_template":"{{ value_json.power }}"}`,
			discovery{StateTopic: "pv/state", Unit: "kW", Class: "power", Path: Path{{name: "power"}}}, ReasonNone},
		{"abbreviated with base", `{"~":"home/pv","stat_t":"~/state","unit_of_meas":"W","dev_cla":"power","val_tpl":"{{value_json.p}}"}`,
			discovery{StateTopic: "home/pv/state", Unit: "W", Class: "power", Path: Path{{name: "p"}}}, ReasonNone},
		{"plain value", `{"state_topic":"x/y"}`, discovery{StateTopic: "x/y"}, ReasonNone},
		{"no state topic", `{"name":"x"}`, discovery{}, ReasonBadDiscovery},
		{"wildcard state topic", `{"state_topic":"x/#"}`, discovery{}, ReasonBadDiscovery},
		{"state topic number", `{"state_topic":5}`, discovery{}, ReasonBadDiscovery},
		{"template", `{"state_topic":"x","value_template":"{{ value_json.a * 2 }}"}`, discovery{}, ReasonUnsupportedTemplate},
		{"not json", `state_topic`, discovery{}, ReasonInvalidJSON},
		{"array", `[]`, discovery{}, ReasonInvalidJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, r := parseDiscovery([]byte(tc.payload))
			if r != tc.reason {
				t.Fatalf("reason = %q, want %q", r, tc.reason)
			}
			if r == ReasonNone && (got.StateTopic != tc.want.StateTopic || got.Unit != tc.want.Unit || got.Class != tc.want.Class || got.Path.String() != tc.want.Path.String()) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNewConfig(t *testing.T) {
	ok := func(c Config) Config {
		c.Broker = "mqtt://127.0.0.1:1883"
		return c
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		keys int
	}{
		{"tasmota", ok(Config{Tasmota: []Tasmota{{Topic: "washer", Device: "washer"}}}), 4},
		{"shelly em", ok(Config{Shelly: []Shelly{{Prefix: "shellypro3em-1", Component: "em:0", Device: "mains"}}}), 11},
		{"shelly switch default", ok(Config{Shelly: []Shelly{{Prefix: "shellyplus1pm-1", Device: "boiler"}}}), 4},
		{"custom fields", ok(Config{Tasmota: []Tasmota{{Topic: "t", Device: "d", Fields: map[string]string{"ENERGY.Power[0]": "power_l1_w"}}}}), 1},
		{"ha", ok(Config{HomeAssistant: HomeAssistant{StatestreamBase: "ss", Entities: []Entity{{Entity: "sensor.grid", Key: "house/grid_w", Unit: "W"}},
			Discovered: []Discovered{{ObjectID: "pv", Key: "pv/power_w"}}}}), 2},
		{"no streams", ok(Config{}), -1},
		{"no broker", Config{Topics: []Topic{{Topic: "a", Key: "a/b"}}}, -1},
		{"bad scheme", Config{Broker: "http://x:1", Topics: []Topic{{Topic: "a", Key: "a/b"}}}, -1},
		{"no port", Config{Broker: "mqtt://x", Topics: []Topic{{Topic: "a", Key: "a/b"}}}, -1},
		{"tls on plain", ok(Config{TLS: TLS{CAFile: "x"}, Topics: []Topic{{Topic: "a", Key: "a/b"}}}), -1},
		{"wildcard topic", ok(Config{Topics: []Topic{{Topic: "a/+", Key: "a/b"}}}), -1},
		{"bad key", ok(Config{Topics: []Topic{{Topic: "a", Key: "ab"}}}), -1},
		{"duplicate key", ok(Config{Topics: []Topic{{Topic: "a", Key: "a/b"}, {Topic: "b", Key: "a/b"}}}), -1},
		{"bad path", ok(Config{Topics: []Topic{{Topic: "a", Field: "x..y", Key: "a/b"}}}), -1},
		{"statestream without base", ok(Config{HomeAssistant: HomeAssistant{Entities: []Entity{{Entity: "sensor.x", Key: "a/b"}}}}), -1},
		{"entity without domain", ok(Config{HomeAssistant: HomeAssistant{StatestreamBase: "s", Entities: []Entity{{Entity: "x", Key: "a/b"}}}}), -1},
		{"incompatible units", ok(Config{HomeAssistant: HomeAssistant{StatestreamBase: "s", Entities: []Entity{{Entity: "sensor.x", Key: "a/b", Unit: "W", SourceUnit: "kWh"}}}}), -1},
		{"shelly unknown component", ok(Config{Shelly: []Shelly{{Prefix: "p", Component: "cover:0", Device: "d"}}}), -1},
		{"tasmota full topic", ok(Config{Tasmota: []Tasmota{{Topic: "tele/x", Device: "d"}}}), -1},
		{"device with slash", ok(Config{Tasmota: []Tasmota{{Topic: "x", Device: "a/b"}}}), -1},
		{"missing password file", ok(Config{PasswordFile: "/nonexistent", Topics: []Topic{{Topic: "a", Key: "a/b"}}}), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if tc.keys < 0 {
				if err == nil {
					t.Fatal("New accepted an invalid config")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Keys()) != tc.keys {
				t.Errorf("keys = %v", s.Keys())
			}
		})
	}
}

// TestHandle maps payloads to values without a broker.
func TestHandle(t *testing.T) {
	s, err := New(Config{
		Broker: "mqtt://127.0.0.1:1883",
		HomeAssistant: HomeAssistant{
			StatestreamBase: "ss",
			Entities:        []Entity{{Entity: "sensor.grid_power", Key: "house/grid_power_w", Unit: "W"}},
			Discovered:      []Discovered{{ObjectID: "pv_power", Key: "pv/power_w", Unit: "W"}},
		},
		Tasmota: []Tasmota{{Topic: "washer", Device: "washer"}},
		Log:     slog.New(slog.DiscardHandler),
		Now:     func() time.Time { return time.UnixMilli(1e12) },
	})
	if err != nil {
		t.Fatal(err)
	}
	var subscribed []string
	sub := func(topic string) { subscribed = append(subscribed, topic) }
	steps := []struct {
		topic, payload string
		want           []value
	}{
		{"ss/sensor/grid_power/state", "1500", []value{{"house/grid_power_w", 1500}}},
		{"ss/sensor/grid_power/unit_of_measurement", `"kW"`, nil},
		{"ss/sensor/grid_power/state", "1.5", []value{{"house/grid_power_w", 1500}}},
		{"ss/sensor/grid_power/attributes", `{"unit_of_measurement":"W","friendly_name":"Grid"}`, nil},
		{"ss/sensor/grid_power/state", "1.5", []value{{"house/grid_power_w", 1.5}}},
		{"ss/sensor/grid_power/attributes", `{"unit_of_measurement":"kWh"}`, nil},
		{"ss/sensor/grid_power/state", "1.5", nil}, // unit_mismatch
		{"homeassistant/sensor/inverter/pv_power/config", `{"stat_t":"pv/state","unit_of_meas":"kW","val_tpl":"{{ value_json.p }}"}`, nil},
		{"pv/state", `{"p":2.5}`, []value{{"pv/power_w", 2500}}},
		{"pv/state", `{"q":2.5}`, nil}, // missing_field
		{"homeassistant/sensor/inverter/pv_power/config", ``, nil},
		{"pv/state", `{"p":2.5}`, nil}, // removed
		{"tele/washer/SENSOR", `{"ENERGY":{"Total":1.5,"Power":100,"Voltage":230,"Current":0.5}}`,
			[]value{{"washer/energy_total_wh", 1500}, {"washer/power_w", 100}, {"washer/voltage_v", 230}, {"washer/current_a", 0.5}}},
		{"tele/washer/SENSOR", `garbage`, nil}, // one invalid_json, not four
		{"tele/other/SENSOR", `{}`, nil},
	}
	for i, st := range steps {
		got := s.handle(st.topic, []byte(st.payload), sub)
		if len(got) != len(st.want) {
			t.Fatalf("step %d (%s): got %v, want %v", i, st.topic, got, st.want)
		}
		for j := range got {
			if got[j].key != st.want[j].key || abs(got[j].v-st.want[j].v) > 1e-9 {
				t.Errorf("step %d: got %v, want %v", i, got[j], st.want[j])
			}
		}
	}
	if len(subscribed) != 1 || subscribed[0] != "pv/state" {
		t.Errorf("subscribed %v", subscribed)
	}
	d := s.Stats().Dropped
	if d[ReasonUnitMismatch] != 1 || d[ReasonMissingField] != 1 || d[ReasonInvalidJSON] != 1 {
		t.Errorf("dropped = %v", d)
	}
	// Unmatched: pv/state after the entity was removed, tele/other.
	if m := s.Stats().Messages; m != uint64(len(steps)-2) {
		t.Errorf("messages = %d, want %d", m, len(steps)-2)
	}
}

func abs(x float64) float64 { return max(x, -x) }
