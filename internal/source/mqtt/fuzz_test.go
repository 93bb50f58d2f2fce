package mqtt

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// decodeSeeds are real-looking payloads with the paths the presets use.
var decodeSeeds = map[string]struct {
	payload, path string
}{
	"tasmota_total":      {tasmotaSensor, "ENERGY.Total"},
	"tasmota_3phase":     {`{"Time":"2023-11-26T12:00:00","ENERGY":{"Total":[1.1,2.2,3.3],"Power":[100,200,300],"Voltage":[230,231,229]}}`, "ENERGY.Power[2]"},
	"shelly_switch":      {shellySwitch, "aenergy.total"},
	"shelly_em":          {shellyEM, "total_act_power"},
	"shelly_em_null":     {shellyEM, "n_current"},
	"ha_state":           {"1234.5", ""},
	"ha_unavailable":     {"unavailable", ""},
	"quoted_name":        {`{"a b":{"c":[0,{"d":"7"}]}}`, `["a b"].c[1].d`},
	"truncated_json":     {`{"ENERGY":{"Power":`, "ENERGY.Power"},
	"deep":               {`[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]`, "x"},
	"huge_number":        {`{"v":1e999}`, "v"},
	"string_number":      {`{"v":" 12 "}`, "v"},
	"trailing_garbage":   {`{"v":1}}`, "v"},
	"bool":               {`{"output":false}`, "output"},
	"plain_hex":          {"0x10", ""},
	"plain_inf_word":     {"Infinity", ""},
	"empty_object_field": {`{}`, "ENERGY.Total"},
}

var discoverySeeds = map[string]string{
	"full":        `{"name":"PV power","state_topic":"pv/state","unit_of_measurement":"kW","device_class":"power","value_template":"{{ value_json.power }}","unique_id":"pv1","device":{"identifiers":["inv1"]}}`,
	"abbreviated": `{"~":"home/pv","stat_t":"~/state","unit_of_meas":"W","dev_cla":"power","val_tpl":"{{ value_json['p'] | float(0) }}"}`,
	"base_suffix": `{"~":"pv","stat_t":"state/~"}`,
	"tasmota":     `{"name":"ENERGY Power","stat_t":"tele/washer/SENSOR","avty_t":"tele/washer/LWT","unit_of_meas":"W","val_tpl":"{{value_json['ENERGY']['Power']}}","dev_cla":"power","stat_cla":"measurement"}`,
	"jinja":       `{"state_topic":"x","value_template":"{% if value_json.a %}{{ value_json.a }}{% endif %}"}`,
	"wildcard":    `{"state_topic":"x/+/y"}`,
	"wrong_type":  `{"state_topic":["x"]}`,
	"empty":       ``,
	"null":        `null`,
}

// FuzzDecode checks that Decode never panics, returns only documented
// reasons and, on success, a finite number.
func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s.payload), s.path)
	}
	f.Fuzz(func(t *testing.T, payload []byte, path string) {
		p, err := ParsePath(path)
		if err != nil {
			return
		}
		if q, err := ParsePath(p.String()); err != nil || q.String() != p.String() {
			t.Fatalf("path %q does not round-trip: %q, %v", path, p.String(), err)
		}
		v, r := Decode(payload, p)
		if r == ReasonNone {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("Decode = %v", v)
			}
			return
		}
		if !slices.Contains(Reasons(), r) {
			t.Fatalf("undocumented reason %q", r)
		}
	})
}

// FuzzDiscovery checks that discovery configs never panic the parser
// and that an accepted one names a topic one can subscribe to and a
// template that formats back to the same path.
func FuzzDiscovery(f *testing.F) {
	for _, s := range discoverySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		d, r := parseDiscovery(payload)
		if r != ReasonNone {
			if !slices.Contains(Reasons(), r) {
				t.Fatalf("undocumented reason %q", r)
			}
			return
		}
		if !validTopic(d.StateTopic) {
			t.Fatalf("accepted state topic %q", d.StateTopic)
		}
		if len(d.Path) > 0 {
			p, ok := ParseTemplate("{{ value_json." + d.Path.String() + " }}")
			if d.Path[0].isIdx || d.Path[0].name != "" && !isIdent(d.Path[0].name) {
				p, ok = ParseTemplate("{{ value_json" + d.Path.String() + " }}")
			}
			if !ok || p.String() != d.Path.String() {
				t.Fatalf("template path %q does not round-trip", d.Path.String())
			}
		}
	})
}

// TestSeedCorpus checks the committed corpus matches the seeds above;
// -update rewrites it.
func TestSeedCorpus(t *testing.T) {
	files := map[string][]byte{}
	for name, s := range decodeSeeds {
		files[filepath.Join("FuzzDecode", name)] = fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\nstring(%q)\n", s.payload, s.path)
	}
	for name, s := range discoverySeeds {
		files[filepath.Join("FuzzDiscovery", name)] = fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", s)
	}
	for name, want := range files {
		path := filepath.Join("testdata", "fuzz", name)
		if *update {
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("seed %s is missing or stale (run with -update)", name)
		}
	}
}
