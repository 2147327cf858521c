// Command ingress serves Gatehouse's public MCP surface in split mode.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1/bridgev1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdclient"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingress:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	var cfg ingress.Config
	fs := flag.NewFlagSet("ingress", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs, getenv)
	var etcdCfg etcdclient.Config
	etcdCfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil)).With("svc", "ingress")
	kv, err := etcdclient.Dial(etcdCfg, logger)
	if err != nil {
		return err
	}
	defer kv.Close()
	client := rpcserver.WithToken(rpcserver.NewClient(), getenv("GATEHOUSE_INTERNAL_TOKEN"))
	cat := catalog.New()
	go cat.Follow(ctx, registryv1connect.NewRegistryServiceClient(client, rpcserver.BaseURL(cfg.RegistryAddr)), logger)
	sessions := sessionstore.New(kv, sessionstore.DefaultPrefix, cfg.SessionTTL, logger)
	// Drop sessions ended on any replica (DELETE, expiry) from this replica's cache.
	go sessions.Watch(ctx, nil)
	svc, err := ingress.New(cfg, ingress.Deps{
		Auth:     authv1connect.NewAuthServiceClient(client, rpcserver.BaseURL(cfg.AuthAddr)),
		Policy:   policyv1connect.NewPolicyServiceClient(client, rpcserver.BaseURL(cfg.PolicyAddr)),
		Bridge:   ingress.RemoteBridge(bridgev1connect.NewBridgeServiceClient(client, rpcserver.BaseURL(cfg.BridgeAddr)), logger),
		Audit:    auditv1connect.NewAuditServiceClient(client, rpcserver.BaseURL(cfg.AuditAddr)),
		Catalog:  cat,
		Sessions: sessions,
	}, logger)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = cat.WaitReady(readyCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("registry snapshot: %w", err)
	}
	svc.SetReady(true)
	context.AfterFunc(ctx, func() { svc.SetReady(false) })
	logger.Info("serving", "addr", ln.Addr().String())
	return rpcserver.Serve(ctx, ln, rpcserver.NewServer(svc.Handler()), nil, 10*time.Second, logger)
}
