package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/registry"
)

type globals struct {
	hub, ca string
	json    bool
}

// client builds an API client from the global flags and CUSTOS_TOKEN. The
// token is never taken from a flag, so it does not show in process lists.
func (g *globals) client() (*client.Client, error) {
	tok := os.Getenv("CUSTOS_TOKEN")
	if f := os.Getenv("CUSTOS_TOKEN_FILE"); tok == "" && f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		return nil, errors.New("no operator token: set CUSTOS_TOKEN (or CUSTOS_TOKEN_FILE) to the token the hub printed on its first start")
	}
	return client.NewFromFile(strings.TrimRight(g.hub, "/"), tok, g.ca)
}

// show prints v as JSON with --json, else as a table of the given columns.
func (g *globals) show(w io.Writer, v any, cols []string, row func(i int) []string, n int) error {
	if g.json {
		return json.NewEncoder(w).Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for i := range n {
		fmt.Fprintln(tw, strings.Join(row(i), "\t"))
	}
	return tw.Flush()
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// requiredTenantFlag returns what adds a --tenant flag (default
// CUSTOS_TENANT) into *tenant to a command, which then refuses to run
// without one.
func requiredTenantFlag(tenant *string) func(*cobra.Command) {
	return func(c *cobra.Command) {
		c.Flags().StringVar(tenant, "tenant", os.Getenv("CUSTOS_TENANT"), "tenant ID (env CUSTOS_TENANT)")
		c.PreRunE = func(*cobra.Command, []string) error {
			if *tenant == "" {
				return errors.New("--tenant (or CUSTOS_TENANT) is required")
			}
			return nil
		}
	}
}

func operatorCommands(g *globals) []*cobra.Command {
	var tenant string
	tenantFlag := requiredTenantFlag(&tenant)
	tid := func() registry.TenantID { return registry.TenantID(tenant) }

	tenantCmd := &cobra.Command{Use: "tenant", Short: "Manage tenants"}
	tenantCmd.AddCommand(&cobra.Command{
		Use: "create NAME", Short: "Create a tenant", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			t, err := c.CreateTenant(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), t, []string{"ID", "NAME"}, func(int) []string { return []string{string(t.ID), t.Name} }, 1)
		},
	}, &cobra.Command{
		Use: "list", Short: "List tenants", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var ts []registry.Tenant
			if err := c.Do(cmd.Context(), "GET", "/v1/tenants", nil, &ts); err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), ts, []string{"ID", "NAME", "CREATED"}, func(i int) []string {
				return []string{string(ts[i].ID), ts[i].Name, when(ts[i].Created)}
			}, len(ts))
		},
	})

	subjectCmd := &cobra.Command{Use: "subject", Short: "Manage data subjects"}
	var email, address string
	sc := &cobra.Command{
		Use: "create NAME", Short: "Create a data subject (with their own key; personal fields are stored sealed)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			v, err := c.CreateSubjectProfile(cmd.Context(), tid(), registry.Profile{Name: args[0], Email: email, Address: address})
			if err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), v, []string{"ID", "NAME"}, func(int) []string { return []string{string(v.ID), v.Name} }, 1)
		},
	}
	sl := &cobra.Command{
		Use: "list", Short: "List data subjects", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var vs []registry.Subject
			if err := c.Do(cmd.Context(), "GET", "/v1/tenants/"+tenant+"/subjects", nil, &vs); err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), vs, []string{"ID", "NAME", "EMAIL", "CREATED"}, func(i int) []string {
				return []string{string(vs[i].ID), vs[i].Name, vs[i].Email, when(vs[i].Created)}
			}, len(vs))
		},
	}
	sc.Flags().StringVar(&email, "email", "", "e-mail address")
	sc.Flags().StringVar(&address, "address", "", "postal address")
	erase := &cobra.Command{
		Use:   "erase SUBJECT",
		Short: "Erase a data subject: destroy their key, remove them, record evidence",
		Long: `Erase a data subject by crypto-shredding: their key is destroyed first, so every copy of
their data (readings, aggregates, profile), including copies in backups of the data
store, is unreadable from that moment. Then they leave the registry with their sites,
devices and streams, and the hub records evidence of what was erased and when. The
sealed rows themselves are deleted in the background; 'custos subject erasures' shows
when that finished.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			e, err := c.EraseSubject(cmd.Context(), tid(), registry.SubjectID(args[0]))
			if err != nil {
				return err
			}
			if g.json {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(e)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "subject %s erased: key destroyed %s; %d streams removed; sealed rows are being purged\n",
				e.Subject, when(e.KeyDestroyed), len(e.Streams))
			return nil
		},
	}
	erasures := &cobra.Command{
		Use: "erasures", Short: "List erasure evidence", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			es, err := c.Erasures(cmd.Context(), tid())
			if err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), es, []string{"SUBJECT", "REQUESTED", "KEY DESTROYED", "PURGED", "STREAMS"}, func(i int) []string {
				e := es[i]
				return []string{string(e.Subject), when(e.Requested), when(e.KeyDestroyed), when(e.Purged), fmt.Sprint(len(e.Streams))}
			}, len(es))
		},
	}
	for _, c := range []*cobra.Command{sc, sl, erase, erasures} {
		tenantFlag(c)
	}
	subjectCmd.AddCommand(sc, sl, erase, erasures)

	var subject string
	siteCmd := &cobra.Command{Use: "site", Short: "Manage sites (homes, halls)"}
	stc := &cobra.Command{
		Use: "create NAME", Short: "Create a site of a data subject", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			v, err := c.CreateSite(cmd.Context(), tid(), registry.SubjectID(subject), args[0])
			if err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), v, []string{"ID", "NAME", "SUBJECT"}, func(int) []string { return []string{string(v.ID), v.Name, string(v.Subject)} }, 1)
		},
	}
	tenantFlag(stc)
	stc.Flags().StringVar(&subject, "subject", "", "subject ID")
	stc.MarkFlagRequired("subject")
	stl := &cobra.Command{
		Use: "list", Short: "List sites", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var vs []registry.Site
			if err := c.Do(cmd.Context(), "GET", "/v1/tenants/"+tenant+"/sites", nil, &vs); err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), vs, []string{"ID", "NAME", "SUBJECT"}, func(i int) []string {
				return []string{string(vs[i].ID), vs[i].Name, string(vs[i].Subject)}
			}, len(vs))
		},
	}
	tenantFlag(stl)
	siteCmd.AddCommand(stc, stl)

	connCmd := &cobra.Command{Use: "connector", Short: "Manage connectors (edge agents)"}
	add := &cobra.Command{
		Use: "add NAME", Short: "Create a connector and print its single-use enrolment token", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			o, err := c.CreateConnector(cmd.Context(), tid(), args[0])
			if err != nil {
				return err
			}
			return printOffer(g, cmd.OutOrStdout(), o.Connector.ID, o.Token, o.Expires, o)
		},
	}
	tok := &cobra.Command{
		Use: "token CONNECTOR", Short: "Issue a new enrolment token for a connector", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			o, err := c.NewEnrolToken(cmd.Context(), tid(), registry.ConnectorID(args[0]))
			if err != nil {
				return err
			}
			return printOffer(g, cmd.OutOrStdout(), o.Connector.ID, o.Token, o.Expires, o)
		},
	}
	revoke := &cobra.Command{
		Use: "revoke CONNECTOR", Short: "Revoke a connector: its next request and any renewal are refused", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			v, err := c.RevokeConnector(cmd.Context(), tid(), registry.ConnectorID(args[0]))
			if err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), v, []string{"ID", "NAME", "STATUS"}, func(int) []string { return []string{string(v.ID), v.Name, string(v.Status)} }, 1)
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List connectors", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			vs, err := c.Connectors(cmd.Context(), tid())
			if err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), vs, []string{"ID", "NAME", "STATUS", "VERSION", "CERT EXPIRES", "LAST SEEN", "SPOOL", "DROPPED", "SOURCES"}, func(i int) []string {
				v := vs[i]
				version, spool, dropped, sources := "-", "-", "-", "-"
				if h := v.Health; h != nil {
					version = h.Version
					spool = fmt.Sprintf("%d (%s)", h.SpoolRecords, bytesHuman(h.SpoolBytes))
					dropped = fmt.Sprint(h.Dropped)
					var ss []string
					for _, s := range h.Sources {
						ss = append(ss, s.Name+":"+s.Status)
					}
					sources = strings.Join(ss, ",")
				}
				return []string{string(v.ID), v.Name, string(v.Status), version, when(v.CertExpiry), when(v.LastSeen), spool, dropped, sources}
			}, len(vs))
		},
	}
	for _, c := range []*cobra.Command{add, tok, revoke, list} {
		tenantFlag(c)
		connCmd.AddCommand(c)
	}

	var site, connector, meterSerial string
	devCmd := &cobra.Command{Use: "device", Short: "Manage devices"}
	dadd := &cobra.Command{
		Use: "add NAME", Short: "Create a device at a site, served by a connector", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			v, err := c.CreateMeterDevice(cmd.Context(), tid(), registry.SiteID(site), registry.ConnectorID(connector), args[0], meterSerial)
			if err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), v, []string{"ID", "NAME", "SITE", "CONNECTOR"}, func(int) []string {
				return []string{string(v.ID), v.Name, string(v.Site), string(v.Connector)}
			}, 1)
		},
	}
	tenantFlag(dadd)
	dadd.Flags().StringVar(&site, "site", "", "site ID")
	dadd.Flags().StringVar(&connector, "connector", "", "connector ID")
	dadd.Flags().StringVar(&meterSerial, "meter-serial", "", "the serial of the meter this device is: readings its connector reports under another meter identity are quarantined")
	dadd.MarkFlagRequired("site")
	dadd.MarkFlagRequired("connector")
	dlist := &cobra.Command{
		Use: "list", Short: "List devices", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var vs []registry.Device
			if err := c.Do(cmd.Context(), "GET", "/v1/tenants/"+tenant+"/devices", nil, &vs); err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), vs, []string{"ID", "NAME", "SITE", "CONNECTOR"}, func(i int) []string {
				return []string{string(vs[i].ID), vs[i].Name, string(vs[i].Site), string(vs[i].Connector)}
			}, len(vs))
		},
	}
	tenantFlag(dlist)
	var replacedAt string
	dmeter := &cobra.Command{
		Use:   "replace-meter DEVICE",
		Short: "Record that a device's meter was replaced: its new serial, and when",
		Long: `Record that a device's meter was replaced. From --at (default now) the device is
the new meter: batches reporting its --meter-serial are accepted, those reporting
the old one are quarantined (rule meter_identity), and an energy counter may restart
once (rule counter_backwards does not flag the first reading at or after --at).
An empty --meter-serial records a meter whose identity is not checked.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var at time.Time
			if replacedAt != "" {
				t, err := time.Parse(time.RFC3339, replacedAt)
				if err != nil {
					return fmt.Errorf("--at: want RFC 3339, e.g. 2026-11-26T09:30:00Z: %w", err)
				}
				at = t
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			v, err := c.ReplaceMeter(cmd.Context(), tid(), registry.DeviceID(args[0]), meterSerial, at)
			if err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), v, []string{"ID", "NAME", "METER SERIAL", "REPLACED"}, func(int) []string {
				return []string{string(v.ID), v.Name, v.MeterSerial, v.MeterReplaced.Format(time.RFC3339)}
			}, 1)
		},
	}
	tenantFlag(dmeter)
	dmeter.Flags().StringVar(&meterSerial, "meter-serial", "", "the new meter's serial (empty: its identity is not checked)")
	dmeter.Flags().StringVar(&replacedAt, "at", "", "when the new meter started measuring, RFC 3339 (default now)")
	devCmd.AddCommand(dadd, dlist, dmeter)

	var device, metric, category, unit, role string
	streamCmd := &cobra.Command{Use: "stream", Short: "Manage streams"}
	sadd := &cobra.Command{
		Use: "add", Short: "Create a stream: one metric of a device, with its data category", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var v registry.Stream
			if role != "" {
				if unit != "" && unit != "W" {
					return fmt.Errorf("a stream with a site role measures power in W")
				}
				v, err = c.CreateRoleStream(cmd.Context(), tid(), registry.DeviceID(device), metric, registry.Category(category), registry.Role(role))
			} else {
				v, err = c.CreateStream(cmd.Context(), tid(), registry.DeviceID(device), metric, registry.Category(category), unit)
			}
			if err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), v, []string{"ID", "KEY", "CATEGORY", "UNIT"}, func(int) []string {
				return []string{string(v.ID), v.Key, string(v.Category), v.Unit}
			}, 1)
		},
	}
	tenantFlag(sadd)
	sadd.Flags().StringVar(&device, "device", "", "device ID")
	sadd.Flags().StringVar(&metric, "metric", "", "metric name, e.g. import_power_w")
	sadd.Flags().StringVar(&category, "category", "", "data category, e.g. energy.consumption")
	sadd.Flags().StringVar(&unit, "unit", "", "unit, e.g. W")
	sadd.Flags().StringVar(&role, "role", "", "the stream's part in its site's energy balance: import, export, production or load (power in W)")
	sadd.MarkFlagRequired("device")
	sadd.MarkFlagRequired("metric")
	sadd.MarkFlagRequired("category")
	slist := &cobra.Command{
		Use: "list", Short: "List streams", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			vs, err := c.Streams(cmd.Context(), tid())
			if err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), vs, []string{"ID", "KEY", "CATEGORY", "UNIT"}, func(i int) []string {
				return []string{string(vs[i].ID), vs[i].Key, string(vs[i].Category), vs[i].Unit}
			}, len(vs))
		},
	}
	tenantFlag(slist)
	streamCmd.AddCommand(sadd, slist)

	var since time.Duration
	var from, to, resolution, purpose string
	var limit int
	read := &cobra.Command{
		Use: "read STREAM", Short: "Read a stream's readings (default: the last 5 minutes)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			c.Purpose = purpose
			now := time.Now()
			lo, hi := now.Add(-since).UnixMilli(), now.UnixMilli()+1
			if from != "" {
				t, err := time.Parse(time.RFC3339, from)
				if err != nil {
					return fmt.Errorf("--from must be RFC 3339, e.g. 2026-01-02T15:04:05Z")
				}
				lo = t.UnixMilli()
			}
			if to != "" {
				t, err := time.Parse(time.RFC3339, to)
				if err != nil {
					return fmt.Errorf("--to must be RFC 3339, e.g. 2026-01-02T15:04:05Z")
				}
				hi = t.UnixMilli()
			}
			if resolution != "" && resolution != "raw" {
				b, err := c.Aggregates(cmd.Context(), tid(), registry.StreamID(args[0]), resolution, lo, hi)
				if err != nil {
					return err
				}
				if g.json {
					return json.NewEncoder(cmd.OutOrStdout()).Encode(b)
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "%s (%s) at %s: %d buckets\n", b.Key, b.Unit, b.Resolution, len(b.Buckets))
				for _, x := range b.Buckets {
					fmt.Fprintf(w, "%s  n=%d mean=%.6g min=%g max=%g sum=%g delta=%g\n", time.UnixMilli(x.T).UTC().Format(time.RFC3339), x.Count, x.Mean, x.Min, x.Max, x.Sum, x.Delta)
				}
				return nil
			}
			p, err := c.Readings(cmd.Context(), tid(), registry.StreamID(args[0]), lo, hi, limit, "")
			if err != nil {
				return err
			}
			if g.json {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(p)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s (%s): %d readings\n", p.Key, p.Unit, len(p.Readings))
			for _, r := range p.Readings {
				fmt.Fprintf(w, "%s  %g\n", time.UnixMilli(r.Time).UTC().Format("2006-01-02T15:04:05.000Z"), r.Value)
			}
			if p.Next != "" {
				fmt.Fprintf(w, "(more: raise --limit or narrow the range)\n")
			}
			return nil
		},
	}
	tenantFlag(read)
	read.Flags().DurationVar(&since, "since", 5*time.Minute, "read from this long ago until now")
	read.Flags().StringVar(&from, "from", "", "start (RFC 3339), instead of --since")
	read.Flags().StringVar(&to, "to", "", "end (RFC 3339, exclusive)")
	read.Flags().IntVar(&limit, "limit", 1000, "at most this many readings")
	read.Flags().StringVar(&resolution, "resolution", "raw", "raw, or aggregates at 15m, 1h, 1d or 1mo")
	read.Flags().StringVar(&purpose, "purpose", client.DefaultPurpose, "why the data is read; you need a grant for it")

	return []*cobra.Command{tenantCmd, subjectCmd, siteCmd, connCmd, devCmd, streamCmd, read, keysCommand(g), grantCommand(g, tenantFlag, &tenant), accessCommand(g, tenantFlag, &tenant), policyCommand(g)}
}

func printOffer(g *globals, w io.Writer, id registry.ConnectorID, token string, exp time.Time, v any) error {
	if g.json {
		return json.NewEncoder(w).Encode(v)
	}
	fmt.Fprintf(w, "connector %s\n\nEnrolment token (single use, expires %s):\n\n  %s\n\nOn the device: custos-agent enrol --hub %s --token <token>\n", id, when(exp), token, g.hub)
	return nil
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
