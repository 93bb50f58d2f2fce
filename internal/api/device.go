package api

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/enrol"
	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/ingest"
	"github.com/custos-iot/custos/internal/pki"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/wire"
)

// EnrolRequest is what an agent sends to enrol: its token and a CSR for
// the key it generated (and keeps).
type EnrolRequest struct {
	Token string `json:"token"`
	CSR   []byte `json:"csr"` // DER, base64 in JSON
}

// EnrolResponse carries the agent's first certificate and the hub CA.
type EnrolResponse struct {
	Tenant      registry.TenantID    `json:"tenant"`
	Connector   registry.ConnectorID `json:"connector"`
	Certificate string               `json:"certificate"` // PEM
	CA          string               `json:"ca"`          // PEM
	DeviceURL   string               `json:"device_url,omitempty"`
	Expires     time.Time            `json:"expires"`
}

// enrolConnector exchanges a single-use token and a CSR for a certificate.
// The CSR is checked before the token is consumed, so a malformed CSR does
// not burn the token.
func (a *API) enrolConnector(w http.ResponseWriter, r *http.Request) error {
	const op errs.Op = "api.enrol"
	var in EnrolRequest
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	tok, err := enrol.ParseToken(in.Token)
	if err != nil {
		return a.deny(r, errs.E(op, errs.Invalid, err))
	}
	if tok.CA != a.cfg.Authority.Fingerprint() {
		return a.deny(r, errs.E(op, errs.Unauthenticated, "enrolment token was issued by another hub CA"))
	}
	if err := checkCSR(in.CSR); err != nil {
		return errs.E(op, err)
	}
	c, err := a.cfg.Store.ConsumeEnrolToken(r.Context(), tok.Hash())
	if err != nil {
		return a.deny(r, errs.E(op, err))
	}
	if err := a.record(r, audit.PrincipalID(c.ID), audit.Allowed); err != nil {
		return err
	}
	return a.issue(w, r, c.Tenant, c.ID, in.CSR, "enrol")
}

// checkCSR refuses every CSR that pki.Authority.Sign would refuse (also an
// unaccepted key type), so that such a CSR never consumes a token.
func checkCSR(der []byte) error {
	if len(der) == 0 {
		return errs.E(errs.Invalid, "missing CSR")
	}
	_, err := pki.CheckCSR(der)
	return err
}

func (a *API) issue(w http.ResponseWriter, r *http.Request, t registry.TenantID, c registry.ConnectorID, csr []byte, how string) error {
	id := enrol.Identity{Tenant: string(t), Connector: string(c)}
	cert, err := a.cfg.Authority.Sign(csr, id, a.cfg.CertLifetime)
	if err != nil {
		return err
	}
	if err := a.cfg.Store.RecordCertificate(r.Context(), c, cert.SerialNumber.Text(16), cert.NotAfter, how); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, EnrolResponse{
		Tenant:      t,
		Connector:   c,
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		CA:          string(a.cfg.Authority.CAPEM()),
		DeviceURL:   a.cfg.DeviceURL,
		Expires:     cert.NotAfter.UTC(),
	})
	return nil
}

type deviceHandler func(w http.ResponseWriter, r *http.Request, id ingest.Identity) error

// device authenticates a connector by its client certificate (verified by
// TLS against the hub CA) and refuses revoked connectors on every request,
// so a revocation also reaches already open keep-alive connections.
func (a *API) device(h deviceHandler) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		const op errs.Op = "api.device"
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			return errs.E(op, errs.Unauthenticated, "a client certificate from the hub CA is required")
		}
		eid, err := enrol.IdentityOf(r.TLS.VerifiedChains[0][0])
		if err != nil {
			return errs.E(op, errs.Unauthenticated, err)
		}
		id := ingest.Identity{Tenant: registry.TenantID(eid.Tenant), Connector: registry.ConnectorID(eid.Connector)}
		if err := a.cfg.Ingest.Check(r.Context(), id); err != nil {
			if rerr := a.record(r, audit.PrincipalID(id.Connector), audit.Denied); rerr != nil {
				a.log.Error("audit log: recording a denial failed", "request_id", requestID(r), "err", rerr)
			}
			return errs.E(op, err)
		}
		// Batches are recorded one entry per batch once stored; every
		// other device request gets its entry before it runs.
		if r.Pattern != "POST /v1/batches" {
			if err := a.record(r, audit.PrincipalID(id.Connector), audit.Allowed); err != nil {
				return err
			}
		}
		return h(w, r, id)
	}
}

// CheckConnector is the device endpoint's handshake hook: it refuses a
// revoked or unknown connector before any request is read.
func (a *API) CheckConnector(id enrol.Identity, _ *x509.Certificate) error {
	return a.cfg.Ingest.Check(context.Background(), ingest.Identity{Tenant: registry.TenantID(id.Tenant), Connector: registry.ConnectorID(id.Connector)})
}

// BatchContentType is the media type of a body of wire batches.
const BatchContentType = "application/vnd.custos.batch"

func (a *API) postBatches(w http.ResponseWriter, r *http.Request, id ingest.Identity) error {
	if ct := r.Header.Get("Content-Type"); ct != BatchContentType {
		return errs.E(errs.Invalid, fmt.Sprintf("content type must be %s", BatchContentType))
	}
	if r.ContentLength > wire.MaxBodyBytes {
		return errs.E(errs.TooLarge, fmt.Sprintf("body exceeds %d bytes; send smaller batches", wire.MaxBodyBytes))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, wire.MaxBodyBytes))
	if err != nil {
		return errs.E(errs.TooLarge, fmt.Sprintf("body exceeds %d bytes; send smaller batches", wire.MaxBodyBytes))
	}
	p, err := a.cfg.Ingest.Prepare(r.Context(), id, body)
	if err != nil {
		if rerr := a.record(r, audit.PrincipalID(id.Connector), audit.Denied); rerr != nil {
			a.log.Error("audit log: recording a refused batch failed", "request_id", requestID(r), "err", rerr)
		}
		return err
	}
	// One entry per batch, written in the batch's own transaction to the
	// audit queue (queue-then-integrate): the batch and its entry are
	// durable together, with one fsync, before the acknowledgement; the
	// integrator moves the entry into the log moments later.
	if a.cfg.Integrator != nil {
		leaves := make([][]byte, len(p.IDs))
		for i, b := range p.IDs {
			e := audit.Entry{Principal: audit.PrincipalID(id.Connector), Action: "ingest.batch",
				Resource: audit.Resource("batch/" + b.String()), Outcome: audit.Allowed, Request: audit.RequestID(requestID(r))}
			leaf, err := e.MarshalBinary()
			if err != nil {
				return errs.E(errs.Invalid, err)
			}
			leaves[i] = leaf
		}
		p.Record(leaves)
	}
	res, err := p.Commit(r.Context())
	if err != nil {
		return err
	}
	if a.cfg.Integrator != nil {
		a.cfg.Integrator.Wake()
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// renew issues a fresh certificate to a connector that still holds a valid
// one. A revoked connector is refused before this runs.
func (a *API) renew(w http.ResponseWriter, r *http.Request, id ingest.Identity) error {
	csr, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		return errs.E(errs.TooLarge, "CSR exceeds 64 KiB")
	}
	if err := checkCSR(csr); err != nil {
		return err
	}
	return a.issue(w, r, id.Tenant, id.Connector, csr, "renew")
}

// DeviceStream is a stream as a connector sees it.
type DeviceStream struct {
	Key      string            `json:"key"`
	Category registry.Category `json:"category"`
	Unit     string            `json:"unit"`
}

// connectorStreams lists the streams a connector may write.
func (a *API) connectorStreams(w http.ResponseWriter, r *http.Request, id ingest.Identity) error {
	list, err := a.cfg.Store.ConnectorStreams(r.Context(), id.Connector)
	if err != nil {
		return err
	}
	out := []DeviceStream{}
	for _, s := range list {
		if s.Tenant == id.Tenant {
			out = append(out, DeviceStream{s.Key, s.Category, s.Unit})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// postHealth stores a connector's report on itself (version, certificate
// expiry, spool depth, drops, sources) for operators to see.
func (a *API) postHealth(w http.ResponseWriter, r *http.Request, id ingest.Identity) error {
	var h registry.Health
	if err := decodeJSON(w, r, &h); err != nil {
		return err
	}
	if len(h.Version) > 100 || len(h.Sources) > 100 {
		return errs.E(errs.Invalid, "health report too large")
	}
	// The hub's clock decides when it was reported.
	h.Reported = a.cfg.Now().UTC()
	if err := a.cfg.Store.SetConnectorHealth(r.Context(), id.Tenant, id.Connector, h); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}
