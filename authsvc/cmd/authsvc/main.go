// Command authsvc serves Gatehouse's authentication (split mode): API tokens kept in etcd as
// digests, and optional anonymous access to named servers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gatehouse-mcp/gatehouse/authsvc"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdclient"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "authsvc:", err)
		os.Exit(1)
	}
}

// run parses flags, connects to etcd and serves until ctx ends. Logs (JSON) and flag usage
// go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg authsvc.Config
	fs := flag.NewFlagSet("authsvc", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cfg.RegisterFlags(fs, getenv)
	var etcdCfg etcdclient.Config
	etcdCfg.RegisterFlags(fs)
	token := fs.String("internal-token", getenv("GATEHOUSE_INTERNAL_TOKEN"), "shared secret required on internal RPCs (empty: none)")
	drain := fs.Duration("drain", 10*time.Second, "how long in-flight requests get at shutdown")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	logger := slog.New(slog.NewJSONHandler(stdout, nil)).With("svc", "auth")

	kv, err := etcdclient.Dial(etcdCfg, logger)
	if err != nil {
		return err
	}
	defer kv.Close()
	svc, err := authsvc.New(cfg, kv, logger)
	if err != nil {
		return err
	}
	defer svc.Close(context.WithoutCancel(ctx))

	return rpcserver.ListenAndServe(ctx, cfg.Listen, *token, *drain, logger, svc.Handlers()...)
}
