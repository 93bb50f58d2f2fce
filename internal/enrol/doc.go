// Package enrol owns what the edge agent and the hub share about device
// identity: single-use enrolment tokens that pin the hub's CA, certificate
// fingerprints, the connector Identity carried in a certificate's URI SAN,
// the device key file and its CSR, and the TLS client configurations the
// agent uses before and after enrolment.
//
// Everything here is safe to link into custos-agent. The package MUST NOT
// sign certificates and MUST NOT import internal/pki (the hub's CA): the
// agent binary never links the signing side. Errors built here never carry
// token strings, secrets or key material.
package enrol
