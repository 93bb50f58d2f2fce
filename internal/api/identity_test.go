package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/audit"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/identity"
	"github.com/custos-iot/custos/internal/registry"
)

const alicePW = "violet tractor moss lantern"

// browser sends requests like a browser would: cookies are set by the
// test explicitly, headers as given.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, h *hub.Hub) *browser {
	pem, err := os.ReadFile(h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &browser{t: t, base: h.APIURL(), c: &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type answer struct {
	status int
	header http.Header
	body   []byte
	cookie *http.Cookie
}

func (b *browser) do(method, path, body, session string, hdr map[string]string) answer {
	b.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r, _ := http.NewRequest(method, b.base+path, rd)
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	if session != "" {
		r.AddCookie(&http.Cookie{Name: identity.CookieName, Value: session})
	}
	resp, err := b.c.Do(r)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, body: out}
	for _, c := range resp.Cookies() {
		if c.Name == identity.CookieName {
			a.cookie = c
		}
	}
	return a
}

func loginBody(t registry.TenantID, name, pw string) string {
	b, _ := json.Marshal(map[string]string{"tenant": string(t), "name": name, "password": pw})
	return string(b)
}

type idFixture struct {
	h       *hub.Hub
	b       *browser
	ten     registry.TenantID
	other   registry.TenantID
	aliceID access.PrincipalID
}

func newIDFixture(t *testing.T) idFixture {
	h, c := start(t)
	ctx := context.Background()
	ten, err := c.CreateTenant(ctx, "Sunny Coop")
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.CreateTenant(ctx, "Rainy Coop")
	if err != nil {
		t.Fatal(err)
	}
	var u identity.User
	if err := c.Do(ctx, "POST", "/v1/tenants/"+string(ten.ID)+"/users", identity.NewUser{Name: "alice", Password: alicePW, Roles: []access.Role{access.RoleTenantAdmin}}, &u); err != nil {
		t.Fatal(err)
	}
	return idFixture{h: h, b: newBrowser(t, h), ten: ten.ID, other: other.ID, aliceID: u.ID}
}

func TestLoginCookieAndSession(t *testing.T) {
	f := newIDFixture(t)
	before := f.h.Audit.Size()
	a := f.b.do("POST", "/v1/login", loginBody(f.ten, "alice", alicePW), "", nil)
	if a.status != 200 || a.cookie == nil {
		t.Fatalf("login: %d %s", a.status, a.body)
	}
	c := a.cookie
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" || len(c.Value) != 43 || c.MaxAge <= 0 {
		t.Errorf("session cookie attributes: %+v", c)
	}
	if raw := a.header.Get("Set-Cookie"); !strings.Contains(raw, "Secure") || !strings.Contains(raw, "HttpOnly") || !strings.Contains(raw, "SameSite=Lax") {
		t.Errorf("Set-Cookie: %s", raw)
	}
	es, _ := f.h.Audit.Entries(context.Background(), before, f.h.Audit.Size())
	if len(es) != 1 || es[0].Outcome != audit.Allowed || es[0].Principal != audit.PrincipalID(f.aliceID) {
		t.Errorf("login audit entries: %+v", es)
	}
	w := f.b.do("GET", "/v1/session", "", c.Value, nil)
	var p access.Principal
	json.Unmarshal(w.body, &p)
	if w.status != 200 || p.ID != f.aliceID || p.Tenant != f.ten || !p.Has(access.RoleTenantAdmin) {
		t.Fatalf("whoami: %d %s", w.status, w.body)
	}
	// Logout destroys the session on the server, not just the cookie.
	if l := f.b.do("POST", "/v1/logout", "", c.Value, nil); l.status != 200 || l.cookie == nil || l.cookie.MaxAge >= 0 {
		t.Fatalf("logout: %d %+v", l.status, l.cookie)
	}
	if w := f.b.do("GET", "/v1/session", "", c.Value, nil); w.status != 401 {
		t.Errorf("session after logout: %d", w.status)
	}
}

// TestLoginNoEnumeration: an unknown user and a wrong password get the
// same status and message, and both are recorded as denied.
func TestLoginNoEnumeration(t *testing.T) {
	f := newIDFixture(t)
	var errsSeen []api.ErrorBody
	for _, body := range []string{loginBody(f.ten, "mallory", alicePW), loginBody(f.ten, "alice", "wrong but long passphrase"), loginBody(f.other, "alice", alicePW)} {
		before := f.h.Audit.Size()
		a := f.b.do("POST", "/v1/login", body, "", nil)
		var eb api.ErrorBody
		json.Unmarshal(a.body, &eb)
		if a.status != 401 || a.cookie != nil && a.cookie.MaxAge >= 0 {
			t.Errorf("failed login: %d %s", a.status, a.body)
		}
		errsSeen = append(errsSeen, eb)
		es, _ := f.h.Audit.Entries(context.Background(), before, f.h.Audit.Size())
		if len(es) != 1 || es[0].Outcome != audit.Denied || es[0].Principal != "anonymous" {
			t.Errorf("failed login's audit entries: %+v", es)
		}
	}
	for _, e := range errsSeen[1:] {
		if e.Error != errsSeen[0].Error {
			t.Errorf("messages differ: %q vs %q", e.Error, errsSeen[0].Error)
		}
	}
}

func TestLoginThrottledOverHTTP(t *testing.T) {
	f := newIDFixture(t)
	var a answer
	for range 6 {
		a = f.b.do("POST", "/v1/login", loginBody(f.ten, "alice", "wrong but long passphrase"), "", nil)
	}
	if a.status != 401 || a.header.Get("Retry-After") == "" || !bytes.Contains(a.body, []byte("too many failed logins")) {
		t.Errorf("6th failure: %d %s Retry-After=%q", a.status, a.body, a.header.Get("Retry-After"))
	}
}

// TestSessionFixation: a session ID the browser had before login (planted
// by an attacker, or the user's own) is not the one after login, and it is
// dead afterwards.
func TestSessionFixation(t *testing.T) {
	f := newIDFixture(t)
	first := f.b.do("POST", "/v1/login", loginBody(f.ten, "alice", alicePW), "", nil).cookie
	second := f.b.do("POST", "/v1/login", loginBody(f.ten, "alice", alicePW), first.Value, nil).cookie
	if second == nil || second.Value == first.Value {
		t.Fatalf("session ID not rotated at login: %+v", second)
	}
	if w := f.b.do("GET", "/v1/session", "", first.Value, nil); w.status != 401 {
		t.Errorf("pre-login session still valid: %d", w.status)
	}
	if w := f.b.do("GET", "/v1/session", "", second.Value, nil); w.status != 200 {
		t.Errorf("new session: %d", w.status)
	}
	// An attacker-chosen ID is never adopted.
	planted := f.b.do("POST", "/v1/login", loginBody(f.ten, "alice", alicePW), "attacker-chosen-id", nil).cookie
	if planted == nil || planted.Value == "attacker-chosen-id" {
		t.Fatalf("planted ID adopted: %+v", planted)
	}
}

// TestCrossOriginRefused: a cookie-carrying unsafe request from another
// site is refused and recorded; the same request from the hub's own origin
// passes.
func TestCrossOriginRefused(t *testing.T) {
	f := newIDFixture(t)
	sess := f.b.do("POST", "/v1/login", loginBody(f.ten, "alice", alicePW), "", nil).cookie.Value
	evil := map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
	newUser := `{"name":"bob","password":"granite otter velvet sunrise","roles":["analyst"]}`
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/tenants/" + string(f.ten) + "/users", newUser},
		{"POST", "/v1/logout", ""},
		{"POST", "/v1/login", loginBody(f.ten, "alice", alicePW)},
	} {
		before := f.h.Audit.Size()
		a := f.b.do(tc.method, tc.path, tc.body, sess, evil)
		if a.status != 403 {
			t.Errorf("cross-origin %s %s: %d %s", tc.method, tc.path, a.status, a.body)
		}
		es, _ := f.h.Audit.Entries(context.Background(), before, f.h.Audit.Size())
		if len(es) != 1 || es[0].Outcome != audit.Denied {
			t.Errorf("cross-origin %s: audit %+v", tc.path, es)
		}
	}
	if w := f.b.do("GET", "/v1/session", "", sess, nil); w.status != 200 {
		t.Errorf("cross-origin logout ended the session: %d", w.status)
	}
	same := map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": f.h.APIURL()}
	if a := f.b.do("POST", "/v1/tenants/"+string(f.ten)+"/users", newUser, sess, same); a.status != 201 {
		t.Errorf("same-origin create by the tenant admin: %d %s", a.status, a.body)
	}
	// A tenant admin manages only their own tenant.
	if a := f.b.do("GET", "/v1/tenants/"+string(f.other)+"/users", "", sess, same); a.status != 403 {
		t.Errorf("tenant admin reading another tenant's users: %d %s", a.status, a.body)
	}
}

// TestMemberReadsOwnData: a member (a user who is a data subject) signs in
// and reads their own stream at any resolution for any purpose without a
// grant, but not a neighbour's; a tenant admin's session reads nothing
// without a grant either.
func TestMemberReadsOwnData(t *testing.T) {
	f := newIDFixture(t)
	ctx := context.Background()
	c, err := client.NewFromFile(f.h.APIURL(), f.h.InitialToken, f.h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	mine, err := c.AddHousehold(ctx, f.ten, "house-m", "Member M")
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := c.AddHousehold(ctx, f.ten, "house-n", "Member N")
	if err != nil {
		t.Fatal(err)
	}
	const pw = "quiet harbour seven kites"
	if err := c.Do(ctx, "POST", "/v1/tenants/"+string(f.ten)+"/users", identity.NewUser{Name: "mia", Password: pw,
		Roles: []access.Role{access.RoleMember}, MemberOf: mine.Subject.ID}, nil); err != nil {
		t.Fatal(err)
	}
	sess := f.b.do("POST", "/v1/login", loginBody(f.ten, "mia", pw), "", nil).cookie
	if sess == nil {
		t.Fatal("no session cookie")
	}
	read := func(session string, s registry.StreamID, q string) int {
		return f.b.do("GET", "/v1/tenants/"+string(f.ten)+"/streams/"+string(s)+"/readings?since=1h&"+q, "", session, nil).status
	}
	for _, q := range []string{"purpose=monitoring", "purpose=billing&resolution=15m", "purpose=research&resolution=1mo"} {
		if st := read(sess.Value, mine.Streams[0].ID, q); st != 200 {
			t.Errorf("member reads own stream (%s): %d, want 200", q, st)
		}
		if st := read(sess.Value, theirs.Streams[0].ID, q); st != 403 {
			t.Errorf("member reads neighbour's stream (%s): %d, want 403", q, st)
		}
	}
	admin := f.b.do("POST", "/v1/login", loginBody(f.ten, "alice", alicePW), "", nil).cookie
	if st := read(admin.Value, mine.Streams[0].ID, "purpose=monitoring"); st != 403 {
		t.Errorf("tenant admin without a grant reads a member's stream: %d, want 403", st)
	}
	// A member's session cannot reach the registry or other tenants.
	if st := f.b.do("GET", "/v1/tenants/"+string(f.ten)+"/subjects", "", sess.Value, nil).status; st != 403 {
		t.Errorf("member lists subjects: %d, want 403", st)
	}
	if st := f.b.do("GET", "/v1/tenants/"+string(f.other)+"/streams", "", sess.Value, nil).status; st != 403 {
		t.Errorf("member reaches another tenant: %d, want 403", st)
	}
}
