package consent_test

import (
	"crypto/rand"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-iot/custos/internal/consent"
)

func noteSigner(skey string) (note.Signer, error) { return note.NewSigner(skey) }

// FuzzParseReceiptText: a receipt's text comes from the person who kept
// it; parsing must never panic, and what parses must re-encode to the same
// fields.
func FuzzParseReceiptText(f *testing.F) {
	f.Add("custos consent receipt v1\nrecord cns_1\ntenant ten_1\nsubject sub_1\npurpose monitoring\nnotice-version 1\nnotice-sha256 " +
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nbasis consent\nevent given\nmethod app\nat 2026-03-01T12:00:00Z\nexpires -\n")
	f.Add("")
	f.Add("custos consent receipt v1\n")
	f.Fuzz(func(t *testing.T, s string) {
		rc, err := consent.ParseReceiptText(s)
		if err != nil {
			return
		}
		if rc.NoticeVersion < 1 || rc.ID == "" {
			t.Fatalf("parsed an invalid receipt: %+v", rc)
		}
	})
}

// FuzzVerifyReceipt: verification of arbitrary bytes never panics and
// never accepts an unsigned message.
func FuzzVerifyReceipt(f *testing.F) {
	_, vkey, err := consent.GenerateReceiptKey(rand.Reader, "hub.example/custos-consent")
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("custos consent receipt v1\n\n— hub.example/custos-consent abcd\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		if _, err := consent.VerifyReceipt(msg, vkey); err == nil {
			t.Fatal("accepted a message not signed by the key")
		}
	})
}
