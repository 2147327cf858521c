// Command registrysvc serves Gatehouse's server catalogue (split mode) from etcd, seeded at
// start from a YAML file when -servers is given.
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

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdclient"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/registrysvc"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "registrysvc:", err)
		os.Exit(1)
	}
}

// run parses flags, reads the servers file, connects to etcd, seeds the registry and serves
// until ctx ends. Logs (JSON) and flag usage go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg registrysvc.Config
	fs := flag.NewFlagSet("registrysvc", flag.ContinueOnError)
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
	logger := slog.New(slog.NewJSONHandler(stdout, nil)).With("svc", "registry")

	var servers []*registryv1.Server
	if cfg.ServersFile != "" {
		var err error
		if servers, err = readServers(cfg.ServersFile); err != nil {
			return err
		}
	}
	kv, err := etcdclient.Dial(etcdCfg, logger)
	if err != nil {
		return err
	}
	defer kv.Close()
	svc, err := registrysvc.New(cfg, kv, logger)
	if err != nil {
		return err
	}
	// Closing the service ends the WatchServers streams, which would otherwise hold the
	// drain until its deadline.
	stopWatch := context.AfterFunc(ctx, func() { _ = svc.Close(context.Background()) })
	defer stopWatch()
	defer svc.Close(context.WithoutCancel(ctx))
	if cfg.ServersFile != "" {
		if err := svc.Seed(ctx, servers); err != nil {
			return err
		}
	}

	return rpcserver.ListenAndServe(ctx, cfg.Listen, *token, *drain, logger.With("seeded", len(servers), "servers_file", cfg.ServersFile), svc.Handlers()...)
}

// readServers reads and parses the servers file, at most config.MaxFileBytes of it.
func readServers(path string) ([]*registryv1.Server, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("servers file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, config.MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("servers file: %w", err)
	}
	servers, err := config.ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("servers file %s: %w", path, err)
	}
	return servers, nil
}
