package identity

import (
	"bufio"
	_ "embed"
	"fmt"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/custos-iot/custos/internal/errs"
)

// Password rules after NIST SP 800-63B (rev. 3 §5.1.1.2, rev. 4 §3.1.1.2).
const (
	// MinPasswordLen is the minimum length of a password, in code points
	// after normalisation: 15, as NIST requires for passwords used as a
	// single factor (Custos has no second factor yet).
	MinPasswordLen = 15
	// MaxPasswordLen is the maximum length, in code points. NIST asks for
	// at least 64; longer ones are refused only to bound the work.
	MaxPasswordLen = 128
)

//go:embed data/common-passwords.txt
var commonFile string

var (
	commonOnce sync.Once
	common     map[string]bool
)

func blocklisted(s string) bool {
	commonOnce.Do(func() {
		common = map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(commonFile))
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l != "" && !strings.HasPrefix(l, "#") {
				common[norm.NFKC.String(strings.ToLower(l))] = true
			}
		}
	})
	return common[s]
}

// NormalizePassword returns password in Unicode normalisation form NFKC,
// so that the same password typed on two keyboards hashes the same. Every
// password is normalised before it is checked, hashed or verified.
func NormalizePassword(password string) string { return norm.NFKC.String(password) }

// CheckPassword applies the password rules to a new password (already
// normalised) and says which one it breaks, without echoing the password.
// There are no composition rules (no required digits or symbols): every
// Unicode character is allowed, spaces included. Refused are passwords
// shorter than MinPasswordLen or longer than MaxPasswordLen code points,
// those on the embedded list of common and breached passwords (compared
// in lower case, also with trailing digits and symbols removed), those
// made of one short pattern repeated or one ascending or descending run
// ("aaaa...", "abcabc...", "12345..."), and those containing a context
// word: "custos" or any of words (the login name, the tenant's name) of 3
// or more characters.
func CheckPassword(password string, words ...string) error {
	bad := func(why string) error { return errs.E(errs.Invalid, "password refused: "+why) }
	if !utf8.ValidString(password) {
		return bad("not valid UTF-8")
	}
	n := utf8.RuneCountInString(password)
	if n < MinPasswordLen {
		return bad(fmt.Sprintf("it must be at least %d characters long (a passphrase of several words is easiest)", MinPasswordLen))
	}
	if n > MaxPasswordLen {
		return bad(fmt.Sprintf("it must be at most %d characters long", MaxPasswordLen))
	}
	lower := strings.ToLower(password)
	stripped := strings.TrimRightFunc(lower, func(r rune) bool { return unicode.IsDigit(r) || unicode.IsPunct(r) || unicode.IsSymbol(r) || r == ' ' })
	if blocklisted(lower) || blocklisted(stripped) {
		return bad("it is on the list of common or breached passwords")
	}
	if repetitive(lower) {
		return bad("it is a repeated pattern or a simple sequence")
	}
	for _, w := range append([]string{"custos"}, words...) {
		w = strings.ToLower(norm.NFKC.String(strings.TrimSpace(w)))
		if utf8.RuneCountInString(w) >= 3 && strings.Contains(lower, w) {
			return bad("it contains the login name, the tenant's name or the service's name")
		}
	}
	return nil
}

// repetitive reports whether s is a unit of up to 4 code points repeated,
// or one run of consecutive code points, ascending or descending.
func repetitive(s string) bool {
	rs := []rune(s)
	for p := 1; p <= 4 && p < len(rs); p++ {
		rep := true
		for i := p; i < len(rs); i++ {
			if rs[i] != rs[i-p] {
				rep = false
				break
			}
		}
		if rep {
			return true
		}
	}
	up, down := true, true
	for i := 1; i < len(rs); i++ {
		d := rs[i] - rs[i-1]
		// digits wrap around: ...7890123
		if unicode.IsDigit(rs[i]) && unicode.IsDigit(rs[i-1]) {
			d = (d + 10) % 10
			if d == 9 {
				d = -1
			}
		}
		up = up && d == 1
		down = down && d == -1
	}
	return up || down
}
