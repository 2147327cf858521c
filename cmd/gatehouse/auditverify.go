package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
)

const auditVerifySynopsis = `verify [--url URL | --data-dir DIR [--public-key HEX]]
            walk every segment of the audit log, its signed checkpoints and (over
            --url) the head anchored in etcd; exit non-zero naming the first broken record`

// auditVerifyTimeout bounds the Verify RPC: it reads the whole log.
const auditVerifyTimeout = 10 * time.Minute

// auditKeyFile is the audit signing key's name under `gatehouse up`'s <data-dir>/keys.
const auditKeyFile = "audit-signing.pem"

// auditVerify is `gatehouse audit verify`: against a running gateway (the Verify RPC, with the
// operator's credential; Cedar decides admin/audit.verify), or offline on a data directory
// (--data-dir: the log in <dir>/audit, the key that signs checkpoints from <dir>/keys as
// `gatehouse up` keeps it, or --public-key). Offline, the anchor in etcd is not read: it is
// the RPC's; the checkpoints file still shows a change with the chain recomputed and records
// cut off up to the last checkpoint.
func auditVerify(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gatehouse audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "the gateway (default $"+gatewayURLEnv+" or "+defaultURL+")")
	dataDir := fs.String("data-dir", "", "verify offline the log of this data directory (gatehouse up's --data-dir) instead of asking a gateway")
	pubKey := fs.String("public-key", "", "offline: the Ed25519 public key (hex, or a PEM file's path) checkpoints must be signed with (default: <data-dir>/keys/"+auditKeyFile+"'s)")
	every := fs.Int("checkpoint-records", auditsvc.DefaultCheckpointRecords, "offline: the log's --checkpoint-records; more records than this (plus --checkpoint-slack) after the last valid checkpoint is reported (0: not checked)")
	slack := fs.Int("checkpoint-slack", auditsvc.DefaultCheckpointSlack, "offline: records the signer may lag beyond --checkpoint-records (the log's --max-queue)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("audit verify: unexpected argument %q", fs.Arg(0))
	}
	if *every < 0 || *slack < 0 {
		return errors.New("audit verify: --checkpoint-records and --checkpoint-slack are not negative")
	}
	var resp *auditv1.VerifyResponse
	var where string
	if *dataDir != "" {
		if *url != "" {
			return errors.New("audit verify: --url or --data-dir, not both")
		}
		opts, err := offlineVerifyOptions(*dataDir, *pubKey)
		if err != nil {
			return err
		}
		opts.CheckpointRecords, opts.Slack = *every, *slack
		where = filepath.Join(*dataDir, "audit")
		if resp, err = auditsvc.VerifyDir(ctx, where, opts); err != nil {
			return fmt.Errorf("audit verify: %w", err)
		}
		if opts.PublicKey == nil {
			fmt.Fprintln(stdout, "warning: no public key (--public-key): checkpoints are checked against the key they name, which shows accidents, not edits")
		}
	} else {
		if *pubKey != "" {
			return errors.New("audit verify: --public-key is for --data-dir; a gateway verifies against its own key")
		}
		base, hc, err := adminClient("audit verify", *url, getenv, auditVerifyTimeout)
		if err != nil {
			return err
		}
		where = base
		r, err := auditv1connect.NewAuditServiceClient(hc, base).Verify(ctx, connect.NewRequest(&auditv1.VerifyRequest{}))
		if err != nil {
			var ce *connect.Error
			if errors.As(err, &ce) && ce.Code() == connect.CodeUnauthenticated {
				return fmt.Errorf("audit verify: the gateway refused the admin credential (%s): %s", adminTokenEnv, ce.Message())
			}
			return fmt.Errorf("audit verify: %w", err)
		}
		resp = r.Msg
	}
	return reportVerify(stdout, where, resp)
}

// offlineVerifyOptions finds the public key for an offline verification.
func offlineVerifyOptions(dataDir, pubKey string) (auditsvc.VerifyOptions, error) {
	var opts auditsvc.VerifyOptions
	switch {
	case pubKey != "":
		s := pubKey
		if b, err := os.ReadFile(pubKey); err == nil {
			s = string(b)
		}
		k, err := auditsvc.ParsePublicKey(s)
		if err != nil {
			return opts, fmt.Errorf("audit verify: --public-key: %w", err)
		}
		opts.PublicKey = k
	default:
		path := filepath.Join(dataDir, "keys", auditKeyFile)
		if _, err := os.Stat(path); err != nil {
			return opts, nil
		}
		k, err := auditsvc.LoadSigningKey(path)
		if err != nil {
			return opts, fmt.Errorf("audit verify: %w", err)
		}
		opts.PublicKey = k.Public().(ed25519.PublicKey)
	}
	return opts, nil
}

// reportVerify prints what Verify found and fails naming the first problem.
func reportVerify(w io.Writer, where string, r *auditv1.VerifyResponse) error {
	for _, p := range r.GetProblems() {
		fmt.Fprintf(w, "%s: %s (sequence %d, line %d, byte offset %d): %s\n", p.GetKind(), p.GetSegment(), p.GetSequence(), p.GetLine(), p.GetOffset(), p.GetReason())
	}
	anchor := "no anchor"
	if a := r.GetAnchor(); a != nil {
		anchor = fmt.Sprintf("anchor at sequence %d", a.GetSequence())
	}
	fmt.Fprintf(w, "%s: %d records in %d segments, %d checkpoints verified (the last at sequence %d), %s\n",
		where, r.GetRecords(), len(r.GetSegments()), r.GetCheckpoints(), r.GetLastCheckpoint().GetSequence(), anchor)
	for _, n := range r.GetNotes() {
		fmt.Fprintln(w, "note: "+n)
	}
	if len(r.GetProblems()) == 0 {
		fmt.Fprintln(w, "ok: the audit log verifies")
		return nil
	}
	p := r.GetProblems()[0]
	return fmt.Errorf("audit verify: %d problems; the first: %s in %s at sequence %d (line %d): %s",
		len(r.GetProblems()), p.GetKind(), p.GetSegment(), p.GetSequence(), p.GetLine(), p.GetReason())
}
