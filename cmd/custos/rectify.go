package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/client"
	"github.com/custos-iot/custos/internal/registry"
	"github.com/custos-iot/custos/internal/rights"
	"github.com/custos-iot/custos/internal/series"
)

// rectifyCommands are `rights rectify` and `rights fulfil`. tenant returns
// the value of --tenant; by points to the value of --by.
func rectifyCommands(g *globals, tenant func() registry.TenantID, by *string) []*cobra.Command {
	var stream, file, grounds string
	var deletes []string
	var apply bool
	rectify := &cobra.Command{
		Use:   "rectify SUBJECT --stream STREAM --file corrections.csv|json --grounds TEXT",
		Short: "Rectification (art. 16): submit corrected readings of a subject's stream (and ranges to delete), optionally apply them",
		Long: `Opens a rectification request for the subject's stream with the corrections
in --file and the ranges given with --delete, submitting them in parts with a
progress bar. With --apply the request is applied at once: the stored readings
take the corrected values (or are deleted) and every rollup bucket they fall in
is recomputed, at every resolution; otherwise apply it later with
"custos rights fulfil SUBJECT REQUEST" (e.g. after the DPO checked it).

The file is CSV ("time,value" per line; time in Unix ms or RFC 3339; a header
line and further columns are allowed, so an export's readings CSV can be edited
and sent back) or JSON ({"corrections": [{"t": time, "v": value}, ...],
"delete": [{"from": time, "to": time}, ...]}).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if stream == "" || grounds == "" {
				return errors.New("--stream and --grounds are required")
			}
			var in rights.CorrectionsFile
			if file != "" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				in, err = rights.ParseCorrections(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
			}
			for _, d := range deletes {
				r, err := parseRange(d)
				if err != nil {
					return err
				}
				in.Delete = append(in.Delete, r)
			}
			if len(in.Corrections) == 0 && len(in.Delete) == 0 {
				return errors.New("nothing to rectify: give --file with corrections or --delete FROM/TO")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			b := newBar(cmd.ErrOrStderr())
			share := 1.0
			if apply {
				share = 0.8
			}
			total := len(in.Corrections)
			b.step(fmt.Sprintf("submitting %d corrections", total), 0, 1)
			subject := registry.SubjectID(args[0])
			req, err := c.RequestRectification(ctx, tenant(), client.Rectification{Subject: subject, Stream: registry.StreamID(stream), RequestedBy: rights.Requester(*by),
				Grounds: grounds, Corrections: in.Corrections, Delete: in.Delete}, func(done, total int) {
				b.label = fmt.Sprintf("submitted %d of %d corrections", done, total)
				b.draw(share * float64(done) / float64(max(total, 1)))
			})
			if err != nil {
				fmt.Fprintln(b.w)
				if req.ID != "" {
					return fmt.Errorf("request %s is open with the corrections submitted so far: %w", req.ID, err)
				}
				return err
			}
			if apply {
				b.label = "applying: re-sealing readings, recomputing rollups"
				b.draw(share)
				id := req.ID
				if req, err = c.FulfilRightsRequest(ctx, tenant(), subject, id); err != nil {
					fmt.Fprintln(b.w)
					return fmt.Errorf("request %s is open; it was not applied and nothing changed: %w", id, err)
				}
			}
			b.step("done", 1, 1)
			return showRectification(g, cmd.OutOrStdout(), req, args[0])
		},
	}
	rectify.Flags().StringVar(&stream, "stream", "", "the subject's stream whose readings are inaccurate")
	rectify.Flags().StringVar(&file, "file", "", "corrections file (CSV or JSON)")
	rectify.Flags().StringVar(&grounds, "grounds", "", "why the readings are inaccurate (kept with the request)")
	rectify.Flags().StringArrayVar(&deletes, "delete", nil, "a range FROM/TO (Unix ms or RFC 3339, TO excluded) of readings to delete as wrong; repeatable")
	rectify.Flags().BoolVar(&apply, "apply", false, "apply the request at once")

	fulfil := &cobra.Command{
		Use:   "fulfil SUBJECT REQUEST",
		Short: "Carry out a request: apply a rectification, build an access/portability archive, or erase",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.FulfilRightsRequest(cmd.Context(), tenant(), registry.SubjectID(args[0]), rights.RequestID(args[1]))
			if err != nil {
				return err
			}
			if r.Kind == rights.Rectification {
				return showRectification(g, cmd.OutOrStdout(), r, args[0])
			}
			if g.json {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "request %s %s; evidence: %s\n", r.ID, r.Status, r.Evidence)
			return nil
		},
	}
	return []*cobra.Command{rectify, fulfil}
}

// parseRange parses FROM/TO (or FROM,TO).
func parseRange(s string) (series.TimeRange, error) {
	from, to, ok := strings.Cut(s, "/")
	if !ok {
		from, to, ok = strings.Cut(s, ",")
	}
	if !ok {
		return series.TimeRange{}, fmt.Errorf("--delete %q: want FROM/TO", s)
	}
	f, err := rights.ParseTime(from)
	if err != nil {
		return series.TimeRange{}, fmt.Errorf("--delete %q: %v", s, err)
	}
	t, err := rights.ParseTime(to)
	if err != nil {
		return series.TimeRange{}, fmt.Errorf("--delete %q: %v", s, err)
	}
	return series.TimeRange{From: f, To: t}, nil
}

func showRectification(g *globals, w io.Writer, r rights.Request, subject string) error {
	if g.json {
		return json.NewEncoder(w).Encode(r)
	}
	rc := r.Rectification
	if r.Status != rights.Done || rc == nil {
		n, del := 0, 0
		if rc != nil {
			n, del = rc.Corrections, len(rc.Delete)
		}
		fmt.Fprintf(w, "request %s %s: %d corrections and %d delete ranges for stream %s, due %s\napply it with: custos rights fulfil %s %s\n",
			r.ID, r.Status, n, del, streamOf(rc), when(r.Due), subject, r.ID)
		return nil
	}
	var ev rights.RectificationEvidence
	if err := json.Unmarshal(r.Evidence, &ev); err != nil {
		return fmt.Errorf("request %s: unreadable evidence: %w", r.ID, err)
	}
	count := map[string]int{}
	for _, run := range ev.Recomputed {
		count[string(run.Res)] += run.Buckets
	}
	fmt.Fprintf(w, "request %s done: stream %s, %d readings corrected, %d deleted, %d chunks re-sealed; buckets recomputed: %d×15m, %d×1h, %d×1d, %d×1mo\n",
		r.ID, ev.Stream, ev.Corrected, ev.Deleted, ev.Chunks, count["15m"], count["1h"], count["1d"], count["1mo"])
	return nil
}

func streamOf(rc *rights.RectificationClaim) registry.StreamID {
	if rc == nil {
		return ""
	}
	return rc.Stream
}
