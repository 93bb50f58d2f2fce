// Package source defines how the edge agent reads devices: a Source runs
// until its context ends and emits readings for stream keys. Concrete
// sources live in subpackages (sim; later OPC UA, MQTT, P1).
//
// A source must never block on the network to the hub: it only emits, and
// the agent spools.
package source

import (
	"context"
	"fmt"
	"maps"

	"github.com/custos-iot/custos/internal/wire"
)

// Reading is one reading of the stream with the given wire key.
type Reading struct {
	Key string
	wire.Reading
}

// Emit hands readings to the agent. It returns an error only when the agent
// is shutting down or its spool fails; the source should then stop.
type Emit func(rs []Reading) error

// Source produces readings.
type Source interface {
	// Keys lists the stream keys the source emits.
	Keys() []string
	// Run emits readings until ctx is done or emit fails. resume maps each
	// key to the time of the last reading of that key the agent has
	// durably accepted (from its spool), so a source that can replay
	// history continues after it without gaps or repeats.
	Run(ctx context.Context, resume map[string]int64, emit Emit) error
}

// Metered is implemented by sources that know the identity of the meters
// behind their devices: the agent reports it with every batch (see
// wire.Meter), and the hub quarantines readings of a device bound to
// another meter.
type Metered interface {
	// Meters maps device names (the first segment of the source's keys)
	// to the identity of the meter behind them, as currently known; a
	// device without one is absent. Safe for concurrent use with Run.
	Meters() map[string]string
}

// Meters is a configured map from device names to the serial of the meter
// behind each, for sources that cannot read the serial from the device.
type Meters map[string]string

// Check reports the first entry a batch could not carry.
func (m Meters) Check() error {
	for d, id := range m {
		if !(wire.Meter{Device: d, ID: id}).Valid() {
			return fmt.Errorf("meters: device %q: the device must be one stream key segment and the serial 1-64 printable characters without spaces", d)
		}
	}
	return nil
}

// Meters implements Metered with the configured serials.
func (m Meters) Meters() map[string]string { return maps.Clone(m) }
