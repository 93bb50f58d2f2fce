package hub_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
)

// TestEveryRouteIsAudited walks the API's route table: every route that is
// not public appends exactly one audit entry per request (allowed, or
// denied when the request is refused), so a new route without logging
// fails this test. Device requests are covered too: one entry per stored
// batch, and one per renewal.
func TestEveryRouteIsAudited(t *testing.T) {
	f := newFixture(t)
	h, c := f.h, f.c
	ctx := context.Background()
	paths := map[string]string{
		"{tenant}": string(f.ten), "{subject}": string(f.a.Subject.ID),
		"{connector}": string(f.a.Connector.ID), "{stream}": string(f.a.Streams[0].ID),
		"{device}": string(f.a.Streams[0].Device),
	}
	// The fixture's batches' entries are integrated now, not while the
	// routes are counted.
	if err := h.FlushAudit(ctx); err != nil {
		t.Fatal(err)
	}
	routes := h.API().Routes()
	// The erasure goes last: it removes what other routes name.
	for i, p := range routes {
		if strings.Contains(p, "/erase") {
			routes = append(append(routes[:i:i], routes[i+1:]...), p)
			break
		}
	}
	for _, pattern := range routes {
		method, path, _ := strings.Cut(pattern, " ")
		for k, v := range paths {
			path = strings.ReplaceAll(path, k, v)
		}
		before := h.Audit.Size()
		var body any
		if method == "POST" {
			body = map[string]string{}
		}
		c.Do(ctx, method, path, body, nil) // success or a refusal: both are recorded
		got := h.Audit.Size() - before
		want := uint64(1)
		if api.Public[pattern] {
			want = 0
		}
		if got != want {
			t.Errorf("%s appended %d audit entries, want %d", pattern, got, want)
		}
	}
	// A request without a valid token is recorded as denied.
	anon, err := client.NewFromFile(h.APIURL(), "cop_forged", h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	before := h.Audit.Size()
	anon.Do(ctx, "GET", "/v1/tenants", nil, nil)
	es, err := h.Audit.Entries(ctx, before, h.Audit.Size())
	if err != nil || len(es) != 1 || es[0].Outcome != audit.Denied {
		t.Fatalf("denied request: entries %+v, %v", es, err)
	}

	// Device side: one entry per batch (a request with two batches makes
	// two), one for a renewal.
	dc := deviceClient(t, f.credsB.TLSConfig(""))
	before = h.Audit.Size()
	b1, b2 := newBatch(t, 100, 2, f.b.Streams[0].Key), newBatch(t, 200, 2, f.b.Streams[1].Key)
	r := send(t, dc, h.DeviceURL()+"/v1/batches", api.BatchContentType, bytes.NewReader(encode(t, b1, b2)))
	if r.status != http.StatusOK {
		t.Fatalf("batches: %d %s", r.status, r.body)
	}
	// The entries were written with the batches (queue-then-integrate);
	// the integrator moves them into the log.
	if err := h.FlushAudit(ctx); err != nil {
		t.Fatal(err)
	}
	es, err = h.Audit.Entries(ctx, before, h.Audit.Size())
	if err != nil || len(es) != 2 || es[0].Action != "ingest.batch" || es[0].Resource != audit.Resource("batch/"+b1.ID.String()) || es[0].Principal != audit.PrincipalID(f.b.Connector.ID) {
		t.Fatalf("batch entries: %+v, %v", es, err)
	}
	before = h.Audit.Size()
	if err := f.credsB.Renew(ctx, dc, h.DeviceURL(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if n := h.Audit.Size() - before; n != 1 {
		t.Errorf("renewal appended %d entries, want 1", n)
	}
}

// TestAuditReadsNameTheSubject: a read of a stream's data is recorded with
// the data subject it belongs to, with its resolution, and the log verifies
// offline from an export.
func TestAuditReadsNameTheSubject(t *testing.T) {
	h, c := startHub(t, hub.Config{})
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Audit Coop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GrantSelf(ctx, ten.ID); err != nil {
		t.Fatal(err)
	}
	hh, err := c.AddHousehold(ctx, ten.ID, "house-1", "Member")
	if err != nil {
		t.Fatal(err)
	}
	before := h.Audit.Size()
	if _, err := c.Aggregates(ctx, ten.ID, hh.Streams[0].ID, "1d", 0, 1<<50); err != nil {
		t.Fatal(err)
	}
	es, err := h.Audit.Entries(ctx, before, h.Audit.Size())
	if err != nil || len(es) != 1 {
		t.Fatalf("entries: %+v %v", es, err)
	}
	if e := es[0]; e.Subject != audit.SubjectID(hh.Subject.ID) || e.Resolution != "1d" || e.Outcome != audit.Allowed || !strings.Contains(string(e.Resource), string(hh.Streams[0].ID)) {
		t.Errorf("read entry: %+v", e)
	}
	// "Who accessed my data": the read is listed for the subject, with a
	// proof of inclusion in the signed checkpoint that goes with it.
	var acc api.Accesses
	if err := c.Do(ctx, "GET", "/v1/tenants/"+string(ten.ID)+"/subjects/"+string(hh.Subject.ID)+"/accesses", nil, &acc); err != nil {
		t.Fatal(err)
	}
	v, err := audit.NewVerifier(h.AuditKey)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := audit.VerifyCheckpoint([]byte(acc.Checkpoint), v, nil, 0)
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	found := false
	for _, a := range acc.Entries {
		if a.Entry.Subject != audit.SubjectID(hh.Subject.ID) {
			t.Errorf("an entry about another subject: %+v", a.Entry)
		}
		leaf, err := a.Entry.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if err := audit.VerifyInclusion(leaf, a.Index, cp.Size, a.Proof, cp.Hash); err != nil {
			t.Errorf("entry %d: inclusion proof: %v", a.Index, err)
		}
		found = found || (a.Entry.Resolution == "1d" && a.Entry.Request == es[0].Request)
	}
	if !found {
		t.Errorf("the 1d read is not among the subject's accesses: %+v", acc.Entries)
	}

	// Export through the API and verify with nothing but the public key.
	var bundle bytes.Buffer
	resp, err := exportBundle(h, &bundle)
	if err != nil || resp != http.StatusOK {
		t.Fatalf("export: %d %v", resp, err)
	}
	rep, err := audit.Verify(bytes.NewReader(bundle.Bytes()), nil, h.AuditKey, nil, 0)
	if err != nil {
		t.Fatalf("offline verification of the export: %v (%+v)", err, rep)
	}
	// A flipped byte in the export is found.
	bad := bytes.Clone(bundle.Bytes())
	bad[len(bad)/2] ^= 1
	if _, err := audit.Verify(bytes.NewReader(bad), nil, h.AuditKey, nil, 0); err == nil {
		t.Error("a tampered export verified")
	}
}

func exportBundle(h *hub.Hub, w io.Writer) (int, error) {
	c, err := client.NewFromFile(h.APIURL(), h.InitialToken, h.CAFile())
	if err != nil {
		return 0, err
	}
	return c.Raw(context.Background(), "GET", "/v1/audit/export", w)
}
