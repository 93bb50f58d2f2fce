//go:build !unix

package footprint

import (
	"errors"
	"fmt"
	"runtime"
	"time"
)

func cpuTime() (time.Duration, error) {
	return 0, fmt.Errorf("footprint: CPU time on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
