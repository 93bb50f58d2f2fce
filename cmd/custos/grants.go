package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/registry"
)

// grantCommand: custos grant add|list|revoke.
func grantCommand(g *globals, tenantFlag func(*cobra.Command), tenant *string) *cobra.Command {
	cmd := &cobra.Command{Use: "grant", Short: "Manage access grants: who may read what, at which finest resolution, for which purposes"}
	var in api.GrantIn
	var purposes string
	var valid time.Duration
	add := &cobra.Command{
		Use:   "add",
		Short: "Grant a principal or role read access to a resource",
		Example: `  custos grant add --principal usr_... --resource site:sit_... --finest 1d --purposes billing
  custos grant add --role analyst --resource tenant:ten_... --finest 1mo --purposes research --valid 720h`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			for _, p := range strings.Split(purposes, ",") {
				if p = strings.TrimSpace(p); p != "" {
					in.Purposes = append(in.Purposes, p)
				}
			}
			if valid > 0 {
				in.NotAfter = time.Now().Add(valid).UTC()
			}
			v, err := cl.Grant(c.Context(), registry.TenantID(*tenant), in)
			if err != nil {
				return err
			}
			return showGrants(g, c, []api.GrantOut{v})
		},
	}
	tenantFlag(add)
	add.Flags().StringVar(&in.Principal, "principal", "", "grantee principal (usr_..., app_... or tok_...)")
	add.Flags().StringVar(&in.Role, "role", "", "grantee role instead of a principal (tenant-admin, operator, analyst, member, auditor, app)")
	add.Flags().StringVar(&in.Resource, "resource", "", "what is granted, with everything below it: tenant:ID, subject:ID, site:ID, device:ID, stream:ID or group:ID")
	add.Flags().StringVar(&in.Finest, "finest", "", "finest resolution granted: raw, 15m, 1h, 1d or 1mo (coarser ones are granted too)")
	add.Flags().StringVar(&purposes, "purposes", "", "comma-separated purposes, e.g. monitoring,billing")
	add.Flags().DurationVar(&valid, "valid", 0, "valid for this long from now (default: until revoked)")
	add.Flags().StringVar(&in.ID, "id", "", "grant ID (default: generated)")

	list := &cobra.Command{
		Use: "list", Short: "List the tenant's grants", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			vs, err := cl.Grants(c.Context(), registry.TenantID(*tenant))
			if err != nil {
				return err
			}
			return showGrants(g, c, vs)
		},
	}
	tenantFlag(list)
	revoke := &cobra.Command{
		Use: "revoke GRANT", Short: "Revoke a grant: the next request on every hub replica is decided without it", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			if err := cl.RevokeGrant(c.Context(), registry.TenantID(*tenant), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "revoked %s\n", args[0])
			return nil
		},
	}
	tenantFlag(revoke)
	cmd.AddCommand(add, list, revoke)
	return cmd
}

func showGrants(g *globals, c *cobra.Command, vs []api.GrantOut) error {
	return g.show(c.OutOrStdout(), vs, []string{"ID", "GRANTEE", "RESOURCE", "FINEST", "PURPOSES", "VALID UNTIL"}, func(i int) []string {
		v := vs[i]
		who := v.Principal
		if v.Role != "" {
			who = "role " + v.Role
		}
		return []string{v.ID, who, v.Resource, v.Finest, strings.Join(v.Purposes, ","), when(v.NotAfter)}
	}, len(vs))
}

// accessCommand: custos access explain.
func accessCommand(g *globals, tenantFlag func(*cobra.Command), tenant *string) *cobra.Command {
	cmd := &cobra.Command{Use: "access", Short: "Inspect access decisions"}
	var principal, stream, resolution, purpose string
	explain := &cobra.Command{
		Use:     "explain",
		Short:   "Explain why a principal may or may not read a stream at a resolution for a purpose",
		Example: "  custos access explain --principal usr_... --stream str_... --resolution raw --purpose monitoring",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			x, err := cl.Explain(c.Context(), registry.TenantID(*tenant), principal, registry.StreamID(stream), resolution, purpose)
			if err != nil {
				return err
			}
			if g.json {
				return jsonOut(c, x)
			}
			fmt.Fprint(c.OutOrStdout(), x.Text)
			if !strings.HasSuffix(x.Text, "\n") {
				fmt.Fprintln(c.OutOrStdout())
			}
			return nil
		},
	}
	tenantFlag(explain)
	explain.Flags().StringVar(&principal, "principal", "", "the principal (usr_..., app_... or tok_...)")
	explain.Flags().StringVar(&stream, "stream", "", "the stream")
	explain.Flags().StringVar(&resolution, "resolution", "raw", "raw, 15m, 1h, 1d or 1mo")
	explain.Flags().StringVar(&purpose, "purpose", client.DefaultPurpose, "the purpose of the read")
	cmd.AddCommand(explain)
	return cmd
}

func jsonOut(c *cobra.Command, v any) error { return json.NewEncoder(c.OutOrStdout()).Encode(v) }
