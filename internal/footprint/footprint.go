// Package footprint measures this process's own resource use: resident
// memory from /proc/self/status and CPU time from getrusage. It backs the
// edge agent's footprint benchmark (custos-agent bench).
//
// It reads only this process's counters and never imports the hub's
// server side, so the agent binary can link it.
package footprint

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Memory is this process's resident set size, in bytes.
type Memory struct {
	// RSS is the resident set now (VmRSS).
	RSS int64
	// Peak is the largest resident set since the process started (VmHWM).
	Peak int64
}

// ReadMemory reads this process's resident set from /proc/self/status.
// On systems without /proc it returns an error wrapping
// errors.ErrUnsupported.
func ReadMemory() (Memory, error) {
	if runtime.GOOS != "linux" {
		return Memory{}, fmt.Errorf("footprint: resident memory on %s: %w", runtime.GOOS, errors.ErrUnsupported)
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return Memory{}, fmt.Errorf("footprint: %w", err)
	}
	defer f.Close()
	return parseStatus(f)
}

// parseStatus reads VmRSS and VmHWM from the text of /proc/<pid>/status,
// whose sizes are in kB (1024 bytes).
func parseStatus(r io.Reader) (Memory, error) {
	var m Memory
	var haveRSS, havePeak bool
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return Memory{}, fmt.Errorf("footprint: status line %q: want \"<n> kB\"", sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || kb < 0 {
			return Memory{}, fmt.Errorf("footprint: status line %q: bad size", sc.Text())
		}
		if name == "VmRSS" {
			m.RSS, haveRSS = kb*1024, true
		} else {
			m.Peak, havePeak = kb*1024, true
		}
	}
	if err := sc.Err(); err != nil {
		return Memory{}, fmt.Errorf("footprint: %w", err)
	}
	if !haveRSS || !havePeak {
		return Memory{}, errors.New("footprint: status has no VmRSS or VmHWM line")
	}
	return m, nil
}

// Sample is this process's CPU time at a moment.
type Sample struct {
	// Wall is when the sample was taken.
	Wall time.Time
	// CPU is the user plus system CPU time consumed since the process
	// started, all threads included.
	CPU time.Duration
}

// Take samples this process's CPU time (getrusage RUSAGE_SELF). On
// systems without getrusage it returns an error wrapping
// errors.ErrUnsupported.
func Take() (Sample, error) {
	cpu, err := cpuTime()
	if err != nil {
		return Sample{}, err
	}
	return Sample{Wall: time.Now(), CPU: cpu}, nil
}

// PercentOfOneCore is the CPU time used between two samples as a
// percentage of the wall time between them: 100 means one core fully
// busy. It is 0 if b is not after a.
func PercentOfOneCore(a, b Sample) float64 {
	wall := b.Wall.Sub(a.Wall)
	if wall <= 0 {
		return 0
	}
	return float64(b.CPU-a.CPU) / float64(wall) * 100
}
