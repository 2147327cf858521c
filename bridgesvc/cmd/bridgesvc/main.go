// Command bridgesvc runs the bridge service on its own (split mode). It follows the registry's
// catalogue to resolve servers.
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
	"syscall"
	"time"

	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdclient"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc"
)

// drain bounds how long in-flight calls may finish after a stop signal.
const drain = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "bridgesvc:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bridgesvc", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var cfg bridgesvc.Config
	cfg.RegisterFlags(fs)
	token := fs.String("internal-token", getenv("GATEHOUSE_INTERNAL_TOKEN"), "shared secret required on internal RPCs and sent to the registry (empty: none)")
	var etcdCfg etcdclient.Config
	etcdCfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := bridgesvc.ApplyEnv(fs, getenv); err != nil {
		return err
	}
	if cfg.RegistryAddr == "" {
		return errors.New("-registry-addr (or " + bridgesvc.EnvPrefix + "REGISTRY_ADDR) is required")
	}
	logger := slog.New(slog.NewJSONHandler(stdout, nil)).With("service", "bridgesvc")

	cat := catalog.New()
	followCtx, cancelFollow := context.WithCancel(ctx)
	defer cancelFollow()
	go cat.Follow(followCtx, registryv1connect.NewRegistryServiceClient(rpcserver.WithToken(rpcserver.NewClient(), *token), rpcserver.BaseURL(cfg.RegistryAddr)), logger)

	svc, err := bridgesvc.New(cfg, cat, logger)
	if err != nil {
		return err
	}
	if len(etcdCfg.EndpointList()) > 0 {
		kv, err := etcdclient.Dial(etcdCfg, logger)
		if err != nil {
			return err
		}
		defer kv.Close()
		// The session store's watch reports every session that ends anywhere, expiry included.
		sessions := sessionstore.New(kv, sessionstore.DefaultPrefix, time.Minute, logger)
		go sessions.Watch(followCtx, func(id string) { go svc.EndSession(id) })
	}
	serveErr := rpcserver.ListenAndServe(ctx, cfg.Listen, *token, drain, logger.With("registry", cfg.RegistryAddr), svc.Handlers()...)

	// Children outlive no bridge: end them all, SIGKILL whatever the shutdown sequence
	// leaves once its own deadline has passed.
	closeCtx, cancel := context.WithTimeout(context.Background(), 3*cfg.StdioGrace+time.Second)
	defer cancel()
	closeErr := svc.Close(closeCtx)
	return errors.Join(serveErr, closeErr)
}
