//go:build !linux

package p1

import "os"

// openSerial opens a serial device read-only. Outside Linux the line
// settings (115200 baud 8N1, raw) must be made by the system.
func openSerial(path string) (*os.File, error) {
	return os.Open(path)
}
