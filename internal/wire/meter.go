package wire

import (
	"strings"
)

// Meter reports the identity of the meter behind a device of a batch: the
// serial the meter itself states (a P1 telegram's equipment identifier, an
// OPC UA server's serial number node) or, failing that, the one the
// agent's configuration names. The hub compares it with the serial the
// device is registered with.
//
// Meters travel in version 2 of the batch format: version 1 followed, after
// the series, by
//
//	count    uvarint, number of meters (1..MaxSeriesPerBatch)
//	count × meter:
//	  device uvarint length, then the device name (1..64 bytes of
//	         [A-Za-z0-9._-], the first segment of one of the batch's keys)
//	  id     uvarint length, then the identity (1..64 bytes of printable
//	         ASCII, no space)
//
// with devices in strictly increasing byte order. AppendBatch writes
// version 1 when a batch has no meters, so agents that report none stay
// readable by hubs that predate meters.
type Meter struct {
	Device string
	ID     string
}

// Valid reports whether a batch may carry m: a device name and an identity
// of the allowed bytes and lengths.
func (m Meter) Valid() bool { return validDevice(m.Device) && validMeterID(m.ID) }

// Meter field bounds, in bytes.
const maxMeterField = 64

// checkMeters returns the index of the first meter a batch may not carry
// and why, or -1, "".
func checkMeters(ms []Meter, ss []Series) (int, string) {
	if len(ms) > MaxSeriesPerBatch {
		return len(ms) - 1, "too many meters"
	}
	for i, m := range ms {
		switch {
		case !validDevice(m.Device):
			return i, "invalid device name"
		case !validMeterID(m.ID):
			return i, "invalid meter identity"
		case i > 0 && ms[i-1].Device >= m.Device:
			return i, "meters not in strictly increasing device order"
		case !hasDevice(ss, m.Device):
			return i, "meter of a device without a series in the batch"
		}
	}
	return -1, ""
}

func validDevice(d string) bool {
	if len(d) == 0 || len(d) > maxMeterField || !validSegment(d) {
		return false
	}
	for i := 0; i < len(d); i++ {
		if !keyByte(d[i]) {
			return false
		}
	}
	return true
}

func validMeterID(id string) bool {
	if len(id) == 0 || len(id) > maxMeterField {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= 0x20 || id[i] >= 0x7f {
			return false
		}
	}
	return true
}

func hasDevice(ss []Series, d string) bool {
	for i := range ss {
		if KeyDevice(ss[i].Key) == d {
			return true
		}
	}
	return false
}

// KeyDevice returns the device part of a stream key: its first segment.
func KeyDevice(key string) string {
	d, _, _ := strings.Cut(key, "/")
	return d
}

// MeterOf returns the identity the batch reports for a device, "" if none.
func (b *Batch) MeterOf(device string) string {
	for _, m := range b.Meters {
		if m.Device == device {
			return m.ID
		}
	}
	return ""
}

// parseMeters parses the meters section at data[pos:] into b.Meters and
// returns the offset past it. The meters are checked against the series
// by the caller (checkMeters).
func parseMeters(data []byte, pos, base int, b *Batch) (int, error) {
	count, k := uvarint(data, pos)
	switch {
	case k <= 0:
		return 0, errAt(ErrMalformed, base+pos, "bad meter count")
	case count == 0:
		return 0, errAt(ErrMalformed, base+pos, "version 2 batch without meters")
	case count > MaxSeriesPerBatch:
		return 0, errAt(ErrTooLarge, base+pos, "too many meters")
	case count > uint64((len(data)-pos-k)/4): // each meter takes at least 4 bytes
		return 0, errAt(ErrMalformed, base+pos, "meter count exceeds remaining bytes")
	}
	pos += k
	b.Meters = make([]Meter, count)
	for i := range b.Meters {
		var f [2]string
		for j := range f {
			n, k := uvarint(data, pos)
			switch {
			case k <= 0:
				return 0, errAt(ErrMalformed, base+pos, "bad meter field length")
			case n == 0 || n > maxMeterField:
				return 0, errAt(ErrMalformed, base+pos, "meter field length out of range")
			case n > uint64(len(data)-pos-k):
				return 0, errAt(ErrMalformed, base+pos, "meter field exceeds remaining bytes")
			}
			pos += k
			f[j] = string(data[pos : pos+int(n)])
			pos += int(n)
		}
		b.Meters[i] = Meter{Device: f[0], ID: f[1]}
	}
	return pos, nil
}
