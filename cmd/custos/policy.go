package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/collection"
	"github.com/custos-iot/custos/internal/registry"
)

// policyCommand is "custos policy show|set": a stream's collection policy.
func policyCommand(g *globals) *cobra.Command {
	var tenant, reason string
	tenantFlag := requiredTenantFlag(&tenant)
	print := func(cmd *cobra.Command, v collection.Record) error {
		return g.show(cmd.OutOrStdout(), v, []string{"STREAM", "POLICY", "PREVIOUS", "VERSION", "UPDATED", "REFUSED", "REASON"}, func(int) []string {
			return []string{v.Stream, v.String(), v.Previous.String(), fmt.Sprint(v.Version), when(v.Updated), fmt.Sprint(v.Refused), v.Reason}
		}, 1)
	}
	cmd := &cobra.Command{Use: "policy", Short: "Show or set a stream's collection policy (what its agent may send)"}
	show := &cobra.Command{
		Use: "show STREAM", Short: "Show a stream's collection policy", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			v, err := c.CollectionPolicy(cmd.Context(), registry.TenantID(tenant), registry.StreamID(args[0]))
			if err != nil {
				return err
			}
			return print(cmd, v)
		},
	}
	set := &cobra.Command{
		Use:   "set STREAM off|raw|15m|1h|1d|1mo",
		Short: "Set a stream's collection policy: off (nothing is sent) or the finest resolution its agent may send",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := collection.Parse(args[1])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			v, err := c.SetCollectionPolicy(cmd.Context(), registry.TenantID(tenant), registry.StreamID(args[0]), p, reason)
			if err != nil {
				return err
			}
			return print(cmd, v)
		},
	}
	set.Flags().StringVar(&reason, "reason", "", "why (recorded with the policy; no personal data)")
	tenantFlag(show)
	tenantFlag(set)
	cmd.AddCommand(show, set)
	return cmd
}
