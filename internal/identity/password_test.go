package identity

import (
	"crypto/rand"
	"strings"
	"testing"
)

var cheap = Params{Memory: 64, Time: 1, Threads: 1}

func TestHashVerify(t *testing.T) {
	h, err := Hash(rand.Reader, DefaultParams, "correct staple horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("PHC string %q lacks the OWASP parameters", h)
	}
	for _, tc := range []struct {
		pw   string
		want bool
	}{
		{"correct staple horse battery", true},
		{"correct staple horse batterY", false},
		{"", false},
	} {
		ok, err := Verify(h, tc.pw)
		if err != nil || ok != tc.want {
			t.Errorf("Verify(%q) = %v, %v; want %v", tc.pw, ok, err, tc.want)
		}
	}
	h2, _ := Hash(rand.Reader, DefaultParams, "correct staple horse battery")
	if h == h2 {
		t.Error("two hashes of one password are equal: no fresh salt")
	}
}

func TestParsePHC(t *testing.T) {
	good, _ := Hash(rand.Reader, cheap, "x")
	parts := strings.Split(good, "$")
	for _, tc := range []struct {
		name, phc string
		ok        bool
	}{
		{"good", good, true},
		{"empty", "", false},
		{"bcrypt", "$2a$10$abcdefghijklmnopqrstuv", false},
		{"argon2i", strings.Replace(good, "argon2id", "argon2i", 1), false},
		{"old version", strings.Replace(good, "v=19", "v=16", 1), false},
		{"huge memory", strings.Replace(good, "m=64", "m=4294967295", 1), false},
		{"zero time", strings.Replace(good, "t=1", "t=0", 1), false},
		{"many threads", strings.Replace(good, "p=1", "p=255", 1), false},
		{"repeated param", "$argon2id$v=19$m=64,m=64,p=1$" + parts[4] + "$" + parts[5], false},
		{"leading zero", strings.Replace(good, "t=1", "t=01", 1), false},
		{"short salt", "$argon2id$v=19$m=64,t=1,p=1$AAAA$" + parts[5], false},
		{"bad base64", "$argon2id$v=19$m=64,t=1,p=1$" + parts[4] + "$!!!!", false},
		{"extra field", good + "$x", false},
	} {
		_, _, _, err := ParsePHC(tc.phc)
		if (err == nil) != tc.ok {
			t.Errorf("%s: ParsePHC err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func FuzzParsePHC(f *testing.F) {
	good, _ := Hash(rand.Reader, cheap, "x")
	for _, s := range []string{good, "", "$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "$argon2id$$$$"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := ParsePHC(s)
		if err != nil {
			return
		}
		if p.Memory > maxMemory || p.Time > maxTime || p.Threads > maxThreads || len(salt) < 8 || len(key) < 16 {
			t.Fatalf("accepted out-of-bounds hash %q: %+v", s, p)
		}
	})
}

func TestCheckPassword(t *testing.T) {
	for _, tc := range []struct {
		name, pw string
		words    []string
		ok       bool
	}{
		{"passphrase", "violet tractor moss lantern", nil, true},
		{"exactly 15", "gq7!vx93kz0pwmr", nil, true},
		{"14 is too short", "gq7!vx93kz0pwm", nil, false},
		{"unicode counts code points", "ünïcödé wörtér ñ", nil, true},
		{"emoji allowed", "🐢🐢 slow and steady wins 🏁", nil, true},
		{"128 allowed", strings.Repeat("ab cd", 25) + "xyz", nil, true},
		{"129 refused", strings.Repeat("ab cd", 25) + "xyzw", nil, false},
		{"64 spaces and words", strings.Repeat("tree ", 12) + "lake", nil, true},
		{"no composition rules: lower only", "thislooksfinetome", nil, true},
		{"blocklisted", "passwordpassword", nil, false},
		{"blocklisted any case", "PassWordPassWord", nil, false},
		{"blocklisted plus digits", "correcthorsebatterystaple123", nil, false},
		{"blocklisted plus symbols", "iloveyouiloveyou!!!", nil, false},
		{"repeated char", "aaaaaaaaaaaaaaaaaaaa", nil, false},
		{"repeated unit", "abcdabcdabcdabcd", nil, false},
		{"sequence", "abcdefghijklmnopq", nil, false},
		{"digit sequence wrapping", "3456789012345678", nil, false},
		{"descending", "zyxwvutsrqponmlk", nil, false},
		{"service name", "my custos hub is great", nil, false},
		{"login name", "alice in wonderland forever", []string{"alice"}, false},
		{"login name any case", "ALICE in wonderland forever", []string{"alice"}, false},
		{"tenant name", "sunny coop rooftop power", []string{"bob", "Sunny Coop"}, false},
		{"short words ignored", "ab violet tractor moss", []string{"ab"}, true},
		{"invalid utf-8", "abcdefghijklmn\xff\xfe", nil, false},
	} {
		err := CheckPassword(NormalizePassword(tc.pw), tc.words...)
		if (err == nil) != tc.ok {
			t.Errorf("%s: CheckPassword = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), tc.pw) {
			t.Errorf("%s: error echoes the password", tc.name)
		}
	}
}

func TestNormalizePassword(t *testing.T) {
	// "ﬁ" (U+FB01) and the full-width letters are compatibility forms:
	// typed on another keyboard, the same password must verify.
	a, b := NormalizePassword("ﬁne ｔｕｎｅｄ violins play"), NormalizePassword("fine tuned violins play")
	if a != b {
		t.Errorf("NFKC: %q != %q", a, b)
	}
	h, _ := Hash(rand.Reader, cheap, a)
	if ok, _ := Verify(h, b); !ok {
		t.Error("normalised forms do not verify")
	}
}

func BenchmarkHash(b *testing.B) {
	for b.Loop() {
		Hash(rand.Reader, DefaultParams, "violet tractor moss lantern")
	}
}
