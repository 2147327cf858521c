// Command authsvc serves Gatehouse's authentication (split mode): API tokens kept in etcd as
// digests, and optional anonymous access to named servers.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse-mcp/gatehouse/authsvc"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "authsvc:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. Logs (JSON) and flag usage go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg authsvc.Config
	return svcmain.Main(ctx, svcmain.Spec{
		Name:  "auth",
		Flags: cfg.RegisterFlags,
		Etcd:  svcmain.EtcdRequired,
		Build: func(ctx context.Context, env *svcmain.Env) (*svcmain.Serving, error) {
			if cfg.PolicyAddr != "" {
				cfg.Authorize = rpcserver.PolicyAuthorizer(policyv1connect.NewPolicyServiceClient(env.Client, rpcserver.BaseURL(cfg.PolicyAddr)))
			}
			svc, err := authsvc.New(cfg, env.Etcd, env.Logger)
			if err != nil {
				return nil, err
			}
			// The first operator's token, from the environment or a file: principal admin of
			// tenant default, in the group the shipped policies let administer the gateway.
			bootstrap, err := svcmain.ReadSecret(getenv, authsvc.BootstrapAdminEnv)
			if err != nil {
				return nil, err
			}
			if bootstrap != "" {
				if err := svc.EnsureToken(ctx, &authv1.CreateTokenRequest{PrincipalId: "admin", Tenant: "default", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER,
					Groups: []string{authsvc.AdminGroup}, Token: bootstrap}); err != nil {
					return nil, fmt.Errorf("bootstrap admin token: %w", err)
				}
			}
			open := map[string]bool{}
			for _, p := range authsvc.AdminProcedures {
				open[p] = true
			}
			return &svcmain.Serving{
				// Operators call the admin RPCs with their own credential, authenticated here.
				CallerAuth:    rpcserver.AuthenticateWith(svc),
				OpenToCallers: open,
				Handlers:      svc.Handlers(),
				// Closing the service ends the WatchRevocations streams, which would otherwise
				// hold the drain until its deadline; the ingresses resubscribe elsewhere.
				Stopping: func() { _ = svc.Close(context.Background()) },
				Close:    svc.Close,
			}, nil
		},
	}, args, getenv, stdout)
}
