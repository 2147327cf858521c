// Command bridgesvc runs the bridge service on its own (split mode). It follows the registry's
// catalogue to resolve servers and, when etcd is configured, reaps the sessions that end or
// expire there.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bridgesvc:", err)
		os.Exit(1)
	}
}

// run serves the bridge until ctx ends, then ends every child. Logs (JSON) and flag usage go
// to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg bridgesvc.Config
	return svcmain.Main(ctx, svcmain.Spec{
		Name:  "bridge",
		Flags: cfg.RegisterFlags,
		Etcd:  svcmain.EtcdOptional,
		Build: func(ctx context.Context, env *svcmain.Env) (*svcmain.Serving, error) {
			if cfg.RegistryAddr == "" {
				return nil, errors.New("-registry-addr (or GATEHOUSE_BRIDGE_REGISTRY_ADDR) is required")
			}
			cat := catalog.New()
			opts := []bridgesvc.Option{bridgesvc.WithMetrics(env.Metrics)}
			if cfg.AuthAddr != "" {
				opts = append(opts, bridgesvc.WithUpstreamTokens(authv1connect.NewAuthServiceClient(env.Client, rpcserver.BaseURL(cfg.AuthAddr))))
			}
			if cfg.AuditAddr != "" {
				// The circuit breakers' transitions are recorded in the audit log.
				opts = append(opts, bridgesvc.WithAudit(auditv1connect.NewAuditServiceClient(env.Client, rpcserver.BaseURL(cfg.AuditAddr))))
			}
			svc, err := bridgesvc.New(cfg, cat, env.Logger, opts...)
			if err != nil {
				return nil, err
			}
			go cat.Follow(ctx, registryv1connect.NewRegistryServiceClient(env.Client, rpcserver.BaseURL(cfg.RegistryAddr)), env.Logger)
			if env.Etcd != nil {
				// The session store's watch reports every session that ends anywhere,
				// expiry included.
				sessions := sessionstore.New(env.Etcd, sessionstore.DefaultPrefix, time.Minute, env.Logger)
				go sessions.Watch(ctx, func(id string) { go svc.EndSession(id) })
			}
			return &svcmain.Serving{
				Handlers: svc.Handlers(),
				// Children outlive no bridge: end them all, SIGKILL whatever the shutdown
				// sequence leaves once its own deadline has passed.
				Close: func(context.Context) error {
					cctx, cancel := context.WithTimeout(context.Background(), 3*cfg.StdioGrace+time.Second)
					defer cancel()
					return svc.Close(cctx)
				},
				LogAttrs: []any{"registry", cfg.RegistryAddr, "auth", cfg.AuthAddr, "audit", cfg.AuditAddr},
			}, nil
		},
	}, args, getenv, stdout)
}
