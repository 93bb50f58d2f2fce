// Package source defines how the edge agent reads devices: a Source runs
// until its context ends and emits readings for stream keys. Concrete
// sources live in subpackages (sim; later OPC UA, MQTT, P1).
//
// A source must never block on the network to the hub: it only emits, and
// the agent spools.
package source

import (
	"context"

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
