// Command ingress serves Gatehouse's public MCP surface in split mode.
package main

import (
	"context"
	"fmt"
	"io"
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
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingress:", err)
		os.Exit(1)
	}
}

// run serves MCP until ctx ends. Logs (JSON) and flag usage go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg ingress.Config
	return svcmain.Main(ctx, svcmain.Spec{
		Name:  "ingress",
		Flags: cfg.RegisterFlags,
		Etcd:  svcmain.EtcdRequired,
		Build: func(ctx context.Context, env *svcmain.Env) (*svcmain.Serving, error) {
			client := env.Client
			cat := catalog.New()
			registry := registryv1connect.NewRegistryServiceClient(client, rpcserver.BaseURL(cfg.RegistryAddr))
			go cat.Follow(ctx, registry, env.Logger)
			sessions := sessionstore.New(env.Etcd, sessionstore.DefaultPrefix, cfg.SessionTTL, env.Logger)
			// Drop sessions ended on any replica (DELETE, expiry) from this replica's cache.
			go sessions.Watch(ctx, nil)
			svc, err := ingress.New(cfg, ingress.Deps{
				Metrics:  env.Metrics,
				Auth:     ingress.RemoteAuth(authv1connect.NewAuthServiceClient(client, rpcserver.BaseURL(cfg.AuthAddr))),
				Policy:   policyv1connect.NewPolicyServiceClient(client, rpcserver.BaseURL(cfg.PolicyAddr)),
				Bridge:   ingress.RemoteBridge(bridgev1connect.NewBridgeServiceClient(client, rpcserver.BaseURL(cfg.BridgeAddr)), env.Logger),
				Audit:    auditv1connect.NewAuditServiceClient(client, rpcserver.BaseURL(cfg.AuditAddr)),
				Catalog:  cat,
				Sessions: sessions,
				Registry: registry,
			}, env.Logger)
			if err != nil {
				return nil, err
			}
			// Revoked API tokens stop working here within a moment (authsvc's stream).
			go svc.FollowRevocations(ctx)
			readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err = cat.WaitReady(readyCtx)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("registry snapshot: %w", err)
			}
			svc.SetReady(true)
			return &svcmain.Serving{
				Handler:   svc.Handler(),
				Stopping:  func() { svc.SetReady(false) },
				NewServer: svc.HTTPServer,
				Close:     svc.Close, // the refusals by quota counted so far are audited
			}, nil
		},
	}, args, getenv, stdout)
}
