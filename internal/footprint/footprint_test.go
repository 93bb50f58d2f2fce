package footprint

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParseStatus(t *testing.T) {
	// Trimmed from a real Linux /proc/self/status.
	const real = "Name:\tcustos-agent\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1240412 kB\nVmSize:\t 1240412 kB\n" +
		"VmLck:\t       0 kB\nVmHWM:\t   14876 kB\nVmRSS:\t   13020 kB\nRssAnon:\t    5120 kB\nThreads:\t9\n"
	tests := []struct {
		name    string
		in      string
		want    Memory
		wantErr string
	}{
		{"real", real, Memory{RSS: 13020 * 1024, Peak: 14876 * 1024}, ""},
		{"order does not matter", "VmRSS: 1 kB\nVmHWM: 2 kB\n", Memory{RSS: 1024, Peak: 2048}, ""},
		{"no VmHWM", "VmRSS:\t 10 kB\n", Memory{}, "no VmRSS or VmHWM"},
		{"empty", "", Memory{}, "no VmRSS or VmHWM"},
		{"bad unit", "VmHWM:\t 10 MB\nVmRSS:\t 10 kB\n", Memory{}, "want"},
		{"bad number", "VmHWM:\t ten kB\nVmRSS:\t 10 kB\n", Memory{}, "bad size"},
		{"negative", "VmHWM:\t -1 kB\nVmRSS:\t 10 kB\n", Memory{}, "bad size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestPercentOfOneCore(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name string
		a, b Sample
		want float64
	}{
		{"idle", Sample{t0, time.Second}, Sample{t0.Add(10 * time.Second), time.Second}, 0},
		{"5 %", Sample{t0, 0}, Sample{t0.Add(10 * time.Second), 500 * time.Millisecond}, 5},
		{"two cores", Sample{t0, 0}, Sample{t0.Add(time.Second), 2 * time.Second}, 200},
		{"no wall time", Sample{t0, 0}, Sample{t0, time.Second}, 0},
	}
	for _, tt := range tests {
		if got := PercentOfOneCore(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestLive reads this test process's own counters: resident memory is
// positive and bounded by its peak, and burning CPU shows up.
func TestLive(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc and getrusage")
	}
	m, err := ReadMemory()
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Peak < m.RSS {
		t.Fatalf("memory %+v: want 0 < RSS <= Peak", m)
	}
	a, err := Take()
	if err != nil {
		t.Fatal(err)
	}
	for x := 0; ; x++ { // spin until getrusage has seen CPU time
		b, err := Take()
		if err != nil {
			t.Fatal(err)
		}
		if b.CPU > a.CPU {
			if p := PercentOfOneCore(a, b); p <= 0 {
				t.Fatalf("spinning shows %v %% of a core", p)
			}
			break
		}
		if b.Wall.Sub(a.Wall) > 10*time.Second {
			t.Fatal("getrusage shows no CPU time after 10 s of spinning")
		}
	}
}
