package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/oauth"
	"github.com/custos-iot/custos/internal/store"
)

// appCommand: custos app add|list|revoke, a tenant's OAuth2 apps.
func appCommand(g *globals) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{Use: "app", Short: "Manage a tenant's OAuth2 apps (services and apps acting for users)"}
	cmd.PersistentFlags().StringVar(&tenant, "tenant", os.Getenv("CUSTOS_TENANT"), "tenant ID (env CUSTOS_TENANT)")
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error {
		if tenant == "" {
			return fmt.Errorf("--tenant (or CUSTOS_TENANT) is required")
		}
		return nil
	}
	row := func(a store.OAuthApp) []string {
		typ := a.Kind
		if a.Public {
			typ += " (public)"
		}
		return []string{string(a.ID), a.Name, typ, strings.Join(a.Scopes, " "), strings.Join(a.RedirectURIs, " "), when(a.Revoked)}
	}
	cols := []string{"ID", "NAME", "KIND", "SCOPES", "REDIRECT URIS", "REVOKED"}

	var in oauth.NewApp
	add := &cobra.Command{
		Use: "add NAME", Short: "Register an app; its client secret is printed once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			in.Name = args[0]
			var out struct {
				App          store.OAuthApp `json:"app"`
				ClientSecret string         `json:"client_secret"`
			}
			if err := c.Do(cmd.Context(), "POST", "/v1/tenants/"+tenant+"/apps", in, &out); err != nil {
				return err
			}
			if g.json {
				return g.show(cmd.OutOrStdout(), out, nil, nil, 0)
			}
			if err := g.show(cmd.OutOrStdout(), out.App, cols, func(int) []string { return row(out.App) }, 1); err != nil {
				return err
			}
			if out.ClientSecret != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "\nclient_id:     %s\nclient_secret: %s\nThe secret is shown this once; the hub keeps only its hash.\n", out.App.ID, out.ClientSecret)
			}
			return nil
		},
	}
	add.Flags().StringVar(&in.Kind, "kind", oauth.KindService, `"service" (client credentials) or "user" (authorization code + PKCE, acting for a user)`)
	add.Flags().BoolVar(&in.Public, "public", false, "a user app without a secret (native or browser app)")
	add.Flags().StringSliceVar(&in.RedirectURIs, "redirect-uri", nil, "exact redirect URI of a user app (repeatable)")
	add.Flags().StringSliceVar(&in.Scopes, "scope", []string{oauth.ScopeRead}, `scopes the app may ask for: "read" or "read:<purpose>" (repeatable)`)

	list := &cobra.Command{
		Use: "list", Short: "List the tenant's apps", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var apps []store.OAuthApp
			if err := c.Do(cmd.Context(), "GET", "/v1/tenants/"+tenant+"/apps", nil, &apps); err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), apps, cols, func(i int) []string { return row(apps[i]) }, len(apps))
		},
	}
	revoke := &cobra.Command{
		Use: "revoke APP", Short: "Revoke an app and every token it holds (effective on the next request)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var a store.OAuthApp
			if err := c.Do(cmd.Context(), "POST", "/v1/tenants/"+tenant+"/apps/"+args[0]+"/revoke", map[string]string{}, &a); err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), a, cols, func(int) []string { return row(a) }, 1)
		},
	}
	cmd.AddCommand(add, list, revoke)
	return cmd
}
