package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/consent"
	"github.com/custos-iot/custos/internal/hub"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/rollup"
)

// newDatamap prints the hub's data map; it needs no running hub.
func newDatamap() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "datamap",
		Short: "Print the data map: every store of personal data, its categories and handlers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := hub.DataMap(nil).Describe()
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(d)
			}
			w := cmd.OutOrStdout()
			for _, s := range d.Stores {
				fmt.Fprintf(w, "%-18s export=%-5v erase=%-5v %s\n", s.Name, s.Export, s.Erase, strings.Join(s.Categories, "; "))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON on one line")
	return c
}

// consentCommands are the purpose, consent and rights commands.
func consentCommands(g *globals) []*cobra.Command {
	var tenant string
	tflag := func(cs ...*cobra.Command) {
		for _, c := range cs {
			c.Flags().StringVar(&tenant, "tenant", os.Getenv("CUSTOS_TENANT"), "tenant ID (env CUSTOS_TENANT)")
			c.PreRunE = func(*cobra.Command, []string) error {
				if tenant == "" {
					return errors.New("--tenant (or CUSTOS_TENANT) is required")
				}
				return nil
			}
		}
	}
	tp := func() string { return "/v1/tenants/" + tenant }
	sp := func(s string) string { return tp() + "/subjects/" + s }

	// purpose
	purposeCmd := &cobra.Command{Use: "purpose", Short: "Manage a tenant's purposes (lawful basis, categories, notice)"}
	var p consent.Purpose
	var cats []string
	var basis, finest, noticeFile string
	add := &cobra.Command{
		Use: "add PURPOSE", Short: "Add a purpose, or a new version of it", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			p.ID, p.Basis, p.Finest = consent.PurposeID(args[0]), consent.Basis(basis), rollup.Resolution(finest)
			for _, x := range cats {
				p.Categories = append(p.Categories, registry.Category(x))
			}
			if noticeFile != "" {
				b, err := os.ReadFile(noticeFile)
				if err != nil {
					return err
				}
				p.Notice = string(b)
			}
			var out consent.Purpose
			if err := c.Do(cmd.Context(), "POST", tp()+"/purposes", p, &out); err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), out, []string{"PURPOSE", "VERSION", "BASIS"}, func(int) []string { return []string{string(out.ID), fmt.Sprint(out.Version), string(out.Basis)} }, 1)
		},
	}
	add.Flags().StringVar(&basis, "basis", "consent", "lawful basis: consent, contract, legal-obligation, vital-interest, public-task, legitimate-interest")
	add.Flags().StringSliceVar(&cats, "category", nil, "data category (repeat)")
	add.Flags().StringSliceVar(&p.Recipients, "recipient", nil, "recipient of the data (repeat)")
	add.Flags().IntVar(&p.RetentionDays, "retention-days", 365, "retention in days")
	add.Flags().StringVar(&finest, "finest", "15m", "finest resolution the purpose needs: raw, 15m, 1h, 1d, 1mo")
	add.Flags().StringVar(&p.Notice, "notice", "", "notice text shown to the data subject")
	add.Flags().StringVar(&noticeFile, "notice-file", "", "read the notice text from a file")
	plist := &cobra.Command{
		Use: "list", Short: "List purposes (newest versions)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var ps []consent.Purpose
			if err := c.Do(cmd.Context(), "GET", tp()+"/purposes", nil, &ps); err != nil {
				return err
			}
			return g.show(cmd.OutOrStdout(), ps, []string{"PURPOSE", "VERSION", "BASIS", "FINEST", "RETENTION", "CATEGORIES"}, func(i int) []string {
				var cs []string
				for _, c := range ps[i].Categories {
					cs = append(cs, string(c))
				}
				return []string{string(ps[i].ID), fmt.Sprint(ps[i].Version), string(ps[i].Basis), string(ps[i].Finest), fmt.Sprintf("%dd", ps[i].RetentionDays), strings.Join(cs, ",")}
			}, len(ps))
		},
	}
	var version int
	notice := &cobra.Command{
		Use: "notice PURPOSE", Short: "Print a purpose's notice (newest, or --version)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			path := tp() + "/purposes/" + args[0]
			if version > 0 {
				path += fmt.Sprintf("?version=%d", version)
			}
			var out consent.Purpose
			if err := c.Do(cmd.Context(), "GET", path, nil, &out); err != nil {
				return err
			}
			if g.json {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s version %d (%s)\n\n%s\n", out.ID, out.Version, out.Basis, out.Notice)
			return nil
		},
	}
	notice.Flags().IntVar(&version, "version", 0, "notice version (default: newest)")
	tflag(add, plist, notice)
	purposeCmd.AddCommand(add, plist, notice)

	// consent
	consentCmd := &cobra.Command{Use: "consent", Short: "Record and withdraw consents; keep and verify receipts"}
	var method, receiptOut string
	var expires time.Duration
	saveReceipt := func(cmd *cobra.Command, ans api.ConsentAnswer) error {
		if receiptOut != "" {
			if err := os.WriteFile(receiptOut, []byte(ans.Receipt), 0o600); err != nil {
				return err
			}
		}
		if g.json {
			return json.NewEncoder(cmd.OutOrStdout()).Encode(ans)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "consent %s: %s for %s (notice version %d)\n", ans.Record.ID, ans.Record.Event, ans.Record.Purpose, ans.Record.NoticeVersion)
		if receiptOut == "" {
			fmt.Fprint(cmd.OutOrStdout(), "\n"+ans.Receipt)
		}
		return nil
	}
	give := &cobra.Command{
		Use: "give SUBJECT PURPOSE", Short: "Record a subject's consent to a purpose (prints the signed receipt)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			in := map[string]any{"purpose": args[1], "method": method}
			if expires > 0 {
				in["expires"] = time.Now().Add(expires).UTC()
			}
			var ans api.ConsentAnswer
			if err := c.Do(cmd.Context(), "POST", sp(args[0])+"/consents", in, &ans); err != nil {
				return err
			}
			return saveReceipt(cmd, ans)
		},
	}
	give.Flags().DurationVar(&expires, "expires-in", 0, "consent expires after this duration (default: no expiry)")
	withdraw := &cobra.Command{
		Use: "withdraw SUBJECT PURPOSE", Short: "Record the withdrawal of a consent (prints the signed receipt)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var ans api.ConsentAnswer
			if err := c.Do(cmd.Context(), "POST", sp(args[0])+"/consents/"+args[1]+"/withdraw", map[string]any{"method": method}, &ans); err != nil {
				return err
			}
			return saveReceipt(cmd, ans)
		},
	}
	for _, c := range []*cobra.Command{give, withdraw} {
		c.Flags().StringVar(&method, "method", "web-form", "how it was expressed: web-form, app, paper, verbal, ...")
		c.Flags().StringVar(&receiptOut, "receipt", "", "write the signed receipt to this file")
	}
	clist := &cobra.Command{
		Use: "list SUBJECT", Short: "Show a subject's consents and their history", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var out api.Consents
			if err := c.Do(cmd.Context(), "GET", sp(args[0])+"/consents", nil, &out); err != nil {
				return err
			}
			h := out.History
			return g.show(cmd.OutOrStdout(), out, []string{"RECORD", "PURPOSE", "NOTICE", "EVENT", "METHOD", "AT", "EXPIRES"}, func(i int) []string {
				return []string{string(h[i].ID), string(h[i].Purpose), fmt.Sprint(h[i].NoticeVersion), string(h[i].Event), string(h[i].Method), when(h[i].At), when(h[i].Expires)}
			}, len(h))
		},
	}
	receipt := &cobra.Command{
		Use: "receipt SUBJECT RECORD", Short: "Print the signed receipt of a consent record", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			_, err = c.Raw(cmd.Context(), "GET", sp(args[0])+"/consents/"+args[1]+"/receipt", cmd.OutOrStdout())
			return err
		},
	}
	var keyFile, key string
	verify := &cobra.Command{
		Use:   "verify-receipt FILE",
		Short: "Verify a consent receipt offline against the hub's receipt key",
		Long:  "Verify a consent receipt offline. The key is the hub's receipt verifier key (GET /v1/consent/key, or <data dir>/consent/receipt.pub).",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			msg, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if key == "" {
				b, err := os.ReadFile(keyFile)
				if err != nil {
					return fmt.Errorf("receipt key: %w", err)
				}
				key = strings.TrimSpace(string(b))
			}
			rc, err := consent.VerifyReceipt(msg, key)
			if err != nil {
				return err
			}
			if g.json {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(rc)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "receipt OK: %s %s consent to %s (notice version %d, sha256 %s…) at %s by %s\n",
				rc.Subject, rc.Event, rc.Purpose, rc.NoticeVersion, rc.NoticeSHA256[:12], when(rc.At), rc.Method)
			return nil
		},
	}
	verify.Flags().StringVar(&keyFile, "key-file", "custos-data/consent/receipt.pub", "file holding the receipt verifier key")
	verify.Flags().StringVar(&key, "key", "", "the receipt verifier key itself")
	tflag(give, withdraw, clist, receipt)
	consentCmd.AddCommand(give, withdraw, clist, receipt, verify)

	// rights
	rightsCmd := &cobra.Command{Use: "rights", Short: "Data subjects' rights requests (access, portability, rectification, erasure, restriction, objection)"}
	var by, purpose, out string
	open := func(ctx context.Context, subject string, kind rights.Kind) (rights.Request, error) {
		c, err := g.client()
		if err != nil {
			return rights.Request{}, err
		}
		in := map[string]any{"kind": kind, "requested_by": by}
		if purpose != "" {
			in["purpose"] = purpose
		}
		var r rights.Request
		err = c.Do(ctx, "POST", sp(subject)+"/rights", in, &r)
		return r, err
	}
	request := &cobra.Command{
		Use: "request SUBJECT KIND", Short: "Open a rights request (access, portability, erasure, restriction, objection; for rectification see rights rectify)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := open(cmd.Context(), args[0], rights.Kind(args[1]))
			if err != nil {
				return err
			}
			return showRequests(g, cmd.OutOrStdout(), []rights.Request{r})
		},
	}
	request.Flags().StringVar(&purpose, "purpose", "", "purpose restricted or objected to")
	rlist := &cobra.Command{
		Use: "list [SUBJECT]", Short: "List rights requests with their deadlines", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			path := tp() + "/rights"
			if len(args) == 1 {
				path = sp(args[0]) + "/rights"
			}
			var rs []rights.Request
			if err := c.Do(cmd.Context(), "GET", path, nil, &rs); err != nil {
				return err
			}
			return showRequests(g, cmd.OutOrStdout(), rs)
		},
	}
	var reason string
	status := &cobra.Command{
		Use: "status SUBJECT REQUEST STATUS", Short: "Set a request's status (in-progress, done, refused --reason)", Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var r rights.Request
			if err := c.Do(cmd.Context(), "POST", sp(args[0])+"/rights/"+args[1]+"/status", map[string]string{"status": args[2], "reason": reason}, &r); err != nil {
				return err
			}
			return showRequests(g, cmd.OutOrStdout(), []rights.Request{r})
		},
	}
	status.Flags().StringVar(&reason, "reason", "", "reason of a refusal")
	export := &cobra.Command{
		Use:   "export SUBJECT",
		Short: "Access/portability: build the archive of all of a subject's data and download it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			bar := newBar(cmd.ErrOrStderr())
			bar.step("opening the request", 0, 3)
			r, err := open(cmd.Context(), args[0], rights.Portability)
			if err != nil {
				return err
			}
			bar.step("exporting every store of the data map", 1, 3)
			base := sp(args[0]) + "/rights/" + string(r.ID)
			if err := c.Do(cmd.Context(), "POST", base+"/fulfil", nil, &r); err != nil {
				return err
			}
			var ev api.ExportEvidence
			json.Unmarshal(r.Evidence, &ev)
			bar.step("downloading the archive", 2, 3)
			if out == "" {
				out = args[0] + "-" + string(r.ID) + ".zip"
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			pw := &progressWriter{w: f, bar: bar, total: ev.Bytes}
			if _, err := c.Raw(cmd.Context(), "GET", base+"/archive", pw); err != nil {
				os.Remove(out)
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			bar.step("done", 3, 3)
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d stores, %s, sha256 %s (request %s)\n", out, len(ev.Stores), bytesHuman(ev.Bytes), ev.SHA256, r.ID)
			return nil
		},
	}
	export.Flags().StringVarP(&out, "output", "o", "", "archive file (default SUBJECT-REQUEST.zip)")
	erase := &cobra.Command{
		Use:   "erase SUBJECT",
		Short: "Erasure: crypto-shred the subject and run every data-map store's erase handler, with evidence",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := open(cmd.Context(), args[0], rights.Erasure)
			if err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), "POST", sp(args[0])+"/rights/"+string(r.ID)+"/fulfil", nil, &r); err != nil {
				return err
			}
			if g.json {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "request %s %s; evidence: %s\n", r.ID, r.Status, r.Evidence)
			return nil
		},
	}
	rect := rectifyCommands(g, func() registry.TenantID { return registry.TenantID(tenant) }, &by)
	for _, c := range []*cobra.Command{request, export, erase, rect[0]} {
		c.Flags().StringVar(&by, "by", "subject", "who asked: subject, admin or dpo")
	}
	tflag(request, rlist, status, export, erase, rect[0], rect[1])
	rightsCmd.AddCommand(request, rlist, status, export, erase, rect[0], rect[1])
	return []*cobra.Command{purposeCmd, consentCmd, rightsCmd}
}

func showRequests(g *globals, w io.Writer, rs []rights.Request) error {
	now := time.Now()
	return g.show(w, rs, []string{"ID", "SUBJECT", "KIND", "BY", "STATUS", "OPENED", "DUE", "REASON"}, func(i int) []string {
		st := string(rs[i].Status)
		if rs[i].Overdue(now) {
			st += " (OVERDUE)"
		}
		return []string{string(rs[i].ID), string(rs[i].Subject), string(rs[i].Kind), string(rs[i].RequestedBy), st, when(rs[i].Opened), when(rs[i].Due), rs[i].Reason}
	}, len(rs))
}

// bar is a one-line progress bar on the terminal's error stream.
type bar struct {
	w     io.Writer
	label string
}

func newBar(w io.Writer) *bar { return &bar{w: w} }

func (b *bar) step(label string, done, total int) {
	b.label = label
	b.draw(float64(done) / float64(total))
	if done == total {
		fmt.Fprintln(b.w)
	}
}

func (b *bar) draw(frac float64) {
	frac = min(max(frac, 0), 1)
	const width = 30
	n := int(frac * width)
	fmt.Fprintf(b.w, "\r[%s%s] %3.0f%% %-40s", strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100, b.label)
}

// progressWriter advances the bar through the download (the last third).
type progressWriter struct {
	w     io.Writer
	bar   *bar
	total int64
	done  int64
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.total > 0 {
		p.bar.draw((2 + float64(p.done)/float64(p.total)) / 3)
	}
	return n, err
}
