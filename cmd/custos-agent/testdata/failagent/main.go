// Command failagent stands in for a broken custos-agent release in
// update_e2e_test.go: it exits non-zero at once, as a release that crashes
// at start would, so the trial fails and the running agent rolls back.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "failagent: this release is broken")
	os.Exit(3)
}
