// Command auditsvc serves Gatehouse's append-only audit log (split mode). With -verify it
// checks a log's hash chain instead and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
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
		Flags: func(fs *flag.FlagSet) {
			cfg.RegisterFlags(fs)
			fs.BoolVar(&verify, "verify", false, "verify the log in -dir, print how many records it holds, and exit")
		},
		OneShot: func(stdout io.Writer) (bool, error) {
			if !verify {
				return false, nil
			}
			path := filepath.Join(cfg.Dir, auditsvc.FileName)
			n, err := auditsvc.Verify(path)
			if err != nil {
				return true, fmt.Errorf("%s: %d records verified, then: %w", path, n, err)
			}
			fmt.Fprintf(stdout, "%s: %d records, chain intact\n", path, n)
			return true, nil
		},
		Build: func(ctx context.Context, env *svcmain.Env) (*svcmain.Serving, error) {
			svc, err := auditsvc.New(cfg, env.Logger, auditsvc.WithMetrics(env.Metrics))
			if err != nil {
				return nil, err
			}
			// Closed last: the server has drained, so nothing new arrives; Close commits
			// what is still queued (deferred outcome records, acknowledged as queued only).
			return &svcmain.Serving{Handlers: svc.Handlers(), Close: svc.Close, LogAttrs: []any{"log", svc.Path()}}, nil
		},
	}, args, getenv, stdout)
}
