//go:build unix

package footprint

import (
	"fmt"
	"syscall"
	"time"
)

func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("footprint: getrusage: %w", err)
	}
	return rusageCPU(&ru), nil
}

// rusageCPU is user plus system time.
func rusageCPU(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
