// Command policysvc serves Gatehouse's policy decisions (split mode): Cedar policies from a
// directory, servers from the registry's watch stream.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "policysvc:", err)
		os.Exit(1)
	}
}

// run parses flags, loads the policies, follows the registry and serves until ctx ends.
// Logs (JSON) and flag usage go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg policysvc.Config
	fs := flag.NewFlagSet("policysvc", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cfg.RegisterFlags(fs, getenv)
	token := fs.String("internal-token", getenv("GATEHOUSE_INTERNAL_TOKEN"), "shared secret required on internal RPCs and sent to the registry (empty: none)")
	drain := fs.Duration("drain", 10*time.Second, "how long in-flight requests get at shutdown")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	logger := slog.New(slog.NewJSONHandler(stdout, nil)).With("svc", "policy")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cat := catalog.New()
	client := rpcserver.WithToken(rpcserver.NewClient(), *token)
	go cat.Follow(ctx, registryv1connect.NewRegistryServiceClient(client, rpcserver.BaseURL(cfg.RegistryAddr)), logger.With("svc", "catalog"))

	svc, err := policysvc.New(cfg, cat, logger)
	if err != nil {
		return err
	}
	defer svc.Close(context.WithoutCancel(ctx))

	return rpcserver.ListenAndServe(ctx, cfg.Listen, *token, *drain, logger.With("registry", cfg.RegistryAddr, "bundle", svc.BundleVersion()), svc.Handlers()...)
}
