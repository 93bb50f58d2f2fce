// Package opcua reads OPC UA servers (PLCs, SCADA gateways, heat-pump and
// inverter controllers): it subscribes to configured variable nodes
// (monitored items in one subscription) and emits every data change the
// server publishes as a reading of the node's "<device>/<metric>" stream.
//
// # Security
//
// By default the secure channel uses security policy Basic256Sha256 with
// message security mode SignAndEncrypt, and the session authenticates with
// an X.509 user identity token signed with the agent's application
// certificate. The application certificate (RSA 2048, self-signed, with the
// application URI as a URI SAN) and its key are read from cert_file and
// key_file, or generated on first use into "<state_dir>/opcua/" with the
// key written mode 0600; a key file readable by group or others is refused.
// The operator adds that certificate to the server's trust list.
//
// The server certificate is pinned. With server_cert_file set, the server
// must present exactly that certificate. Without it, the first certificate
// the server presents is trusted on first use and stored in
// "<state_dir>/opcua/server-<hash of the endpoint URL>.der"; a later,
// different certificate is refused (every connection attempt fails and is
// counted) until the operator deletes that file or pins the new one. The
// pinned certificate, never the one in the unauthenticated endpoint list,
// is what the secure channel encrypts to and verifies signatures with.
//
// Security None (no signing, no encryption, anonymous session) is used only
// when the configuration says "security": "none".
//
// # Readings
//
// A reading carries the value's source timestamp, or the server timestamp
// when the server sends none, or the agent's clock when there is neither,
// in Unix milliseconds UTC. Integers, floating-point numbers and booleans
// (1 or 0) become float64; other types (strings, arrays, structures) are
// counted as dropped. The status code maps to the wire quality flags:
// Uncertain to QualityUncertain, Bad to QualityBad; a Bad status without a
// numeric value is counted and dropped rather than sent as a made-up
// number. A reading is emitted only if its time is after the last reading
// of its stream (the agent's spool included), so the current value that a
// server reports again on every (re)subscription is sent once.
//
// # Reconnection and what can be lost
//
// When the connection, the session or the subscription is lost (a server
// restart loses all three), the source reconnects with exponential backoff,
// creates a new session and subscription and monitors the nodes again. The
// server then reports each node's current value, followed by every change
// it publishes. OPC UA servers do not keep data for a client that has no
// subscription: a value that was overwritten while the source was
// disconnected is lost, as is a change the server itself coalesced in its
// monitored-item queue (queue_size per publishing interval). Nothing the
// server publishes to the subscription is lost or repeated by this source.
//
// # What this package must never do
//
// It never writes to the server (no Write, no Call), never logs values or
// certificate contents (node IDs and endpoint URLs are configuration and
// may be logged), and never connects with security None unless the
// configuration asks for it.
package opcua
