package series

import (
	"strconv"

	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/wire"
)

// Quarantined is a block of one stream's readings from one batch that the
// plausibility checks flagged: stored sealed under its subject's key, apart
// from the stream's chunks, so reads and rollups never see it until an
// operator releases it.
type Quarantined struct {
	ID        int64 // assigned by the store
	Tenant    registry.TenantID
	Subject   registry.SubjectID
	Stream    registry.StreamID
	Connector registry.ConnectorID
	Batch     wire.BatchID
	// Seq numbers the quarantined blocks of one batch, so a batch's rows
	// are unique and a replay cannot add them twice.
	Seq      int
	Received int64 // Unix ms the hub received the batch
	MinTime  int64
	MaxTime  int64
	Count    int
	// Reasons is the JSON of the verdicts (index into the block, rule,
	// detail). It holds no reading values or times and is stored in clear
	// so operators can see why without opening data.
	Reasons []byte
	// Data is the sealed wire block (QuarantineAD).
	Data []byte
}

// QuarantineAD is the associated data of a quarantined block: it binds the
// block to its tenant, stream, connector, batch and place in the batch.
func QuarantineAD(t registry.TenantID, s registry.StreamID, c registry.ConnectorID, b wire.BatchID, seq int) []byte {
	return ad("quarantine", string(t), string(s), string(c), b.String(), strconv.Itoa(seq))
}

// PlausibilityStateAD is the associated data of a stream's persisted
// plausibility state (its learned baseline is personal data too).
func PlausibilityStateAD(t registry.TenantID, s registry.StreamID) []byte {
	return ad("plausibility-state", string(t), string(s))
}

// PlausibilityState is a stream's persisted plausibility state, sealed
// under its subject's key (PlausibilityStateAD).
type PlausibilityState struct {
	Tenant  registry.TenantID
	Subject registry.SubjectID
	Stream  registry.StreamID
	Data    []byte
}
