package consent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-iot/custos/internal/errs"
	"github.com/custos-iot/custos/internal/registry"
)

// A receipt is a signed note (golang.org/x/mod/sumdb/note, the format of
// the audit log's checkpoints) whose text is one consent record, the
// notice's hash and the purpose's lawful basis, one "key value" per line
// after a header line. The person keeps it; anyone with the hub's receipt
// verifier key checks it offline (custos consent verify-receipt).
const receiptHeader = "custos consent receipt v1"

// Receipt is the content of a consent receipt.
type Receipt struct {
	Record
	Basis Basis `json:"basis"`
	// NoticeSHA256 is the hex SHA-256 of the notice text the subject was
	// shown, so the receipt proves which text it was.
	NoticeSHA256 string `json:"notice_sha256"`
}

// NoticeHash returns the hex SHA-256 of a notice text.
func NoticeHash(notice string) string {
	h := sha256.Sum256([]byte(notice))
	return hex.EncodeToString(h[:])
}

// GenerateReceiptKey makes a receipt signing key and its verifier key.
func GenerateReceiptKey(rand io.Reader, name string) (skey, vkey string, err error) {
	return note.GenerateKey(rand, name)
}

// SignReceipt signs the receipt of record r, given on purpose version p.
func SignReceipt(signer note.Signer, r Record, p Purpose) ([]byte, error) {
	rc := Receipt{Record: r, Basis: p.Basis, NoticeSHA256: NoticeHash(p.Notice)}
	text, err := rc.text()
	if err != nil {
		return nil, err
	}
	return note.Sign(&note.Note{Text: text}, signer)
}

func (rc Receipt) text() (string, error) {
	exp := "-"
	if !rc.Expires.IsZero() {
		exp = rc.Expires.UTC().Format(time.RFC3339Nano)
	}
	fields := [][2]string{
		{"record", string(rc.ID)},
		{"tenant", string(rc.Tenant)},
		{"subject", string(rc.Subject)},
		{"purpose", string(rc.Purpose)},
		{"notice-version", strconv.Itoa(rc.NoticeVersion)},
		{"notice-sha256", rc.NoticeSHA256},
		{"basis", string(rc.Basis)},
		{"event", string(rc.Event)},
		{"method", string(rc.Method)},
		{"at", rc.At.UTC().Format(time.RFC3339Nano)},
		{"expires", exp},
	}
	var b strings.Builder
	b.WriteString(receiptHeader + "\n")
	for _, f := range fields {
		if f[1] == "" || strings.ContainsAny(f[1], " \n\r\t") {
			return "", errs.E(errs.Invalid, fmt.Sprintf("receipt field %s is empty or holds white space", f[0]))
		}
		b.WriteString(f[0] + " " + f[1] + "\n")
	}
	return b.String(), nil
}

// VerifyReceipt checks a receipt's signature against the hub's receipt
// verifier key and returns its content. It needs no network.
func VerifyReceipt(msg []byte, verifierKey string) (Receipt, error) {
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return Receipt{}, errs.E(errs.Invalid, "bad receipt verifier key")
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return Receipt{}, errs.E(errs.Integrity, "the receipt is not signed by this key, or was altered")
	}
	return ParseReceiptText(n.Text)
}

// ParseReceiptText parses a receipt's text (without checking any
// signature: use VerifyReceipt for receipts from elsewhere).
func ParseReceiptText(text string) (Receipt, error) {
	bad := func(why string) (Receipt, error) {
		return Receipt{}, errs.E(errs.Invalid, "malformed receipt: "+why)
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) != 12 || lines[0] != receiptHeader {
		return bad("unknown header or wrong number of lines")
	}
	want := []string{"record", "tenant", "subject", "purpose", "notice-version", "notice-sha256", "basis", "event", "method", "at", "expires"}
	vals := make([]string, len(want))
	for i, l := range lines[1:] {
		k, v, ok := strings.Cut(l, " ")
		if !ok || k != want[i] || v == "" {
			return bad("expected field " + want[i])
		}
		vals[i] = v
	}
	var rc Receipt
	rc.ID, rc.Tenant, rc.Subject, rc.Purpose = RecordID(vals[0]), registry.TenantID(vals[1]), registry.SubjectID(vals[2]), PurposeID(vals[3])
	n, err := strconv.Atoi(vals[4])
	if err != nil || n < 1 {
		return bad("notice-version")
	}
	rc.NoticeVersion = n
	if h, err := hex.DecodeString(vals[5]); err != nil || len(h) != sha256.Size {
		return bad("notice-sha256")
	}
	rc.NoticeSHA256 = vals[5]
	rc.Basis, rc.Event, rc.Method = Basis(vals[6]), Event(vals[7]), Method(vals[8])
	if rc.At, err = time.Parse(time.RFC3339Nano, vals[9]); err != nil {
		return bad("at")
	}
	if vals[10] != "-" {
		if rc.Expires, err = time.Parse(time.RFC3339Nano, vals[10]); err != nil {
			return bad("expires")
		}
	}
	return rc, nil
}
