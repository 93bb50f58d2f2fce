//go:build linux && (amd64 || arm64)

package audit

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelAIO starts one durable write at a time through Linux's native
// asynchronous I/O, so that the goroutine that starts it can go on working
// while the device writes and flushes: no other thread has to wake up
// first. The write is direct (the file is opened O_DIRECT) and carries
// RWF_DSYNC, so its completion means the data is durable.
type kernelAIO struct {
	ctx uintptr
	cb  iocb
	cbs [1]*iocb
	ev  [1]ioEvent
}

// iocb is struct iocb of <linux/aio_abi.h> on a little-endian machine.
type iocb struct {
	_       uint64 // aio_data
	_       uint32 // aio_key
	rwFlags uint32
	opcode  uint16
	_       int16 // aio_reqprio
	fd      uint32
	buf     uint64
	nbytes  uint64
	offset  int64
	_       uint64 // aio_reserved2
	_       uint32 // aio_flags
	_       uint32 // aio_resfd
}

var _ [64]byte = [unsafe.Sizeof(iocb{})]byte{} // the kernel's layout

// ioEvent is struct io_event.
type ioEvent struct {
	_, _ uint64 // data, obj
	res  int64
	_    int64 // res2
}

const iocbCmdPwrite = 1

func newKernelAIO() (*kernelAIO, error) {
	a := &kernelAIO{}
	if _, _, e := unix.Syscall(unix.SYS_IO_SETUP, 1, uintptr(unsafe.Pointer(&a.ctx)), 0); e != 0 {
		return nil, e
	}
	a.cbs[0] = &a.cb
	return a, nil
}

// start submits a write of buf (block-aligned, kept alive and unchanged by
// the caller until wait returns) at off. An error means nothing was
// submitted.
func (a *kernelAIO) start(fd int, buf []byte, off int64) error {
	a.cb = iocb{
		opcode: iocbCmdPwrite, fd: uint32(fd), rwFlags: unix.RWF_DSYNC,
		buf: uint64(uintptr(unsafe.Pointer(&buf[0]))), nbytes: uint64(len(buf)), offset: off,
	}
	for {
		n, _, e := unix.Syscall(unix.SYS_IO_SUBMIT, a.ctx, 1, uintptr(unsafe.Pointer(&a.cbs[0])))
		switch {
		case e == syscall.EINTR:
			continue
		case e != 0:
			return e
		case n != 1:
			return fmt.Errorf("io_submit accepted %d of 1 writes", n)
		}
		return nil
	}
}

// wait blocks until the submitted write completes and returns how many
// bytes it wrote.
func (a *kernelAIO) wait() (int, error) {
	for {
		n, _, e := unix.Syscall6(unix.SYS_IO_GETEVENTS, a.ctx, 1, 1, uintptr(unsafe.Pointer(&a.ev[0])), 0, 0)
		switch {
		case e == syscall.EINTR:
			continue
		case e != 0:
			return 0, e
		case n != 1:
			return 0, errors.New("io_getevents returned no event")
		}
		if res := a.ev[0].res; res < 0 {
			return 0, syscall.Errno(-res)
		}
		return int(a.ev[0].res), nil
	}
}

func (a *kernelAIO) close() {
	unix.Syscall(unix.SYS_IO_DESTROY, a.ctx, 0, 0)
}
