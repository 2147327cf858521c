// Command registrysvc serves Gatehouse's server catalogue (split mode) from etcd, seeded at
// start from a YAML file when -servers is given.
package main

import (
	"context"
	"fmt"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"io"
	"os"
	"os/signal"
	"syscall"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
	"github.com/gatehouse-mcp/gatehouse/registrysvc"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "registrysvc:", err)
		os.Exit(1)
	}
}

// run reads the servers file, seeds the registry and serves until ctx ends. Logs (JSON) and
// flag usage go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg registrysvc.Config
	return svcmain.Main(ctx, svcmain.Spec{
		Name:  "registry",
		Flags: cfg.RegisterFlags,
		Etcd:  svcmain.EtcdRequired,
		Build: func(ctx context.Context, env *svcmain.Env) (*svcmain.Serving, error) {
			var servers []*registryv1.Server
			if cfg.ServersFile != "" {
				var err error
				if servers, err = readServers(cfg.ServersFile); err != nil {
					return nil, err
				}
			}
			if cfg.PolicyAddr != "" {
				cfg.Authorize = rpcserver.PolicyAuthorizer(policyv1connect.NewPolicyServiceClient(env.Client, rpcserver.BaseURL(cfg.PolicyAddr)))
			}
			if cfg.AuditAddr != "" {
				cfg.Audit = auditv1connect.NewAuditServiceClient(env.Client, rpcserver.BaseURL(cfg.AuditAddr))
			}
			svc, err := registrysvc.New(cfg, env.Etcd, env.Logger)
			if err != nil {
				return nil, err
			}
			if cfg.ServersFile != "" {
				if err := svc.Seed(ctx, servers); err != nil {
					_ = svc.Close(context.WithoutCancel(ctx))
					return nil, err
				}
			}
			serving := &svcmain.Serving{
				Handlers: svc.Handlers(),
				// Closing the service ends the WatchServers streams, which would otherwise
				// hold the drain until its deadline.
				Stopping: func() { _ = svc.Close(context.Background()) },
				Close:    svc.Close,
				LogAttrs: []any{"seeded", len(servers), "servers_file", cfg.ServersFile},
			}
			if cfg.AuthAddr != "" {
				// Other teams' services may read the catalogue with their own credential:
				// authsvc says who they are, policy which tenants they may list.
				auth := authv1connect.NewAuthServiceClient(env.Client, rpcserver.BaseURL(cfg.AuthAddr))
				serving.CallerAuth = rpcserver.AuthenticateWith(auth)
				// Operators approve quarantined tools and import servers with theirs.
				serving.OpenToCallers = map[string]bool{
					registryv1connect.RegistryServiceGetServerProcedure:     true,
					registryv1connect.RegistryServiceListServersProcedure:   true,
					registryv1connect.RegistryServiceApproveToolsProcedure:  true,
					registryv1connect.RegistryServiceImportServersProcedure: true,
				}
			}
			return serving, nil
		},
	}, args, getenv, stdout)
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
