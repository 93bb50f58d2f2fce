// Package audit owns Custos's tamper-evident audit log: the record of every
// access to personal data and every change made by an operator, admin or
// app, kept so that nobody — including the hub's own operators — can change,
// remove or reorder an entry unnoticed.
//
// The log is an append-only RFC 6962 Merkle tree (github.com/transparency-dev/merkle)
// whose state is published as C2SP checkpoints (github.com/transparency-dev/formats/log)
// in signed notes (golang.org/x/mod/sumdb/note). Independent witnesses check
// that each checkpoint is consistent with the last one they saw and cosign it;
// a verifier can demand a quorum of cosignatures. An export bundle of the
// leaves is verified offline, with no network and no hub, by [Verify], which
// says exactly what is wrong if anything is.
//
// What the package provides:
//   - [Entry], the leaf: when, who, what, outcome, request, subject — with a
//     canonical, versioned binary encoding ([Entry.MarshalBinary], [ParseEntry]);
//   - [Log], the sequencer: group-committed appends over a small [Storage]
//     interface ([NewMemoryStorage], [OpenFileStorage]), signed checkpoints,
//     inclusion and consistency proofs;
//   - [Witness], the cosigner, and [VerifyCheckpoint] for a quorum of them;
//   - [Export] and [Verify], the offline audit.
//
// What it must never do:
//   - An entry MUST NOT hold data values (readings, payloads, personal data
//     beyond pseudonymous IDs) or key material: only IDs and short labels.
//     Errors and log lines of this package carry sizes and indexes only.
//   - [Log.Append] MUST NOT return success before the entry is durable in its
//     Storage: "no action without its entry". If the storage fails, Append
//     fails and the caller MUST refuse the action (fail closed).
//   - It MUST NOT invent a tree hash or a signature format: hashing, proofs,
//     checkpoints and signatures all come from the libraries above.
//
// It imports no adapter (store, api, hub): storage is the [Storage]
// interface declared here.
package audit
