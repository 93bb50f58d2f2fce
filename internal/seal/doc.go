// Package seal owns the hub's per-data-subject envelope encryption and the
// key store, which it keeps apart from the data store.
//
// # Key hierarchy
//
// Every data subject has one Tink keyset (AES256-GCM, output prefix TINK).
// All their readings, aggregates and derived copies are sealed under its
// primary key. The keyset is stored only wrapped: encrypted by a
// key-encryption key (KEK) with associated data that binds it to the
// subject's tenant and ID, so a wrapped keyset copied onto another subject's
// row fails to unwrap. The KEK is either
//
//   - a [FileKEK]: a Tink AES256-GCM keyset in a 0600 file (the default), or
//   - an HSM key via PKCS#11 (package seal/pkcs11), which never leaves the HSM.
//
// Other KEKs fit the three-method [KEK] interface. Vault transit or a cloud
// KMS (AWS KMS, GCP KMS, Azure Key Vault) plug in by wrapping the tink.AEAD
// their Tink integration returns (tink-go-hcvault, tink-go-awskms,
// tink-go-gcpkms) in a type whose ID names the remote key and version, e.g.
// "vault:transit/custos#3"; the KEK then never leaves the KMS and every
// unwrap is a remote call, which the primitive cache (Config.CacheTTL)
// keeps off the hot path. Adding one needs a new module in go.mod.
//
// # Erasure (crypto-shredding)
//
// [Keys.Destroy] deletes the subject's wrapped keyset, so every copy of their
// data — including copies in backups of the data store — becomes unreadable
// at once. On SQLite the key store runs with PRAGMA secure_delete=ON and
// Destroy truncates the write-ahead log after the delete, so the live files
// keep no copy of the destroyed keyset. On PostgreSQL Destroy deletes and
// then VACUUMs the table; PostgreSQL does not promise to overwrite the
// freed bytes, and its WAL, archives and replicas may hold old row versions
// for a while. Those leftovers, and key-store backups, are still wrapped under
// the KEK: rotating the KEK ([Keys.RotateKEK]) and then destroying the old KEK
// shreds them too. Keep key-store backups short-lived for the same reason.
//
// An unwrapped primitive is cached for at most Config.CacheTTL (default 1 s)
// so that an erasure on another hub replica takes effect within that time.
// Destroy on this replica evicts at once.
//
// # Rotation
//
// Two rotations exist and neither makes data unreadable:
//
//   - KEK rotation: open with the new KEK as Config.KEK and the old one in
//     Config.Old, call RotateKEK (online), then drop the old KEK.
//   - Data-key rotation: Roll adds a new primary key (old keys still
//     decrypt), a re-encryption job re-seals data whose [KeyID] is not the
//     primary, and Retire destroys the old keys. Retire refuses to run within
//     CacheTTL of the Roll, so that no replica still seals under an old key.
//
// This package must never log, return or store in clear any key material,
// payload or personal data: errors carry subject IDs and KEK IDs only.
package seal
