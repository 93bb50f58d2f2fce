package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/plausibility"
	"github.com/custos-iot/custos/internal/registry"
)

// newQuarantine is `custos quarantine`: the readings the plausibility
// checks held back, and the tenant's policy that decides it.
func newQuarantine(g *globals) *cobra.Command {
	var tenant string
	tenantFlag := requiredTenantFlag(&tenant)
	tid := func() registry.TenantID { return registry.TenantID(tenant) }
	cmd := &cobra.Command{Use: "quarantine", Short: "Readings held back by the plausibility checks: list, release, reject; the tenant's policy"}

	var stream, purpose, after string
	var limit int
	list := &cobra.Command{
		Use: "list", Short: "List quarantined readings with their reasons (oldest first, one page)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			p, err := c.Quarantine(cmd.Context(), tid(), registry.StreamID(stream), purpose, after, limit)
			if err != nil {
				return err
			}
			if g.json {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(p)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%d quarantined entries\n", len(p.Entries))
			for _, e := range p.Entries {
				fmt.Fprintf(w, "\nentry %d  stream %s  connector %s  received %s  %d readings\n", e.ID, e.Stream, e.Connector, time.UnixMilli(e.Received).UTC().Format(time.RFC3339), e.Count)
				if len(e.Readings) == 0 {
					seen := map[string]bool{}
					for _, x := range e.Reasons {
						if k := x.Rule.String() + ": " + x.Detail; !seen[k] {
							seen[k] = true
							fmt.Fprintf(w, "  %s\n", k)
						}
					}
				}
				for _, r := range e.Readings {
					var why []string
					for _, x := range r.Reasons {
						why = append(why, x.Rule.String()+": "+x.Detail)
					}
					fmt.Fprintf(w, "  %s  %g  %s\n", time.UnixMilli(r.Time).UTC().Format("2006-01-02T15:04:05.000Z"), r.Value, strings.Join(why, "; "))
				}
			}
			if p.Next != "" {
				fmt.Fprintf(w, "\n(more: --after %s)\n", p.Next)
			}
			return nil
		},
	}
	tenantFlag(list)
	list.Flags().StringVar(&stream, "stream", "", "only this stream")
	list.Flags().StringVar(&purpose, "purpose", "", "open the readings of --stream for this purpose (needs a grant, like reading the stream); without it only the reasons are shown")
	list.Flags().StringVar(&after, "after", "", "continue after this entry (the previous page's next)")
	list.Flags().IntVar(&limit, "limit", 100, "entries per page (1-1000)")

	act := func(use, short string, do func(cmd *cobra.Command, ids []int64) (api.QuarantineResult, error)) *cobra.Command {
		c := &cobra.Command{
			Use: use + " ENTRY...", Short: short, Args: cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				ids := make([]int64, len(args))
				for i, a := range args {
					n, err := strconv.ParseInt(a, 10, 64)
					if err != nil || n <= 0 {
						return fmt.Errorf("%q is not a quarantine entry ID (see custos quarantine list)", a)
					}
					ids[i] = n
				}
				res, err := do(cmd, ids)
				if err != nil {
					return err
				}
				if g.json {
					return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %d entries (%d readings)\n", map[string]string{"release": "released", "reject": "rejected"}[use], res.Entries, res.Readings)
				return nil
			},
		}
		tenantFlag(c)
		return c
	}
	release := act("release", "Move quarantined entries into their streams (reads and, after compaction, rollups)", func(cmd *cobra.Command, ids []int64) (api.QuarantineResult, error) {
		c, err := g.client()
		if err != nil {
			return api.QuarantineResult{}, err
		}
		return c.ReleaseQuarantine(cmd.Context(), tid(), ids)
	})
	reject := act("reject", "Delete quarantined entries for good", func(cmd *cobra.Command, ids []int64) (api.QuarantineResult, error) {
		c, err := g.client()
		if err != nil {
			return api.QuarantineResult{}, err
		}
		return c.RejectQuarantine(cmd.Context(), tid(), ids)
	})

	var setFile string
	policy := &cobra.Command{
		Use: "policy", Short: "Show the tenant's plausibility policy, or replace it with --set FILE (JSON, - for stdin)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var p plausibility.Policy
			if setFile != "" {
				var b []byte
				if setFile == "-" {
					b, err = io.ReadAll(cmd.InOrStdin())
				} else {
					b, err = os.ReadFile(setFile)
				}
				if err != nil {
					return err
				}
				dec := json.NewDecoder(strings.NewReader(string(b)))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&p); err != nil {
					return fmt.Errorf("policy: %w", err)
				}
				p, err = c.SetPlausibilityPolicy(cmd.Context(), tid(), p)
			} else {
				p, err = c.PlausibilityPolicy(cmd.Context(), tid())
			}
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			if !g.json {
				enc.SetIndent("", "  ")
			}
			return enc.Encode(p)
		},
	}
	tenantFlag(policy)
	policy.Flags().StringVar(&setFile, "set", "", "replace the policy with this JSON file (- for stdin)")
	cmd.AddCommand(list, release, reject, policy)
	return cmd
}
