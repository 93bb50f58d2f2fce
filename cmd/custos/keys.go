package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/api"
	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/registry"
)

// keysCommand is "custos keys": status, rotate (the KEK) and roll (subject
// keys). Long jobs run in the hub; the CLI polls GET /v1/keys and shows a
// progress bar until the job ends (or returns at once with --no-wait).
func keysCommand(g *globals) *cobra.Command {
	keysCmd := &cobra.Command{Use: "keys", Short: "Key management: status, KEK rotation, subject key rolls"}
	keysCmd.AddCommand(&cobra.Command{
		Use: "status", Short: "Show the key store: subjects, KEK versions, rolls and jobs in progress", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var st api.KeyOverview
			if err := c.Do(cmd.Context(), "GET", "/v1/keys", nil, &st); err != nil {
				return err
			}
			if g.json {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printKeyStatus(cmd.OutOrStdout(), st)
			return nil
		},
	})

	var noWait bool
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate the key-encryption key online: new KEK version, every subject keyset rewrapped under it",
		Long: `Creates a new KEK version (a new kek-<n>.json in the key directory, or a new
HSM key label <label>-<n>), makes it current at once and rewraps every subject
keyset under it in the background, while the hub keeps serving. When the job is
done, no keyset is wrapped under the earlier KEK versions any more (see
"custos keys status": by_kek) and they can be removed (docs/keys-and-backup.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var job api.KeyJob
			if err := c.Do(cmd.Context(), "POST", "/v1/keys/rotate-kek", nil, &job); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "new KEK %s is current; rewrapping subject keysets\n", job.KEK)
			return followJob(cmd, g, c, job, noWait)
		},
	}
	rotate.Flags().BoolVar(&noWait, "no-wait", false, "start the job and return; follow it with custos keys status")
	keysCmd.AddCommand(rotate)

	var subjects []string
	var all, rollNoWait bool
	roll := &cobra.Command{
		Use:   "roll (--subject S ... | --all)",
		Short: "Roll subject keys online: new primary key, stored data re-sealed under it, old keys retired",
		Long: `Gives each subject's keyset a new primary key (new data is sealed under it at
once), re-seals the subject's stored profile, landed blocks, chunks and rollups
under it in small transactions while the hub keeps serving, and then retires
(destroys) the old keys. Data that was sealed under the old keys only, such as
copies in old data backups, becomes unreadable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all == (len(subjects) > 0) {
				return errors.New("give --subject (repeatable) or --all")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			req := api.RollRequest{All: all}
			for _, s := range subjects {
				req.Subjects = append(req.Subjects, registry.SubjectID(s))
			}
			var job api.KeyJob
			if err := c.Do(cmd.Context(), "POST", "/v1/keys/roll", req, &job); err != nil {
				return err
			}
			return followJob(cmd, g, c, job, rollNoWait)
		},
	}
	roll.Flags().StringSliceVar(&subjects, "subject", nil, "subject ID (repeatable, or comma-separated)")
	roll.Flags().BoolVar(&all, "all", false, "roll the keys of every subject")
	roll.Flags().BoolVar(&rollNoWait, "no-wait", false, "start the job and return; follow it with custos keys status")
	keysCmd.AddCommand(roll)
	return keysCmd
}

// followJob polls GET /v1/keys and draws a progress bar on stderr until the
// job of the started kind ends. It fails if the job failed.
func followJob(cmd *cobra.Command, g *globals, c *client.Client, job api.KeyJob, noWait bool) error {
	out := cmd.OutOrStdout()
	if noWait {
		if g.json {
			return json.NewEncoder(out).Encode(job)
		}
		fmt.Fprintf(out, "%s job started; follow it with: custos keys status\n", job.Kind)
		return nil
	}
	ctx := cmd.Context()
	bar := &progressBar{w: cmd.ErrOrStderr(), start: time.Now()}
	for {
		var st api.KeyOverview
		if err := c.Do(ctx, "GET", "/v1/keys", nil, &st); err != nil {
			return err
		}
		for _, j := range st.Jobs {
			if j.Kind == job.Kind && j.Started.Equal(job.Started) {
				job = j
			}
		}
		bar.draw(job)
		if job.State != "running" {
			bar.end()
			break
		}
		select {
		case <-ctx.Done():
			bar.end()
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if g.json {
		if err := json.NewEncoder(out).Encode(job); err != nil {
			return err
		}
	} else {
		printJob(out, job)
	}
	if job.State == "failed" {
		return fmt.Errorf("%s job failed: %s", job.Kind, job.Error)
	}
	return nil
}

// progressBar draws one line, redrawn in place: phase, bar, count, rate
// and the time left. (go.mod has no progress bar module; this is all the
// CLI needs.)
type progressBar struct {
	w     io.Writer
	start time.Time
	drawn bool
}

func (b *progressBar) draw(j api.KeyJob) {
	const width = 30
	frac := 0.0
	if j.Total > 0 {
		frac = min(float64(j.Done)/float64(j.Total), 1)
	}
	filled := int(frac * width)
	eta := ""
	if el := time.Since(b.start); j.Done > 0 && j.Done < j.Total {
		left := time.Duration(float64(el) / float64(j.Done) * float64(j.Total-j.Done))
		eta = " ~" + left.Round(time.Second).String() + " left"
	}
	fmt.Fprintf(b.w, "\r%-28s [%s%s] %d/%d%s\x1b[K", describe(j), strings.Repeat("=", filled), strings.Repeat(" ", width-filled), j.Done, j.Total, eta)
	b.drawn = true
}

func (b *progressBar) end() {
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}

func describe(j api.KeyJob) string {
	if j.Phase == "" {
		return j.Kind
	}
	return j.Kind + " (" + j.Phase + ")"
}

func printJob(w io.Writer, j api.KeyJob) {
	fmt.Fprintf(w, "%s: %s, %d of %d", j.Kind, j.State, j.Done, j.Total)
	if j.Phase != "" {
		fmt.Fprintf(w, ", %s", j.Phase)
	}
	if j.Kind == "roll" {
		fmt.Fprintf(w, "; %d values re-sealed, %d subjects retired", j.Resealed, j.Retired)
		if j.Skipped > 0 {
			fmt.Fprintf(w, ", %d skipped (erased)", j.Skipped)
		}
		if j.Unreadable > 0 {
			fmt.Fprintf(w, ", %d unreadable values left alone", j.Unreadable)
		}
	}
	if j.KEK != "" {
		fmt.Fprintf(w, "; KEK %s", j.KEK)
	}
	if j.Error != "" {
		fmt.Fprintf(w, "; error: %s", j.Error)
	}
	fmt.Fprintln(w)
}

func printKeyStatus(w io.Writer, st api.KeyOverview) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "current KEK\t%s\n", st.Current)
	fmt.Fprintf(tw, "KEK versions loaded\t%s\n", strings.Join(st.KEKs, ", "))
	fmt.Fprintf(tw, "subjects with a key\t%d\n", st.Subjects)
	fmt.Fprintf(tw, "rolls not yet retired\t%d\n", st.Rolling)
	fmt.Fprintf(tw, "subjects erased\t%d\n", st.Destroyed)
	fmt.Fprintf(tw, "keys retired\t%d\n", st.Retired)
	tw.Flush()
	fmt.Fprintln(w, "\nkeysets per KEK:")
	ids := make([]string, 0, len(st.ByKEK))
	for id := range st.ByKEK {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, id := range ids {
		mark := ""
		if id == st.Current {
			mark = "  (current)"
		}
		fmt.Fprintf(tw, "  %s\t%d%s\n", id, st.ByKEK[id], mark)
	}
	tw.Flush()
	if len(st.Jobs) > 0 {
		fmt.Fprintln(w, "\njobs:")
		for _, j := range st.Jobs {
			fmt.Fprint(w, "  ")
			printJob(w, j)
		}
	}
}
