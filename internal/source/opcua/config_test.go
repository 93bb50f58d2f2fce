package opcua

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/custos-iot/custos/internal/wire"
)

func TestConfigCheck(t *testing.T) {
	node := []Node{{NodeID: "ns=2;s=Temp", Metric: "temp_c"}}
	ok := func(c Config) Config {
		if c.Endpoint == "" {
			c.Endpoint = "opc.tcp://127.0.0.1:4840"
		}
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"minimal secured", ok(Config{Device: "plc", Nodes: node, StateDir: "d"}), ""},
		{"explicit none", ok(Config{Device: "plc", Nodes: node, Security: SecurityNone}), ""},
		{"none anonymous", ok(Config{Device: "plc", Nodes: node, Security: SecurityNone, Auth: AuthAnonymous}), ""},
		{"secured anonymous", ok(Config{Device: "plc", Nodes: node, Auth: AuthAnonymous, StateDir: "d"}), ""},
		{"all files, no state dir", ok(Config{Device: "plc", Nodes: node, CertFile: "c", KeyFile: "k", ServerCertFile: "s"}), ""},
		{"node device only", ok(Config{Nodes: []Node{{NodeID: "i=2258", Device: "srv", Metric: "t"}}, StateDir: "d"}), ""},
		{"no endpoint", Config{Device: "plc", Nodes: node, StateDir: "d"}, "endpoint required"},
		{"http endpoint", Config{Endpoint: "http://x:4840", Device: "plc", Nodes: node, StateDir: "d"}, "opc.tcp://"},
		{"no host", Config{Endpoint: "opc.tcp://", Device: "plc", Nodes: node, StateDir: "d"}, "opc.tcp://"},
		{"unknown security", ok(Config{Device: "plc", Nodes: node, Security: "basic128rsa15", StateDir: "d"}), "security must be"},
		{"none with certificate auth", ok(Config{Device: "plc", Nodes: node, Security: SecurityNone, Auth: AuthCertificate}), "only anonymous"},
		{"none with files", ok(Config{Device: "plc", Nodes: node, Security: SecurityNone, ServerCertFile: "s"}), "no certificates"},
		{"unknown auth", ok(Config{Device: "plc", Nodes: node, Auth: "username", StateDir: "d"}), "auth must be"},
		{"secured without state dir", ok(Config{Device: "plc", Nodes: node}), "no state directory"},
		{"cert without key", ok(Config{Device: "plc", Nodes: node, CertFile: "c", StateDir: "d"}), "go together"},
		{"no nodes", ok(Config{Device: "plc", StateDir: "d"}), "at least one node"},
		{"bad node id", ok(Config{Device: "plc", Nodes: []Node{{NodeID: "Temp", Metric: "t"}}, StateDir: "d"}), "not an OPC UA node ID"},
		{"empty node id", ok(Config{Device: "plc", Nodes: []Node{{Metric: "t"}}, StateDir: "d"}), "not an OPC UA node ID"},
		{"node twice", ok(Config{Device: "plc", Nodes: []Node{{NodeID: "ns=2;i=5", Metric: "a"}, {NodeID: "ns=2;i=5", Metric: "b"}}, StateDir: "d"}), "listed twice"},
		{"stream twice", ok(Config{Device: "plc", Nodes: []Node{{NodeID: "ns=2;i=5", Metric: "a"}, {NodeID: "ns=2;i=6", Metric: "a"}}, StateDir: "d"}), "mapped twice"},
		{"no device", ok(Config{Nodes: node, StateDir: "d"}), "no device"},
		{"device with slash", ok(Config{Device: "a/b", Nodes: node, StateDir: "d"}), "one stream key segment"},
		{"metric with space", ok(Config{Device: "plc", Nodes: []Node{{NodeID: "i=1", Metric: "a b"}}, StateDir: "d"}), "metric"},
		{"key too long", ok(Config{Device: strings.Repeat("d", 200), Nodes: []Node{{NodeID: "i=1", Metric: strings.Repeat("m", 200)}}, StateDir: "d"}), ""},
		{"backoff inverted", ok(Config{Device: "plc", Nodes: node, StateDir: "d", MinBackoff: 10, MaxBackoff: 5}), "min_backoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.check()
			if tt.name == "key too long" {
				// Either segment or key validation refuses it.
				if err == nil {
					t.Fatal("accepted an over-long stream key")
				}
				return
			}
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNewDefaultsAndKeyFile(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{Endpoint: "opc.tcp://127.0.0.1:4840", Device: "plc", Nodes: []Node{{NodeID: "ns=2;s=T", Metric: "t"}, {NodeID: "i=7", Device: "x", Metric: "y"}}, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Security != SecurityBasic256Sha256 || s.cfg.Auth != AuthCertificate {
		t.Errorf("defaults: security %q auth %q", s.cfg.Security, s.cfg.Auth)
	}
	if got := strings.Join(s.Keys(), ","); got != "plc/t,x/y" {
		t.Errorf("keys %s", got)
	}
	// The same certificate is loaded on the next start.
	s2, err := New(s.cfg)
	if err != nil || string(s2.cert) != string(s.cert) {
		t.Fatalf("second start: %v, same cert %v", err, s2 != nil && string(s2.cert) == string(s.cert))
	}
	n, err := New(Config{Endpoint: "opc.tcp://h:1", Device: "plc", Nodes: []Node{{NodeID: "i=1", Metric: "m"}}, Security: SecurityNone})
	if err != nil || n.cfg.Auth != AuthAnonymous {
		t.Fatalf("none: %v %v", err, n)
	}
}

func TestConvert(t *testing.T) {
	ts := time.Date(2026, 11, 26, 12, 0, 0, 123_000_000, time.UTC)
	srv := ts.Add(time.Second)
	now := func() time.Time { return ts.Add(time.Hour) }
	full := func(v any, st ua.StatusCode) *ua.DataValue {
		return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueStatusCode | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
			Value: ua.MustVariant(v), Status: st, SourceTimestamp: ts, ServerTimestamp: srv}
	}
	ms := ts.UnixMilli()
	tests := []struct {
		name string
		dv   *ua.DataValue
		want wire.Reading
		why  Reason
	}{
		{"float64", full(21.5, ua.StatusOK), wire.Reading{Time: ms, Value: 21.5}, ""},
		{"float32", full(float32(0.25), ua.StatusOK), wire.Reading{Time: ms, Value: 0.25}, ""},
		{"int16", full(int16(-3), ua.StatusOK), wire.Reading{Time: ms, Value: -3}, ""},
		{"uint64", full(uint64(1<<40), ua.StatusOK), wire.Reading{Time: ms, Value: 1 << 40}, ""},
		{"byte", full(byte(7), ua.StatusOK), wire.Reading{Time: ms, Value: 7}, ""},
		{"true", full(true, ua.StatusOK), wire.Reading{Time: ms, Value: 1}, ""},
		{"false", full(false, ua.StatusOK), wire.Reading{Time: ms, Value: 0}, ""},
		{"uncertain", full(1.0, ua.StatusUncertainLastUsableValue), wire.Reading{Time: ms, Value: 1, Quality: wire.QualityUncertain}, ""},
		{"bad with value", full(2.0, ua.StatusBadSensorFailure), wire.Reading{Time: ms, Value: 2, Quality: wire.QualityBad}, ""},
		{"good subcode", full(3.0, ua.StatusGoodClamped), wire.Reading{Time: ms, Value: 3}, ""},
		{"server timestamp fallback", &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueServerTimestamp, Value: ua.MustVariant(1.0), ServerTimestamp: srv}, wire.Reading{Time: srv.UnixMilli(), Value: 1}, ""},
		{"agent clock fallback", &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(1.0)}, wire.Reading{Time: now().UnixMilli(), Value: 1}, ""},
		{"string", full("on", ua.StatusOK), wire.Reading{}, ReasonNotNumeric},
		{"array", full([]float64{1, 2}, ua.StatusOK), wire.Reading{}, ReasonNotNumeric},
		{"no value", &ua.DataValue{EncodingMask: ua.DataValueSourceTimestamp, SourceTimestamp: ts}, wire.Reading{}, ReasonNotNumeric},
		{"bad without value", &ua.DataValue{EncodingMask: ua.DataValueStatusCode, Status: ua.StatusBadNoCommunication}, wire.Reading{}, ReasonBadNoValue},
		{"NaN", full(math.NaN(), ua.StatusOK), wire.Reading{}, ReasonNotFinite},
		{"Inf", full(math.Inf(-1), ua.StatusOK), wire.Reading{}, ReasonNotFinite},
		{"before 1970", &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp, Value: ua.MustVariant(1.0), SourceTimestamp: time.Date(1601, 1, 2, 0, 0, 0, 0, time.UTC)}, wire.Reading{}, ReasonBadTime},
		{"nil", nil, wire.Reading{}, ReasonNotNumeric},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := convert(tt.dv, now)
			if why != tt.why {
				t.Fatalf("reason %q, want %q", why, tt.why)
			}
			if why == "" && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
