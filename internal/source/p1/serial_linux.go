package p1

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// openSerial opens a serial device read-only and, if it is a terminal,
// sets it to raw 115200 baud 8N1, the DSMR 5 line settings. Anything else
// (a FIFO in tests, a pseudo-terminal from a bridge) is read as is.
func openSerial(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var terr error
	err = rc.Control(func(fd uintptr) {
		var t syscall.Termios
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TCGETS, uintptr(unsafe.Pointer(&t))); e != 0 {
			return // not a terminal
		}
		t.Iflag &^= syscall.IGNBRK | syscall.BRKINT | syscall.PARMRK | syscall.ISTRIP | syscall.INLCR | syscall.IGNCR | syscall.ICRNL | syscall.IXON | syscall.IXOFF
		t.Oflag &^= syscall.OPOST
		t.Lflag &^= syscall.ECHO | syscall.ECHONL | syscall.ICANON | syscall.ISIG | syscall.IEXTEN
		t.Cflag &^= syscall.CSIZE | syscall.PARENB | syscall.CSTOPB | cbaud
		t.Cflag |= syscall.CS8 | syscall.CREAD | syscall.CLOCAL | syscall.B115200
		t.Ispeed, t.Ospeed = syscall.B115200, syscall.B115200
		t.Cc[syscall.VMIN], t.Cc[syscall.VTIME] = 1, 0
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TCSETS, uintptr(unsafe.Pointer(&t))); e != 0 {
			terr = fmt.Errorf("set line to 115200 8N1: %w", e)
		}
	})
	if err == nil {
		err = terr
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// cbaud masks the speed bits of c_cflag (CBAUD | CBAUDEX on the common
// Linux architectures; the syscall package does not export it).
const cbaud = 0o10017
