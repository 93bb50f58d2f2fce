package pki

import (
	"io/fs"

	"github.com/custos-iot/custos/internal/enrol"
)

// writeFile writes a CA file atomically (see enrol.WriteFile, shared with
// the agent's key and credential files).
func writeFile(path string, data []byte, perm fs.FileMode, exclusive bool) error {
	return enrol.WriteFile(path, data, perm, exclusive)
}
