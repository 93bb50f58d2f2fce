// Package consent owns why personal data may be processed: a tenant's
// purposes (each with a lawful basis, data categories, recipients,
// retention, the finest resolution it needs and a versioned notice), the
// data subjects' consent records (the fields of ISO/IEC TS 27560, kept as
// an append-only history of give, withdraw and expire events), signed
// consent receipts a person can keep and verify offline, restriction and
// objection flags, and the Gate that answers "may this subject's data of
// this category be processed for this purpose now?".
//
// The gate fails closed: a question it cannot answer (an unknown purpose,
// a store that does not answer) is a "no". The package does no I/O of its
// own: the store behind Source does. It must never log personal data.
package consent
