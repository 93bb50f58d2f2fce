//go:build !linux || !(amd64 || arm64)

package audit

import "errors"

// kernelAIO is Linux's native asynchronous I/O; elsewhere appends are
// synchronous.
type kernelAIO struct{}

func newKernelAIO() (*kernelAIO, error) { return nil, errors.ErrUnsupported }

func (*kernelAIO) start(int, []byte, int64) error { return errors.ErrUnsupported }
func (*kernelAIO) wait() (int, error)             { return 0, errors.ErrUnsupported }
func (*kernelAIO) close()                         {}
