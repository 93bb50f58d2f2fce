package selfupdate_test

import (
	"strings"
	"testing"

	"github.com/custos-iot/custos/internal/selfupdate"
)

func TestParseTargetName(t *testing.T) {
	for name, want := range map[string]string{
		"custos-agent_v1.2.3_linux_arm64":       "v1.2.3 linux arm64",
		"custos-agent_v1.2.3-rc.1_linux_amd64":  "v1.2.3-rc.1 linux amd64",
		"custos-agent_1.2.3_linux_arm64":        "",
		"custos-agent_v1.2.3_linux":             "",
		"custos-agent_v1.2.3_linux_arm64_extra": "",
		"custos-agent_v1.2.3_Linux_arm64":       "",
		"custos-agent_v1.2.3_linux/x_arm64":     "",
		"other_v1.2.3_linux_arm64":              "",
	} {
		v, goos, goarch, ok := selfupdate.ParseTargetName(name)
		got := ""
		if ok {
			got = v + " " + goos + " " + goarch
		}
		if got != want {
			t.Errorf("ParseTargetName(%q) = %q, want %q", name, got, want)
		}
	}
}

// FuzzParseTargetName: names come from (signed) repository metadata; a
// parsed name always rebuilds to itself.
func FuzzParseTargetName(f *testing.F) {
	for _, s := range []string{"custos-agent_v1.2.3_linux_arm64", "custos-agent_v0.0.0-2026+dirty_darwin_arm64", "custos-agent___", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		v, goos, goarch, ok := selfupdate.ParseTargetName(name)
		if !ok {
			return
		}
		if selfupdate.TargetName(v, goos, goarch) != name || strings.ContainsAny(goos+goarch, "/_.") {
			t.Fatalf("%q parsed as %q %q %q", name, v, goos, goarch)
		}
	})
}
