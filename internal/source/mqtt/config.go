package mqtt

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/custos-iot/custos/internal/source"
	"github.com/custos-iot/custos/internal/source/sim"
	"github.com/custos-iot/custos/internal/wire"
)

// Config configures an MQTT source: the broker, and which topics and
// fields become which streams. Every stream is listed (directly or by a
// device preset), so Keys is known before the first message.
type Config struct {
	// Broker is the broker's URL: mqtt://host:1883 or mqtts://host:8883
	// (TLS). Required.
	Broker string `json:"broker"`
	// ClientID identifies the session at the broker. Default
	// "custos-<random>".
	ClientID string `json:"client_id,omitempty"`
	// Username and Password authenticate to the broker; PasswordFile,
	// if set, is read instead of Password (trailing newline removed).
	Username     string `json:"username,omitempty"`
	Password     string `json:"password,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
	// TLS configures mqtts:// connections. Default: system roots.
	TLS TLS `json:"tls,omitzero"`
	// KeepAlive is the MQTT keep-alive. Default 30 s.
	KeepAlive sim.Duration `json:"keep_alive,omitempty"`
	// MinBackoff and MaxBackoff bound the wait between connection
	// attempts, which grows exponentially. Defaults 1 s and 1 min.
	MinBackoff sim.Duration `json:"min_backoff,omitempty"`
	MaxBackoff sim.Duration `json:"max_backoff,omitempty"`

	// HomeAssistant maps Home Assistant entities.
	HomeAssistant HomeAssistant `json:"home_assistant,omitzero"`
	// Tasmota maps Tasmota devices' SENSOR telemetry.
	Tasmota []Tasmota `json:"tasmota,omitempty"`
	// Shelly maps Shelly Gen2 component status.
	Shelly []Shelly `json:"shelly,omitempty"`
	// Topics maps any other topic.
	Topics []Topic `json:"topics,omitempty"`
	// Meters maps device names to the serial of the meter behind them,
	// reported with every batch so that the hub can check it against the
	// device's registered serial.
	Meters source.Meters `json:"meters,omitempty"`

	// Now is the clock that stamps readings. Default time.Now.
	Now func() time.Time `json:"-"`
	// Log receives connection events and drop reasons, never payloads.
	// Default slog.Default().
	Log *slog.Logger `json:"-"`
}

// TLS configures the connection to an mqtts:// broker.
type TLS struct {
	// CAFile is a PEM bundle of the CAs that may sign the broker's
	// certificate. Default: the system roots.
	CAFile string `json:"ca_file,omitempty"`
	// CertFile and KeyFile are a client certificate and key (PEM), for
	// brokers that require one.
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// ServerName overrides the name checked in the broker's
	// certificate. Default: the broker URL's host.
	ServerName string `json:"server_name,omitempty"`
}

// HomeAssistant maps Home Assistant entities, published by the
// mqtt_statestream integration or announced by MQTT discovery.
type HomeAssistant struct {
	// StatestreamBase is mqtt_statestream's base_topic. Required if
	// Entities is set.
	StatestreamBase string `json:"statestream_base,omitempty"`
	// Entities are statestream entities.
	Entities []Entity `json:"entities,omitempty"`
	// DiscoveryPrefix is the discovery prefix. Default "homeassistant".
	DiscoveryPrefix string `json:"discovery_prefix,omitempty"`
	// Discovered are entities found through discovery configs.
	Discovered []Discovered `json:"discovered,omitempty"`
}

// Entity maps a statestream entity to a stream.
type Entity struct {
	// Entity is the entity ID, "<domain>.<object_id>", e.g.
	// "sensor.grid_power". Required.
	Entity string `json:"entity"`
	// Key is the stream key. Required.
	Key string `json:"key"`
	// Unit is the stream's unit; values in another unit (from the
	// entity's attributes, or SourceUnit) are converted. Default: none.
	Unit string `json:"unit,omitempty"`
	// SourceUnit is the unit the state is in, for when statestream does
	// not publish attributes. Attributes override it.
	SourceUnit string `json:"source_unit,omitempty"`
}

// Discovered maps an entity announced on
// <prefix>/<component>/[<node_id>/]<object_id>/config to a stream.
type Discovered struct {
	// ObjectID is the object_id in the discovery topic. Required.
	ObjectID string `json:"object_id"`
	// Component is the discovery component. Default "sensor".
	Component string `json:"component,omitempty"`
	// Key is the stream key. Required.
	Key string `json:"key"`
	// Unit is the stream's unit; the config's unit_of_measurement is
	// converted to it. Default: none.
	Unit string `json:"unit,omitempty"`
}

// Tasmota maps a Tasmota device's tele/<topic>/SENSOR payload.
type Tasmota struct {
	// Topic is the device's %topic%. Required.
	Topic string `json:"topic"`
	// Device is the first segment of the stream keys. Required.
	Device string `json:"device"`
	// Fields maps payload paths to metrics (the second key segment).
	// Default: ENERGY.Total → energy_total_wh (kWh converted to Wh),
	// ENERGY.Power → power_w, ENERGY.Voltage → voltage_v, ENERGY.Current
	// → current_a. Custom fields are taken as they are.
	Fields map[string]string `json:"fields,omitempty"`
}

// Shelly maps a Shelly Gen2 device's <prefix>/status/<component> payload
// (MQTT "generic status update" enabled).
type Shelly struct {
	// Prefix is the device's MQTT topic prefix, by default its ID such
	// as "shellyplus1pm-a8032ab12345". Required.
	Prefix string `json:"prefix"`
	// Component is "switch:<n>", "pm1:<n>", "em:<n>" or "em1:<n>".
	// Default "switch:0".
	Component string `json:"component,omitempty"`
	// Device is the first segment of the stream keys. Required.
	Device string `json:"device"`
	// Fields maps payload paths to metrics. Default by component:
	// switch and pm1: apower → power_w, voltage → voltage_v, current →
	// current_a, aenergy.total → energy_total_wh; em: total_act_power →
	// power_w, total_current → current_a, and per phase a_/b_/c_
	// act_power, voltage, current → power_l1_w ... current_l3_a; em1:
	// act_power → power_w, voltage → voltage_v, current → current_a.
	Fields map[string]string `json:"fields,omitempty"`
}

// Topic maps a topic, or a field of its JSON payload, to a stream.
type Topic struct {
	// Topic is the exact topic (no wildcards). Required.
	Topic string `json:"topic"`
	// Field is the path of the value in a JSON payload, e.g. "a.b[0]";
	// empty means the payload is a plain number.
	Field string `json:"field,omitempty"`
	// Key is the stream key. Required.
	Key string `json:"key"`
	// Scale multiplies the value. Default 1.
	Scale float64 `json:"scale,omitempty"`
}

// binding maps a value on a topic to a stream.
type binding struct {
	key   string
	path  Path
	scale float64
	unit  string // the stream's unit; "" = no conversion
	// srcUnit is the unit values arrive in, "" if unknown. For
	// statestream it follows the attributes (guarded by Source.mu).
	srcUnit string
}

type field struct {
	path, metric, srcUnit, unit string
}

var (
	tasmotaFields = []field{
		{"ENERGY.Total", "energy_total_wh", "kWh", "Wh"},
		{"ENERGY.Power", "power_w", "", ""},
		{"ENERGY.Voltage", "voltage_v", "", ""},
		{"ENERGY.Current", "current_a", "", ""},
	}
	shellySwitchFields = []field{
		{"apower", "power_w", "", ""},
		{"voltage", "voltage_v", "", ""},
		{"current", "current_a", "", ""},
		{"aenergy.total", "energy_total_wh", "", ""},
	}
	shellyEMFields = []field{
		{"total_act_power", "power_w", "", ""},
		{"total_current", "current_a", "", ""},
		{"a_act_power", "power_l1_w", "", ""},
		{"b_act_power", "power_l2_w", "", ""},
		{"c_act_power", "power_l3_w", "", ""},
		{"a_voltage", "voltage_l1_v", "", ""},
		{"b_voltage", "voltage_l2_v", "", ""},
		{"c_voltage", "voltage_l3_v", "", ""},
		{"a_current", "current_l1_a", "", ""},
		{"b_current", "current_l2_a", "", ""},
		{"c_current", "current_l3_a", "", ""},
	}
	shellyEM1Fields = []field{
		{"act_power", "power_w", "", ""},
		{"voltage", "voltage_v", "", ""},
		{"current", "current_a", "", ""},
	}
)

func customFields(m map[string]string) []field {
	var fs []field
	for p, metric := range m {
		fs = append(fs, field{path: p, metric: metric})
	}
	slices.SortFunc(fs, func(a, b field) int { return strings.Compare(a.path, b.path) })
	return fs
}

// plan is a checked configuration: static bindings per topic, statestream
// attribute topics, and the discovery topics to watch.
type plan struct {
	keys      []string
	static    map[string][]*binding // topic → bindings
	attrs     map[string][]*binding // statestream unit/attributes topic → bindings
	discovery map[string]Discovered // "<component>/<object_id>" → mapping
	prefix    string                // discovery prefix
	filters   []string              // static subscriptions
}

func checkDevice(d string) error {
	if d == "" || strings.Contains(d, "/") || !wire.ValidKey(d+"/x") {
		return fmt.Errorf("device %q must be one stream key segment ([A-Za-z0-9._-]+)", d)
	}
	return nil
}

func newPlan(cfg *Config) (*plan, error) {
	p := &plan{static: map[string][]*binding{}, attrs: map[string][]*binding{}, discovery: map[string]Discovered{}}
	seen := map[string]bool{}
	addKey := func(k string) error {
		if !wire.ValidKey(k) {
			return fmt.Errorf("invalid stream key %q", k)
		}
		if seen[k] {
			return fmt.Errorf("stream key %q mapped twice", k)
		}
		seen[k] = true
		p.keys = append(p.keys, k)
		return nil
	}
	add := func(topic string, b *binding) error {
		if !validTopic(topic) {
			return fmt.Errorf("invalid topic %q", topic)
		}
		if err := addKey(b.key); err != nil {
			return err
		}
		if _, ok := Convert(b.srcUnit, b.unit); !ok {
			return fmt.Errorf("%s: cannot convert %s to %s", b.key, b.srcUnit, b.unit)
		}
		if b.scale == 0 {
			b.scale = 1
		}
		p.static[topic] = append(p.static[topic], b)
		return nil
	}
	addFields := func(topic, device string, fs []field) error {
		if err := checkDevice(device); err != nil {
			return err
		}
		for _, f := range fs {
			path, err := ParsePath(f.path)
			if err != nil || len(path) == 0 {
				return fmt.Errorf("%s: field %q: invalid path", device, f.path)
			}
			if err := add(topic, &binding{key: device + "/" + f.metric, path: path, srcUnit: f.srcUnit, unit: f.unit}); err != nil {
				return err
			}
		}
		return nil
	}

	ha := cfg.HomeAssistant
	if len(ha.Entities) > 0 && (ha.StatestreamBase == "" || !validTopic(ha.StatestreamBase)) {
		return nil, errors.New("home_assistant.statestream_base is required with entities")
	}
	for _, e := range ha.Entities {
		domain, object, ok := strings.Cut(e.Entity, ".")
		if !ok || domain == "" || object == "" || !validTopic(domain+object) || strings.Contains(e.Entity, "/") {
			return nil, fmt.Errorf("home_assistant entity %q must be <domain>.<object_id>", e.Entity)
		}
		base := ha.StatestreamBase + "/" + domain + "/" + object
		b := &binding{key: e.Key, unit: e.Unit, srcUnit: e.SourceUnit}
		if err := add(base+"/state", b); err != nil {
			return nil, err
		}
		p.attrs[base+"/unit_of_measurement"] = append(p.attrs[base+"/unit_of_measurement"], b)
		p.attrs[base+"/attributes"] = append(p.attrs[base+"/attributes"], b)
	}
	if len(ha.Discovered) > 0 {
		p.prefix = ha.DiscoveryPrefix
		if p.prefix == "" {
			p.prefix = "homeassistant"
		}
		if !validTopic(p.prefix) {
			return nil, fmt.Errorf("invalid discovery prefix %q", p.prefix)
		}
		for _, d := range ha.Discovered {
			if d.Component == "" {
				d.Component = "sensor"
			}
			if !isIdent(d.Component) || d.ObjectID == "" || !validTopic(d.ObjectID) || strings.Contains(d.ObjectID, "/") {
				return nil, fmt.Errorf("discovered entity %q/%q: invalid component or object_id", d.Component, d.ObjectID)
			}
			if err := addKey(d.Key); err != nil {
				return nil, err
			}
			id := d.Component + "/" + d.ObjectID
			if _, dup := p.discovery[id]; dup {
				return nil, fmt.Errorf("discovered entity %s mapped twice", id)
			}
			p.discovery[id] = d
			p.filters = append(p.filters,
				p.prefix+"/"+d.Component+"/"+d.ObjectID+"/config",
				p.prefix+"/"+d.Component+"/+/"+d.ObjectID+"/config")
		}
	}
	for _, t := range cfg.Tasmota {
		fs := tasmotaFields
		if len(t.Fields) > 0 {
			fs = customFields(t.Fields)
		}
		if t.Topic == "" || strings.Contains(t.Topic, "/") {
			return nil, fmt.Errorf("tasmota topic %q must be the device's %%topic%%", t.Topic)
		}
		if err := addFields("tele/"+t.Topic+"/SENSOR", t.Device, fs); err != nil {
			return nil, fmt.Errorf("tasmota: %w", err)
		}
	}
	for _, s := range cfg.Shelly {
		if s.Component == "" {
			s.Component = "switch:0"
		}
		kind, _, _ := strings.Cut(s.Component, ":")
		var fs []field
		switch kind {
		case "switch", "pm1":
			fs = shellySwitchFields
		case "em":
			fs = shellyEMFields
		case "em1":
			fs = shellyEM1Fields
		default:
			if len(s.Fields) == 0 {
				return nil, fmt.Errorf("shelly component %q has no default fields; set fields", s.Component)
			}
		}
		if len(s.Fields) > 0 {
			fs = customFields(s.Fields)
		}
		if s.Prefix == "" {
			return nil, errors.New("shelly prefix is required")
		}
		if err := addFields(s.Prefix+"/status/"+s.Component, s.Device, fs); err != nil {
			return nil, fmt.Errorf("shelly: %w", err)
		}
	}
	for _, t := range cfg.Topics {
		path, err := ParsePath(t.Field)
		if err != nil {
			return nil, fmt.Errorf("topic %q field %q: %w", t.Topic, t.Field, err)
		}
		if err := add(t.Topic, &binding{key: t.Key, path: path, scale: t.Scale}); err != nil {
			return nil, err
		}
	}
	if len(p.keys) == 0 {
		return nil, errors.New("no streams configured")
	}
	for t := range p.static {
		p.filters = append(p.filters, t)
	}
	for t := range p.attrs {
		p.filters = append(p.filters, t)
	}
	slices.Sort(p.filters)
	return p, nil
}

// brokerURL checks the broker URL and reports whether it uses TLS.
func brokerURL(s string) (*url.URL, bool, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, false, fmt.Errorf("broker URL: %w", err)
	}
	if u.Host == "" || u.Port() == "" {
		return nil, false, errors.New("broker URL must be scheme://host:port")
	}
	switch u.Scheme {
	case "mqtt", "tcp":
		return u, false, nil
	case "mqtts", "tls", "ssl":
		return u, true, nil
	}
	return nil, false, fmt.Errorf("broker URL scheme %q: use mqtt or mqtts", u.Scheme)
}
