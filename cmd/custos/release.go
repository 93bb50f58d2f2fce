package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/semver"

	"github.com/custos-iot/custos/internal/update"
)

// newRelease is `custos release`: the signed agent update repository.
// These commands write the repository directory directly (see
// docs/agent-updates.md for why): run them on the hub's machine, as the
// hub's user, with the offline key brought in for the ceremony.
func newRelease() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Sign agent releases into the hub's update repository (TUF)",
	}
	var repoDir string
	repoFlag := func(c *cobra.Command) {
		c.Flags().StringVar(&repoDir, "repo", envOr("CUSTOS_UPDATES_DIR", filepath.Join(envOr("CUSTOS_DATA_DIR", "custos-data"), "updates")),
			"update repository directory (the hub's <data dir>/updates; env CUSTOS_UPDATES_DIR)")
	}

	var out string
	keygen := &cobra.Command{
		Use:   "keygen",
		Short: "Create the offline root and targets keys (keep them off the hub)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, role := range []string{"root", "targets"} {
				k, err := update.GenerateKey(filepath.Join(out, role+".key"), nil)
				if err != nil {
					return err
				}
				id, _ := k.ID()
				fmt.Fprintf(cmd.OutOrStdout(), "%-8s key %s  %s\n", role, id, filepath.Join(out, role+".key"))
			}
			fmt.Fprintln(cmd.OutOrStdout(), "\nKeep both files offline (removable media, a safe); bring them only to init, publish and rotation.")
			return nil
		},
	}
	keygen.Flags().StringVar(&out, "out", "custos-release-keys", "directory for root.key and targets.key (created 0700)")

	var rootKey, targetsKey string
	var rootExpiry, targetsExpiry time.Duration
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create the repository: online keys, root v1, an empty release list",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root, err := update.LoadKey(rootKey)
			if err != nil {
				return err
			}
			targets, err := update.LoadKey(targetsKey)
			if err != nil {
				return err
			}
			r := update.Open(repoDir, nil)
			r.RootExpiry, r.TargetsExpiry = rootExpiry, targetsExpiry
			rootJSON, err := r.Init(root, targets)
			if err != nil {
				return err
			}
			p := filepath.Join(repoDir, "update-root.json")
			if err := os.WriteFile(p, rootJSON, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Update repository created in %s.\nInstall %s on each agent and set \"update\": {\"root_file\": ...} in its configuration.\n", repoDir, p)
			return nil
		},
	}
	repoFlag(initCmd)
	initCmd.Flags().StringVar(&rootKey, "root-key", "custos-release-keys/root.key", "offline root key")
	initCmd.Flags().StringVar(&targetsKey, "targets-key", "custos-release-keys/targets.key", "offline targets key")
	initCmd.Flags().DurationVar(&rootExpiry, "root-expires", update.DefaultRootExpiry, "lifetime of the root metadata")
	initCmd.Flags().DurationVar(&targetsExpiry, "targets-expires", update.DefaultTargetsExpiry, "lifetime of the release list (re-publish before it ends)")

	var binary, version, goos, goarch string
	publish := &cobra.Command{
		Use:   "publish",
		Short: "Sign a custos-agent binary into the repository",
		Long: `Add a custos-agent binary to the repository: a new targets version signed with the
offline targets key, then new snapshot and timestamp versions signed with the hub's online
keys. Agents of that platform running an older version pick it up at their next check.
The binary must report the same version (build it with -ldflags "-X main.version=VERSION").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !semver.IsValid(version) || !strings.HasPrefix(version, "v") {
				return errors.New("--version must be a semantic version such as v1.4.2")
			}
			data, err := os.ReadFile(binary)
			if err != nil {
				return err
			}
			targets, err := update.LoadKey(targetsKey)
			if err != nil {
				return err
			}
			r := update.Open(repoDir, nil)
			r.TargetsExpiry = targetsExpiry
			rel, err := r.Publish(targets, update.TargetName(version, goos, goarch), data)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %s (%d bytes, sha256 %s)\n", rel.Name, rel.Length, rel.SHA256)
			return nil
		},
	}
	repoFlag(publish)
	publish.Flags().StringVar(&binary, "binary", "", "the custos-agent binary")
	publish.Flags().StringVar(&version, "version", "", "its version, e.g. v1.4.2")
	publish.Flags().StringVar(&goos, "os", runtime.GOOS, "its GOOS")
	publish.Flags().StringVar(&goarch, "arch", runtime.GOARCH, "its GOARCH")
	publish.Flags().StringVar(&targetsKey, "targets-key", "custos-release-keys/targets.key", "offline targets key")
	publish.Flags().DurationVar(&targetsExpiry, "targets-expires", update.DefaultTargetsExpiry, "lifetime of the new release list")
	publish.MarkFlagRequired("binary")
	publish.MarkFlagRequired("version")

	rotate := &cobra.Command{
		Use:   "rotate-online",
		Short: "Replace the hub's online snapshot and timestamp keys (signs a new root)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root, err := update.LoadKey(rootKey)
			if err != nil {
				return err
			}
			v, err := update.Open(repoDir, nil).RotateOnline(root)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "root version %d lists the new online keys; agents follow it at their next check\n", v)
			return nil
		},
	}
	repoFlag(rotate)
	rotate.Flags().StringVar(&rootKey, "root-key", "custos-release-keys/root.key", "offline root key")

	status := &cobra.Command{
		Use:   "status",
		Short: "List the published releases and when each role's metadata expires",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := update.Open(repoDir, nil)
			rels, err := r.Releases()
			if err != nil {
				return err
			}
			exp, err := r.Expiries()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for _, role := range []string{"root", "targets", "snapshot", "timestamp"} {
				fmt.Fprintf(w, "%-10s expires %s\n", role, exp[role].UTC().Format(time.RFC3339))
			}
			for _, rel := range rels {
				fmt.Fprintf(w, "%s  %d bytes  sha256 %s\n", rel.Name, rel.Length, rel.SHA256)
			}
			return nil
		},
	}
	repoFlag(status)
	cmd.AddCommand(keygen, initCmd, publish, rotate, status)
	return cmd
}
