package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/access"
	"github.com/custos-iot/custos/internal/identity"
	"github.com/custos-iot/custos/internal/registry"
)

// readPassword reads a password from the first line of standard input, so
// it shows neither in the process list nor in the shell history.
func readPassword(in io.Reader) (string, error) {
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("no password on standard input (e.g. read -rs PW; printf '%s\\n' \"$PW\" | custos user ...)")
	}
	return pw, nil
}

// userCommand: custos user add|list|disable|passwd, through the API as the
// hub operator (CUSTOS_TOKEN).
func userCommand(g *globals) *cobra.Command {
	var tenant string
	need := func(c *cobra.Command) {
		c.Flags().StringVar(&tenant, "tenant", os.Getenv("CUSTOS_TENANT"), "tenant ID (env CUSTOS_TENANT)")
		c.PreRunE = func(*cobra.Command, []string) error {
			if tenant == "" {
				return errors.New("--tenant (or CUSTOS_TENANT) is required")
			}
			return nil
		}
	}
	base := func() string { return "/v1/tenants/" + tenant + "/users" }
	cmd := &cobra.Command{Use: "user", Short: "Manage a tenant's users (local passwords or OpenID Connect)"}

	var roles []string
	var memberOf, issuer, subject string
	var withPassword bool
	add := &cobra.Command{
		Use: "add NAME", Short: "Add a user; with --password the initial password is read from standard input", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			in := identity.NewUser{Name: args[0], MemberOf: registry.SubjectID(memberOf), Issuer: issuer, ExternalID: subject, Roles: []access.Role{}}
			for _, r := range roles {
				in.Roles = append(in.Roles, access.Role(r))
			}
			if withPassword {
				if in.Password, err = readPassword(cmd.InOrStdin()); err != nil {
					return err
				}
			}
			var u identity.User
			if err := c.Do(cmd.Context(), "POST", base(), in, &u); err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), u, []string{"ID", "NAME", "ROLES"}, func(int) []string {
				return []string{string(u.ID), u.Name, identity.JoinRoles(u.Roles)}
			}, 1)
		},
	}
	add.Flags().StringSliceVar(&roles, "role", nil, "role in the tenant (repeatable): tenant-admin, operator, analyst, member, auditor")
	add.Flags().StringVar(&memberOf, "member-of", "", "data subject the user is (for --role member)")
	add.Flags().BoolVar(&withPassword, "password", false, "read an initial password from standard input")
	add.Flags().StringVar(&issuer, "oidc-issuer", "", "OpenID Connect issuer URL the user logs in with")
	add.Flags().StringVar(&subject, "oidc-subject", "", "the user's subject (sub claim) at that issuer")

	list := &cobra.Command{
		Use: "list", Short: "List users", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var us []identity.User
			if err := c.Do(cmd.Context(), "GET", base(), nil, &us); err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), us, []string{"ID", "NAME", "ROLES", "PASSWORD", "OIDC", "DISABLED"}, func(i int) []string {
				u := us[i]
				return []string{string(u.ID), u.Name, identity.JoinRoles(u.Roles), fmt.Sprint(u.HasPassword), u.Issuer, when(u.Disabled)}
			}, len(us))
		},
	}
	disable := &cobra.Command{
		Use: "disable USER", Short: "Disable a user and end their sessions", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var u identity.User
			if err := c.Do(cmd.Context(), "POST", base()+"/"+args[0]+"/disable", map[string]string{}, &u); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "user %s disabled at %s; their sessions are ended\n", u.ID, when(u.Disabled))
			return nil
		},
	}
	passwd := &cobra.Command{
		Use: "passwd USER", Short: "Set a user's password (read from standard input) and end their sessions", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			pw, err := readPassword(cmd.InOrStdin())
			if err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), "POST", base()+"/"+args[0]+"/password", map[string]string{"password": pw}, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "password of %s changed; their sessions are ended\n", args[0])
			return nil
		},
	}
	for _, c := range []*cobra.Command{add, list, disable, passwd} {
		need(c)
	}
	cmd.AddCommand(add, list, disable, passwd)
	return cmd
}
