//go:build !linux

package access

import "time"

// threadCPU is not available here; the CPU-time metrics read zero.
func threadCPU() time.Duration { return 0 }
