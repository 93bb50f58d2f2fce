// Package plausibility decides whether incoming readings are believable: it
// owns the validation rules per stream kind, the per-stream statistical
// baselines, the cross-stream consistency checks of a site, and the state
// those need, serialised so that the hub can persist it.
//
// It catches injected fake data at ingest: physical limits, counters that
// run backwards (rollover and recorded meter replacements excepted), rates of
// change, frozen values, gaps, timestamps in the future or too far in the
// past, duplicates, replays of recent windows, clock jumps, meter identities
// that do not match their binding, values far from a seasonal median/MAD
// baseline or drifting away from it, production at night and sites whose
// import, export and production do not balance.
//
// Contract:
//   - It only flags. It MUST NOT drop, alter or reorder readings: deciding
//     what happens to a flagged reading (quarantine, release, rejection) is
//     the caller's job, and a flagged reading must never be lost silently.
//   - It MUST NOT log, and the Detail of a Reason MUST NOT contain a
//     reading's value or time: details name thresholds and rules only, so
//     that they can be shown to operators and kept next to sealed data.
//   - It does no I/O and imports no adapter (store, api, hub); time comes in
//     with the call or from Config.Now.
//   - Memory per stream is bounded by its Rules (see KindRules.ReplaySlots);
//     state that is not learned from flagged readings cannot be poisoned by
//     them.
//
// The eval subpackage measures precision and recall on a synthetic fleet.
package plausibility
