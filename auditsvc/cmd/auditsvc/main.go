// Command auditsvc serves Gatehouse's append-only audit log (split mode). With -verify it
// checks a log's hash chain instead and exits.
package main

import (
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/secret"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "auditsvc:", err)
		os.Exit(1)
	}
}

// run serves the log until ctx ends, or verifies it with -verify. Logs (JSON) and flag usage
// go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg auditsvc.Config
	var verify bool
	return svcmain.Main(ctx, svcmain.Spec{
		Name: "audit",
		Etcd: svcmain.EtcdOptional,
		Flags: func(fs *flag.FlagSet) {
			cfg.RegisterFlags(fs)
			fs.BoolVar(&verify, "verify", false, "verify the log in -dir, print how many records it holds, and exit")
		},
		OneShot: func(stdout io.Writer) (bool, error) {
			if !verify {
				return false, nil
			}
			// Offline: the chain and the checkpoints against the key they name (the signing
			// key's public half when --signing-key-file is given); the anchor in etcd is
			// checked by the Verify RPC of a running service (gatehouse audit verify).
			var opts auditsvc.VerifyOptions
			if cfg.SigningKeyFile != "" {
				k, err := auditsvc.LoadSigningKey(cfg.SigningKeyFile)
				if err != nil {
					return true, err
				}
				opts.PublicKey = k.Public().(ed25519.PublicKey)
				// The service's own interval and slack (its queue, as the Verify RPC allows).
				opts.CheckpointRecords, opts.Slack = cfg.CheckpointRecords, max(cfg.MaxQueue, auditsvc.DefaultCheckpointSlack)
			}
			if cfg.Store == auditsvc.StorePostgres {
				dsn, err := postgresDSN(&cfg, getenv)
				if err != nil {
					return true, err
				}
				resp, err := auditsvc.VerifyPostgres(ctx, dsn, opts)
				if err != nil {
					return true, err
				}
				for _, p := range resp.GetProblems() {
					fmt.Fprintf(stdout, "postgres: %s at sequence %d: %s\n", p.GetKind(), p.GetSequence(), p.GetReason())
				}
				if n := len(resp.GetProblems()); n > 0 {
					return true, fmt.Errorf("postgres: %d problems; the first: %s at sequence %d", n, resp.GetProblems()[0].GetKind(), resp.GetProblems()[0].GetSequence())
				}
				for _, n := range resp.GetNotes() {
					fmt.Fprintf(stdout, "postgres: note: %s\n", n)
				}
				fmt.Fprintf(stdout, "postgres: %d records, %d checkpoints, chain intact\n", resp.GetRecords(), resp.GetCheckpoints())
				return true, nil
			}
			resp, err := auditsvc.VerifyDir(ctx, cfg.Dir, opts)
			if err != nil {
				return true, err
			}
			for _, p := range resp.GetProblems() {
				fmt.Fprintf(stdout, "%s: %s %s line %d (sequence %d, byte offset %d): %s\n", cfg.Dir, p.GetKind(), p.GetSegment(), p.GetLine(), p.GetSequence(), p.GetOffset(), p.GetReason())
			}
			if n := len(resp.GetProblems()); n > 0 {
				return true, fmt.Errorf("%s: %d problems; the first: %s at sequence %d", cfg.Dir, n, resp.GetProblems()[0].GetKind(), resp.GetProblems()[0].GetSequence())
			}
			for _, n := range resp.GetNotes() {
				fmt.Fprintf(stdout, "%s: note: %s\n", cfg.Dir, n)
			}
			fmt.Fprintf(stdout, "%s: %d records in %d segments, %d checkpoints, chain intact\n", cfg.Dir, resp.GetRecords(), len(resp.GetSegments()), resp.GetCheckpoints())
			return true, nil
		},
		Build: func(ctx context.Context, env *svcmain.Env) (*svcmain.Serving, error) {
			if cfg.PolicyAddr != "" {
				cfg.Authorize = rpcserver.PolicyAuthorizer(policyv1connect.NewPolicyServiceClient(env.Client, rpcserver.BaseURL(cfg.PolicyAddr)))
			}
			// With etcd (--etcd-endpoints), the latest signed checkpoint is anchored there.
			opts := []auditsvc.Option{auditsvc.WithMetrics(env.Metrics)}
			if env.Etcd != nil {
				opts = append(opts, auditsvc.WithAnchor(auditsvc.NewEtcdAnchor(env.Etcd, auditsvc.AnchorKeyFor(cfg.KeyPrefix, cfg.Store))))
			}
			if cfg.Store == auditsvc.StorePostgres {
				if _, err := postgresDSN(&cfg, getenv); err != nil {
					return nil, err
				}
			}
			svc, err := auditsvc.New(cfg, env.Logger, opts...)
			if err != nil {
				return nil, err
			}
			// Closed last: the server has drained, so nothing new arrives; Close commits
			// what is still queued (deferred outcome records, acknowledged as queued only).
			// Tail streams end first, so that they do not hold the drain.
			serving := &svcmain.Serving{Handlers: svc.Handlers(), Stopping: svc.EndTails, Close: svc.Close, LogAttrs: []any{"log", svc.Path()}}
			if cfg.AuthAddr != "" {
				// Operators read the log with their own credential; Cedar decides.
				serving.CallerAuth = rpcserver.AuthenticateWith(authv1connect.NewAuthServiceClient(env.Client, rpcserver.BaseURL(cfg.AuthAddr)))
				serving.OpenToCallers = map[string]bool{
					auditv1connect.AuditServiceQueryProcedure: true,
					auditv1connect.AuditServiceTailProcedure:  true,
				}
			}
			return serving, nil
		},
	}, args, getenv, stdout)
}

// postgresDSNEnv holds the postgres store's DSN (or, with _FILE, names a file holding it):
// the DSN carries a password, so it is never a flag's value.
const postgresDSNEnv = "GATEHOUSE_AUDIT_POSTGRES_DSN"

// postgresDSN sets cfg.PostgresDSN from the environment unless --postgres-dsn-file is given,
// and returns the DSN.
func postgresDSN(cfg *auditsvc.Config, getenv func(string) string) (string, error) {
	if cfg.PostgresDSNFile != "" {
		return secret.ReadFile(cfg.PostgresDSNFile)
	}
	dsn, err := svcmain.ReadSecret(getenv, postgresDSNEnv)
	if err != nil {
		return "", err
	}
	if dsn == "" {
		return "", fmt.Errorf("--store postgres needs --postgres-dsn-file or %s", postgresDSNEnv)
	}
	cfg.PostgresDSN = dsn
	return dsn, nil
}
