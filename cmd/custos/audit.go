package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/custos-iot/custos/internal/audit"
)

// keyArg reads a note key given inline or as @file.
func keyArg(v string) (string, error) {
	if f, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	return v, nil
}

func newAudit(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The tamper-evident audit log: export, verify offline, witness"}

	var out string
	var from, to int64
	export := &cobra.Command{
		Use:   "export",
		Short: "Export the audit log (or a range) with a fresh signed checkpoint, for offline verification",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if out == "" {
				return errors.New("--out is required")
			}
			path := "/v1/audit/export"
			var q []string
			if from >= 0 {
				q = append(q, fmt.Sprintf("from=%d", from))
			}
			if to >= 0 {
				q = append(q, fmt.Sprintf("to=%d", to))
			}
			if len(q) > 0 {
				path += "?" + strings.Join(q, "&")
			}
			var b bytes.Buffer
			if _, err := c.Raw(cmd.Context(), "GET", path, &b); err != nil {
				return err
			}
			if err := os.WriteFile(out, b.Bytes(), 0o600); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (%d bytes)\n", out, b.Len())
			return nil
		},
	}
	export.Flags().StringVar(&out, "out", "", "bundle file to write")
	export.Flags().Int64Var(&from, "from", -1, "first entry (default 0)")
	export.Flags().Int64Var(&to, "to", -1, "end of the range, exclusive (default: the whole log)")

	var bundle, logKey, checkpoint string
	var witnessKeys []string
	var quorum int
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify an exported audit log offline: no network, no hub",
		Long: `Recompute the Merkle tree from the exported entries, check the checkpoint's signature with
the log's public key (and witnesses' cosignatures, if a quorum is asked for), and check that
the entries reproduce the signed root. With --checkpoint, the export must also be consistent
with a checkpoint you saved earlier (a fork or a rewrite is reported). Says exactly what is
wrong if anything is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := keyArg(logKey)
			if err != nil {
				return err
			}
			var wkeys []string
			for _, k := range witnessKeys {
				wk, err := keyArg(k)
				if err != nil {
					return err
				}
				wkeys = append(wkeys, wk)
			}
			var saved []byte
			if checkpoint != "" {
				if saved, err = os.ReadFile(checkpoint); err != nil {
					return err
				}
			}
			f, err := os.Open(bundle)
			if err != nil {
				return err
			}
			defer f.Close()
			rep, err := audit.Verify(f, saved, key, wkeys, quorum)
			w := cmd.OutOrStdout()
			for _, p := range rep.Problems {
				fmt.Fprintf(w, "PROBLEM: %v\n", p)
			}
			if err != nil {
				return fmt.Errorf("audit log does not verify: %w", err)
			}
			fmt.Fprintf(w, "ok: %s, entries %d to %d of a tree of %d, root %x, %d witness cosignatures\n",
				rep.Origin, rep.From, rep.To, rep.Size, rep.Root, rep.Witnesses)
			return nil
		},
	}
	verify.Flags().StringVar(&bundle, "bundle", "", "exported bundle")
	verify.Flags().StringVar(&logKey, "key", "", "the log's public key, or @file (the hub serves it at /v1/audit/key)")
	verify.Flags().StringVar(&checkpoint, "checkpoint", "", "a checkpoint saved earlier that the export must be consistent with")
	verify.Flags().StringSliceVar(&witnessKeys, "witness-key", nil, "a witness's public key, or @file (repeatable)")
	verify.Flags().IntVar(&quorum, "quorum", 0, "how many witnesses must have cosigned")
	verify.MarkFlagRequired("bundle")
	verify.MarkFlagRequired("key")

	var state, witnessKey, cosigned string
	var newKey string
	var post bool
	witness := &cobra.Command{
		Use:   "witness",
		Short: "Act as an independent witness: check the log only grows, then cosign its checkpoint",
		Long: `Fetch the hub's latest checkpoint, verify the log's signature, verify that it is consistent
with the last checkpoint this witness accepted (its state file), and cosign it with the
witness's own key. A rollback, a fork or a wrong key is refused and the state is kept.
Run it on your own machine, e.g. from cron. --new-key NAME creates a witness key pair.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if newKey != "" {
				skey, vkey, err := audit.GenerateKey(rand.Reader, newKey)
				if err != nil {
					return err
				}
				if err := os.WriteFile(witnessKey, []byte(skey+"\n"), 0o600); err != nil {
					return err
				}
				if err := os.WriteFile(witnessKey+".pub", []byte(vkey+"\n"), 0o644); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "witness key written to %s; its public key (also in %s.pub), for the hub's --audit-witness:\n%s\n", witnessKey, witnessKey, vkey)
				return nil
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			key, err := keyArg(logKey)
			if err != nil {
				return err
			}
			lv, err := audit.NewVerifier(key)
			if err != nil {
				return fmt.Errorf("log key: %w", err)
			}
			sk, err := keyArg("@" + witnessKey)
			if err != nil {
				return err
			}
			signer, err := audit.NewSigner(sk)
			if err != nil {
				return fmt.Errorf("witness key: %w", err)
			}
			wt, err := audit.NewWitness(audit.WitnessConfig{Log: lv, Signer: signer, StatePath: state, Source: c})
			if err != nil {
				return err
			}
			cp, err := wt.Update(cmd.Context())
			if err != nil {
				return fmt.Errorf("refused to cosign: %w", err)
			}
			if post {
				if err := c.Cosign(cmd.Context(), cp); err != nil {
					return fmt.Errorf("hand the cosignature to the hub: %w", err)
				}
			}
			if cosigned != "" {
				return os.WriteFile(cosigned, cp, 0o644)
			}
			_, err = cmd.OutOrStdout().Write(cp)
			return err
		},
	}
	witness.Flags().StringVar(&logKey, "log-key", "", "the log's public key, or @file")
	witness.Flags().StringVar(&witnessKey, "key", "witness.key", "this witness's private key file")
	witness.Flags().StringVar(&state, "state", "witness.state", "the last checkpoint this witness accepted")
	witness.Flags().StringVar(&cosigned, "out", "", "write the cosigned checkpoint here (default stdout)")
	witness.Flags().StringVar(&newKey, "new-key", "", "create a witness key pair with this name and exit")
	witness.Flags().BoolVar(&post, "post", false, "also hand the cosigned checkpoint to the hub, which serves it at /v1/audit/checkpoint/cosigned")
	cmd.AddCommand(export, verify, witness)
	return cmd
}
