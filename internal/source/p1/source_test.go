package p1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/custos-iot/custos/internal/source"
	"github.com/custos-iot/custos/internal/source/sim"
)

// telegram returns a sealed three-phase telegram at meter time ts
// (YYMMDDhhmmssW) with the import register at kwh.
func telegram(ts, kwh string) []byte {
	return seal(fmt.Sprintf("/ISK5\\2M550T-1012\n\n1-3:0.2.8(50)\n0-0:1.0.0(%s)\n1-0:1.8.1(%s*kWh)\n1-0:1.7.0(00.537*kW)\n0-1:24.1.0(003)\n0-1:24.2.1(231126115500W)(03456.789*m3)\n!", ts, kwh))
}

// collector gathers emitted readings on a channel.
type collector chan source.Reading

func (c collector) emit(rs []source.Reading) error {
	for _, r := range rs {
		c <- r
	}
	return nil
}

func (c collector) next(t *testing.T) source.Reading {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a reading")
		return source.Reading{}
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestNewConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"tcp", Config{Device: "meter", TCP: "127.0.0.1:2001"}, true},
		{"serial", Config{Device: "meter", Serial: "/dev/ttyUSB0"}, true},
		{"both", Config{Device: "meter", TCP: "127.0.0.1:2001", Serial: "/dev/ttyUSB0"}, false},
		{"neither", Config{Device: "meter"}, false},
		{"tcp without port", Config{Device: "meter", TCP: "bridge"}, false},
		{"no device", Config{TCP: "127.0.0.1:2001"}, false},
		{"bad device", Config{Device: "me/ter", TCP: "127.0.0.1:2001"}, false},
		{"unknown metric", Config{Device: "meter", TCP: "127.0.0.1:2001", Metrics: []Metric{"nope"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("New = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && len(s.Keys()) != len(Metrics()) {
				t.Errorf("Keys = %d, want %d", len(s.Keys()), len(Metrics()))
			}
		})
	}
	s, _ := New(Config{Device: "meter", TCP: "127.0.0.1:1", Metrics: []Metric{Gas, ImportPower}})
	if got := strings.Join(s.Keys(), ","); got != "meter/gas_m3,meter/import_power_w" {
		t.Errorf("Keys = %s", got)
	}
}

// TestTCP feeds the source from a local bridge: garbage, a telegram split
// into small writes, a truncated one, one with a bad CRC, then the bridge
// drops the connection; after reconnecting the source reads on, and
// repeats nothing (the gas value, already sent, is not sent again).
func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := New(Config{
		Device: "meter", TCP: ln.Addr().String(),
		Metrics:    []Metric{ImportEnergyT1, ImportPower, Gas},
		MinBackoff: sim.Duration(10 * time.Millisecond), Log: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t1 := telegram("231126120000W", "001234.567")
	t2 := telegram("231126120001W", "001234.568")
	t3 := telegram("231126120002W", "001234.569")
	bad := telegram("231126120003W", "001234.570")
	bad[len(bad)-3] ^= 1

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(collector, 100)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, map[string]int64{}, got.emit) }()

	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("\x00\xfe\xffnoise!12\r\n"))
	for i := 0; i < len(t1); i += 7 {
		conn.Write(t1[i:min(i+7, len(t1))])
	}
	conn.Write(t2[:50]) // cut short by the next telegram
	conn.Write(bad)
	conn.Write(t2)
	want := []struct {
		key   string
		value float64
		time  string
	}{
		{"meter/import_energy_t1_wh", 1234567, "2023-11-26T11:00:00Z"},
		{"meter/import_power_w", 537, "2023-11-26T11:00:00Z"},
		{"meter/gas_m3", 3456.789, "2023-11-26T10:55:00Z"},
		{"meter/import_energy_t1_wh", 1234568, "2023-11-26T11:00:01Z"},
		{"meter/import_power_w", 537, "2023-11-26T11:00:01Z"},
		// after the reconnect
		{"meter/import_energy_t1_wh", 1234569, "2023-11-26T11:00:02Z"},
		{"meter/import_power_w", 537, "2023-11-26T11:00:02Z"},
	}
	check := func(i int) {
		t.Helper()
		r := got.next(t)
		w := want[i]
		if tm := time.UnixMilli(r.Time).UTC().Format(time.RFC3339); r.Key != w.key || tm != w.time || abs(r.Value-w.value) > 1e-6 {
			t.Errorf("reading %d = %s %v @%s, want %s %v @%s", i, r.Key, r.Value, tm, w.key, w.value, w.time)
		}
	}
	for i := range 5 {
		check(i)
	}
	conn.Write(t3[:60]) // the bridge dies mid-telegram
	conn.Close()

	conn, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(t3)
	check(5)
	check(6)
	st := s.Stats()
	if st.Telegrams != 3 || st.BadChecksum != 1 || st.Connects != 2 || st.Failures != 1 || !st.Connected || st.SkippedBytes == 0 {
		t.Errorf("stats = %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	select {
	case r := <-got:
		t.Errorf("unexpected reading %+v", r)
	default:
	}
}

func abs(x float64) float64 { return max(x, -x) }

// TestResume checks that readings the agent already holds are not
// emitted again.
func TestResume(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, _ := New(Config{Device: "meter", TCP: ln.Addr().String(), Metrics: []Metric{ImportEnergyT1, Gas}, Log: quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(collector, 10)
	resume := map[string]int64{
		"meter/import_energy_t1_wh": time.Date(2023, 11, 26, 11, 0, 0, 0, time.UTC).UnixMilli(),
		"meter/gas_m3":              time.Date(2023, 11, 26, 10, 55, 0, 0, time.UTC).UnixMilli(),
	}
	go s.Run(ctx, resume, got.emit)
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(telegram("231126120000W", "001234.567"))
	conn.Write(telegram("231126120001W", "001234.568"))
	if r := got.next(t); r.Key != "meter/import_energy_t1_wh" || r.Value != 1234568 {
		t.Errorf("first reading after resume = %+v", r)
	}
}

// TestSerial reads from a FIFO standing in for the serial device (the
// line settings are skipped for a non-terminal) and checks that a failing
// emit stops the source with that error.
func TestSerial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ttyP1")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	s, err := New(Config{Device: "meter", Serial: path, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("spool full")
	got := make(chan []source.Reading, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.Run(context.Background(), nil, func(rs []source.Reading) error {
			got <- append([]source.Reading(nil), rs...)
			return stop
		})
	}()
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	b, err := os.ReadFile("testdata/emucs_3phase_gas.txt")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("garbage"))
	w.Write(b)
	select {
	case rs := <-got:
		if len(rs) != 22 {
			t.Errorf("emitted %d readings, want 22", len(rs))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no readings")
	}
	if err := <-done; !errors.Is(err, stop) {
		t.Fatalf("Run = %v, want the emit error", err)
	}
}

var _ io.Closer = (*os.File)(nil)
