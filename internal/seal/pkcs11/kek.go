//go:build cgo

package pkcs11

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-iot/custos/internal/errs"
)

// KEK is an AES-256 key in an HSM, used with AES-GCM. It is safe for
// concurrent use: each operation borrows one of a few PKCS#11 sessions.
type KEK struct {
	module   string
	ctx      *p11.Ctx
	key      p11.ObjectHandle
	id       string
	sessions chan p11.SessionHandle
	all      []p11.SessionHandle

	mu     sync.RWMutex // guards closed against in-flight operations
	closed bool
}

// modules counts the users of each loaded PKCS#11 library. C_Initialize and
// C_Finalize act on the whole process, so two KEKs on one module (say an old
// and a new label during a rotation) must share one initialisation, and only
// the last Close may finalise it. This is the package's only global state,
// and it mirrors state the C library keeps anyway.
var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: map[string]*module{}}

type module struct {
	ctx  *p11.Ctx
	refs int
}

func acquire(path string) (*p11.Ctx, error) {
	modules.Lock()
	defer modules.Unlock()
	if m, ok := modules.m[path]; ok {
		m.refs++
		return m.ctx, nil
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, errs.E(errs.Unavailable, fmt.Sprintf("cannot load PKCS#11 module %s", path))
	}
	if err := ctx.Initialize(); err != nil && !isCode(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, errs.E(errs.Unavailable, fmt.Errorf("initialise PKCS#11 module %s: %w", path, err))
	}
	modules.m[path] = &module{ctx: ctx, refs: 1}
	return ctx, nil
}

func release(path string) {
	modules.Lock()
	defer modules.Unlock()
	m, ok := modules.m[path]
	if !ok {
		return
	}
	if m.refs--; m.refs > 0 {
		return
	}
	delete(modules.m, path)
	m.ctx.Finalize()
	m.ctx.Destroy()
}

func isCode(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}

// Open logs in to the token labelled cfg.TokenLabel and finds the secret key
// labelled cfg.KeyLabel, generating it inside the token if there is none. An
// existing key is used only if it is an AES-256 key that is sensitive and not
// extractable.
func Open(cfg Config) (*KEK, error) {
	const op errs.Op = "pkcs11.Open"
	if cfg.Module == "" || cfg.TokenLabel == "" || cfg.KeyLabel == "" {
		return nil, errs.E(op, errs.Invalid, "module, token label and key label are required")
	}
	if cfg.Sessions <= 0 {
		cfg.Sessions = 4
	}
	ctx, err := acquire(cfg.Module)
	if err != nil {
		return nil, errs.E(op, err)
	}
	k := &KEK{module: cfg.Module, ctx: ctx, id: "pkcs11:" + cfg.KeyLabel, sessions: make(chan p11.SessionHandle, cfg.Sessions)}
	if err := k.open(cfg); err != nil {
		k.Close()
		return nil, errs.E(op, err)
	}
	return k, nil
}

func (k *KEK) open(cfg Config) error {
	slot, err := k.findSlot(cfg.TokenLabel)
	if err != nil {
		return err
	}
	for range cfg.Sessions {
		sh, err := k.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
		if err != nil {
			return errs.E(errs.Unavailable, fmt.Errorf("open session on token %q: %w", cfg.TokenLabel, err))
		}
		k.all = append(k.all, sh)
		k.sessions <- sh
	}
	// Login applies to every session of this process on the token.
	if err := k.ctx.Login(k.all[0], p11.CKU_USER, cfg.PIN); err != nil && !isCode(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		if isCode(err, p11.CKR_PIN_INCORRECT) || isCode(err, p11.CKR_PIN_INVALID) || isCode(err, p11.CKR_PIN_LEN_RANGE) {
			return errs.E(errs.Unauthenticated, fmt.Sprintf("token %q refused the PIN", cfg.TokenLabel))
		}
		return errs.E(errs.Unavailable, fmt.Errorf("log in to token %q: %w", cfg.TokenLabel, err))
	}
	k.key, err = k.findOrCreateKey(k.all[0], cfg.KeyLabel, !cfg.Existing)
	return err
}

func (k *KEK) findSlot(label string) (uint, error) {
	slots, err := k.ctx.GetSlotList(true)
	if err != nil {
		return 0, errs.E(errs.Unavailable, fmt.Errorf("list PKCS#11 slots: %w", err))
	}
	for _, s := range slots {
		ti, err := k.ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if strings.TrimRight(ti.Label, " \x00") == label {
			return s, nil
		}
	}
	return 0, errs.E(errs.NotFound, fmt.Sprintf("no PKCS#11 token labelled %q", label))
}

func (k *KEK) findOrCreateKey(sh p11.SessionHandle, label string, create bool) (p11.ObjectHandle, error) {
	found, err := k.find(sh, label)
	if err != nil {
		return 0, err
	}
	switch len(found) {
	case 0:
		if !create {
			return 0, errs.E(errs.NotFound, fmt.Sprintf("no secret key is labelled %q on the token", label))
		}
		return k.generate(sh, label)
	case 1:
		return found[0], k.checkKey(sh, found[0], label)
	default:
		return 0, errs.E(errs.Conflict, fmt.Sprintf("%d secret keys are labelled %q on the token; expected one", len(found), label))
	}
}

func (k *KEK) find(sh p11.SessionHandle, label string) ([]p11.ObjectHandle, error) {
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
	if err := k.ctx.FindObjectsInit(sh, tmpl); err != nil {
		return nil, errs.E(errs.Unavailable, fmt.Errorf("find key %q: %w", label, err))
	}
	defer k.ctx.FindObjectsFinal(sh)
	var all []p11.ObjectHandle
	for {
		objs, _, err := k.ctx.FindObjects(sh, 16)
		if err != nil {
			return nil, errs.E(errs.Unavailable, fmt.Errorf("find key %q: %w", label, err))
		}
		if len(objs) == 0 {
			return all, nil
		}
		all = append(all, objs...)
	}
}

func (k *KEK) generate(sh p11.SessionHandle, label string) (p11.ObjectHandle, error) {
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	}
	h, err := k.ctx.GenerateKey(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, tmpl)
	if err != nil {
		return 0, errs.E(errs.Unavailable, fmt.Errorf("generate key %q in the token: %w", label, err))
	}
	return h, nil
}

// checkKey refuses a key that could have left the token or is not AES-256.
func (k *KEK) checkKey(sh p11.SessionHandle, h p11.ObjectHandle, label string) error {
	attrs, err := k.ctx.GetAttributeValue(sh, h, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_KEY_TYPE, nil),
		p11.NewAttribute(p11.CKA_VALUE_LEN, nil),
		p11.NewAttribute(p11.CKA_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
	})
	if err != nil {
		return errs.E(errs.Unavailable, fmt.Errorf("read attributes of key %q: %w", label, err))
	}
	val := func(i int) uint64 { // a CK_ULONG or CK_BBOOL in host byte order
		switch v := attrs[i].Value; len(v) {
		case 8:
			return binary.NativeEndian.Uint64(v)
		case 4:
			return uint64(binary.NativeEndian.Uint32(v))
		case 1:
			return uint64(v[0])
		}
		return ^uint64(0)
	}
	switch {
	case val(0) != p11.CKK_AES || val(1) != 32:
		return errs.E(errs.Invalid, fmt.Sprintf("key %q is not an AES-256 key", label))
	case val(2) != 1 || val(3) != 0:
		return errs.E(errs.Invalid, fmt.Sprintf("key %q is extractable or not sensitive; a KEK must never leave the HSM", label))
	}
	return nil
}

// ID returns "pkcs11:" and the key label.
func (k *KEK) ID() string { return k.id }

func (k *KEK) borrow() (p11.SessionHandle, func(), error) {
	k.mu.RLock()
	if k.closed {
		k.mu.RUnlock()
		return 0, nil, errs.E(errs.Unavailable, "pkcs11: KEK is closed")
	}
	sh := <-k.sessions
	return sh, func() { k.sessions <- sh; k.mu.RUnlock() }, nil
}

// Encrypt encrypts with AES-256-GCM inside the HSM under a fresh random
// 96-bit IV, authenticating associatedData. It returns IV || ciphertext || tag.
func (k *KEK) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	iv := make([]byte, ivSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	sh, done, err := k.borrow()
	if err != nil {
		return nil, err
	}
	defer done()
	params := p11.NewGCMParams(iv, associatedData, tagSize*8)
	defer params.Free()
	if err := k.ctx.EncryptInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, k.key); err != nil {
		return nil, errs.E(errs.Unavailable, fmt.Errorf("pkcs11: AES-GCM encrypt with %s: %w", k.id, err))
	}
	ct, err := k.ctx.Encrypt(sh, plaintext)
	if err != nil {
		return nil, errs.E(errs.Unavailable, fmt.Errorf("pkcs11: AES-GCM encrypt with %s: %w", k.id, err))
	}
	// Some HSMs choose the IV themselves; use the one that was used.
	if used := params.IV(); len(used) == ivSize {
		iv = used
	}
	out := make([]byte, 0, ivSize+len(ct))
	return append(append(out, iv...), ct...), nil
}

// Decrypt decrypts and authenticates the output of Encrypt. A ciphertext or
// associated data that does not authenticate is a plain error; a token that
// cannot be used is errs.Unavailable.
func (k *KEK) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	if len(ciphertext) < ivSize+tagSize {
		return nil, errors.New("pkcs11: ciphertext too short")
	}
	sh, done, err := k.borrow()
	if err != nil {
		return nil, err
	}
	defer done()
	params := p11.NewGCMParams(ciphertext[:ivSize], associatedData, tagSize*8)
	defer params.Free()
	if err := k.ctx.DecryptInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, k.key); err != nil {
		return nil, errs.E(errs.Unavailable, fmt.Errorf("pkcs11: AES-GCM decrypt with %s: %w", k.id, err))
	}
	p, err := k.ctx.Decrypt(sh, ciphertext[ivSize:])
	if err != nil {
		if outage(err) {
			return nil, errs.E(errs.Unavailable, fmt.Errorf("pkcs11: AES-GCM decrypt with %s: %w", k.id, err))
		}
		// Tokens disagree on how to say "tag mismatch" (SoftHSM2 says
		// CKR_GENERAL_ERROR), so whatever is not an outage is one.
		return nil, fmt.Errorf("pkcs11: AES-GCM decrypt with %s: message authentication failed", k.id)
	}
	return p, nil
}

// Close closes the KEK's sessions (which logs the process out of the token
// once no other KEK holds a session on it) and unloads the module when no
// other KEK uses it. It waits for operations in flight.
func (k *KEK) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	for _, sh := range k.all {
		k.ctx.CloseSession(sh)
	}
	release(k.module)
	return nil
}

// outage reports whether a PKCS#11 error says the token or session cannot be
// used, as opposed to a bad input.
func outage(err error) bool {
	for _, c := range []uint{
		p11.CKR_DEVICE_ERROR, p11.CKR_DEVICE_MEMORY, p11.CKR_DEVICE_REMOVED, p11.CKR_HOST_MEMORY,
		p11.CKR_SESSION_CLOSED, p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_TOKEN_NOT_PRESENT,
		p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_USER_NOT_LOGGED_IN, p11.CKR_OPERATION_NOT_INITIALIZED,
		p11.CKR_FUNCTION_CANCELED, p11.CKR_KEY_HANDLE_INVALID,
	} {
		if isCode(err, c) {
			return true
		}
	}
	return false
}
