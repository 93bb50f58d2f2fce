//go:build race

package audit

// raceEnabled: the race detector slows hashing ~10x; the mutation test then
// samples byte cuts instead of trying every length.
const raceEnabled = true
