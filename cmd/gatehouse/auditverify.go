package main

import (
	"context"
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
	"github.com/gatehouse-mcp/gatehouse/internal/secret"
)

const auditVerifySynopsis = `verify [--url URL | --data-dir DIR [--public-key HEX|FILE | --no-key] | --postgres-dsn-file FILE [--data-dir DIR | --public-key HEX|FILE | --no-key]]
            walk every segment of the audit log, its signed checkpoints and (over
            --url) the head anchored in etcd; exit non-zero naming the first broken record`

// auditVerifyTimeout bounds the Verify RPC: it reads the whole log.
const auditVerifyTimeout = 10 * time.Minute

// auditKeyFile is the audit signing key's name under `gatehouse up`'s <data-dir>/keys.
const auditKeyFile = "audit-signing.pem"

// auditPubFile is its public half, written beside it when minted (auditsvc.PublicKeyFile).
const auditPubFile = "audit-signing.pub"

// auditVerify is `gatehouse audit verify`: against a running gateway (the Verify RPC, with the
// operator's credential; Cedar decides admin/audit.verify), or offline on a data directory
// (--data-dir: the log in <dir>/audit, checked against --public-key or the public key
// `gatehouse up` wrote when it minted the signing key, <dir>/keys/audit-signing.pub; without
// either it fails unless --no-key says to check checkpoints only against the key each names,
// which shows accidents, not edits). Offline, the anchor in etcd is not read: it is
// the RPC's; the checkpoints file still shows a change with the chain recomputed and records
// cut off up to the last checkpoint.
func auditVerify(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gatehouse audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "the gateway (default $"+gatewayURLEnv+" or "+defaultURL+")")
	dataDir := fs.String("data-dir", "", "verify offline the log of this data directory (gatehouse up's --data-dir) instead of asking a gateway")
	pubKey := fs.String("public-key", "", "offline: the Ed25519 public key (hex, or the path of a hex or PEM file) checkpoints must be signed with (default: <data-dir>/keys/"+auditPubFile+")")
	noKey := fs.Bool("no-key", false, "offline: verify without a trusted public key (checkpoints are checked against the key each names: accidents show, edits do not)")
	pgDSNFile := fs.String("postgres-dsn-file", "", "verify offline the log of auditsvc's --store postgres in the database this file's connection string names (a file only its owner can read)")
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
	if *pgDSNFile != "" {
		// The postgres store's checkpoints are signed as the files' are: the trusted key is
		// --public-key, else <data-dir>/keys/audit-signing.pub (gatehouse up --audit-store
		// postgres keeps its key there), else --no-key.
		if *url != "" {
			return errors.New("audit verify: --postgres-dsn-file verifies offline; not with --url")
		}
		if *dataDir == "" && *pubKey == "" && !*noKey {
			return errors.New("audit verify: --postgres-dsn-file needs the trusted public key: --public-key (hex, or its file), --data-dir (its keys/" + auditPubFile + "), or --no-key to check accidental damage only")
		}
		opts, err := offlineVerifyOptions(*dataDir, *pubKey, *noKey)
		if err != nil {
			return err
		}
		opts.CheckpointRecords, opts.Slack = *every, *slack
		dsn, err := secret.ReadFile(*pgDSNFile)
		if err != nil {
			return fmt.Errorf("audit verify: --postgres-dsn-file: %w", err)
		}
		if resp, err = auditsvc.VerifyPostgres(ctx, dsn, opts); err != nil {
			return fmt.Errorf("audit verify: %w", err)
		}
		if opts.PublicKey == nil {
			fmt.Fprintln(stdout, "warning: --no-key: checkpoints are checked against the key they name, which shows accidents, not edits")
		}
		return reportVerify(stdout, auditsvc.PostgresSegment, resp)
	}
	if *dataDir != "" {
		if *url != "" {
			return errors.New("audit verify: --url or --data-dir, not both")
		}
		opts, err := offlineVerifyOptions(*dataDir, *pubKey, *noKey)
		if err != nil {
			return err
		}
		opts.CheckpointRecords, opts.Slack = *every, *slack
		where = filepath.Join(*dataDir, "audit")
		if resp, err = auditsvc.VerifyDir(ctx, where, opts); err != nil {
			return fmt.Errorf("audit verify: %w", err)
		}
		if opts.PublicKey == nil {
			fmt.Fprintln(stdout, "warning: --no-key: checkpoints are checked against the key they name, which shows accidents, not edits")
		}
	} else {
		if *pubKey != "" || *noKey {
			return errors.New("audit verify: --public-key and --no-key are for --data-dir; a gateway verifies against its own key")
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

// offlineVerifyOptions finds the trusted public key for an offline verification: --public-key,
// else the public key file `gatehouse up` wrote beside the signing key. Not the signing key
// itself, nor the key a checkpoint names: whoever edits the directory may have replaced
// those.
func offlineVerifyOptions(dataDir, pubKey string, noKey bool) (auditsvc.VerifyOptions, error) {
	var opts auditsvc.VerifyOptions
	if noKey {
		if pubKey != "" {
			return opts, errors.New("audit verify: --public-key or --no-key, not both")
		}
		return opts, nil
	}
	s, from := pubKey, "--public-key"
	switch {
	case pubKey != "":
		if b, err := readBounded(pubKey); err == nil {
			s = string(b)
		}
	default:
		from = filepath.Join(dataDir, "keys", auditPubFile)
		b, err := readBounded(from)
		if errors.Is(err, os.ErrNotExist) {
			return opts, fmt.Errorf("audit verify: no trusted public key: %s is missing; give --public-key (the key's hex, or its file), or --no-key to check accidental damage only", from)
		}
		if err != nil {
			return opts, fmt.Errorf("audit verify: %w", err)
		}
		s = string(b)
	}
	k, err := auditsvc.ParsePublicKey(s)
	if err != nil {
		return opts, fmt.Errorf("audit verify: %s: %w", from, err)
	}
	opts.PublicKey = k
	return opts, nil
}

// maxPublicKeyFile bounds a public key file read (a PEM key is about 110 bytes).
const maxPublicKeyFile = 16 << 10

// readBounded reads a small file, refusing one over maxPublicKeyFile.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPublicKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPublicKeyFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxPublicKeyFile)
	}
	return b, nil
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
