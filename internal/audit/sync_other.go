//go:build !linux

package audit

import (
	"errors"
	"os"
)

func fdatasync(f *os.File) error { return f.Sync() }

// openDirect: direct I/O is used on Linux only.
func openDirect(string) (*os.File, error) { return nil, errors.ErrUnsupported }
