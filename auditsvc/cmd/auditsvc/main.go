// Command auditsvc serves Gatehouse's append-only audit log (split mode). With -verify it
// checks a log's hash chain instead and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
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

// run parses flags and serves the log until ctx ends, or verifies it with -verify. Logs
// (JSON) and flag usage go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg auditsvc.Config
	fs := flag.NewFlagSet("auditsvc", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cfg.RegisterFlags(fs, getenv)
	token := fs.String("internal-token", getenv("GATEHOUSE_INTERNAL_TOKEN"), "shared secret required on internal RPCs (empty: none)")
	drain := fs.Duration("drain", 10*time.Second, "how long in-flight requests get at shutdown")
	verify := fs.Bool("verify", false, "verify the log in -dir, print how many records it holds, and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *verify {
		path := filepath.Join(cfg.Dir, auditsvc.FileName)
		n, err := auditsvc.Verify(path)
		if err != nil {
			return fmt.Errorf("%s: %d records verified, then: %w", path, n, err)
		}
		fmt.Fprintf(stdout, "%s: %d records, chain intact\n", path, n)
		return nil
	}
	logger := slog.New(slog.NewJSONHandler(stdout, nil)).With("svc", "audit")

	svc, err := auditsvc.New(cfg, logger)
	if err != nil {
		return err
	}
	// Closed last: the server has drained, so every acknowledged record is already durable
	// and nothing new arrives.
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), *drain)
		defer cancel()
		if err := svc.Close(cctx); err != nil {
			logger.Error("close", "err", err)
		}
	}()
	return rpcserver.ListenAndServe(ctx, cfg.Listen, *token, *drain, logger.With("log", svc.Path()), svc.Handlers()...)
}
