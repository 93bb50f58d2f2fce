//go:build unix

package footprint

import (
	"syscall"
	"testing"
	"time"
)

func TestRusageCPU(t *testing.T) {
	var ru syscall.Rusage
	ru.Utime.Sec, ru.Utime.Usec = 2, 250000
	ru.Stime.Sec, ru.Stime.Usec = 0, 500000
	if got, want := rusageCPU(&ru), 2750*time.Millisecond; got != want {
		t.Fatalf("got %v, want %v (user + system)", got, want)
	}
}
