// Command policysvc serves Gatehouse's policy decisions (split mode): Cedar policies applied
// through etcd (or, without etcd or before the first apply, from a directory), servers from
// the registry's watch stream.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
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

// run loads the policies, follows the registry and serves until ctx ends. Logs (JSON) and
// flag usage go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var cfg policysvc.Config
	return svcmain.Main(ctx, svcmain.Spec{
		Name:  "policy",
		Flags: cfg.RegisterFlags,
		// Without etcd a replica decides by its directory alone and cannot apply bundles.
		Etcd: svcmain.EtcdOptional,
		Build: func(ctx context.Context, env *svcmain.Env) (*svcmain.Serving, error) {
			cat := catalog.New()
			var kv policysvc.Etcd
			if env.Etcd != nil {
				kv = env.Etcd
			} else {
				env.Logger.Warn("no etcd (--etcd-endpoints): deciding by --policy-dir only; bundles cannot be applied", "dir", cfg.PolicyDir)
			}
			svc, err := policysvc.New(cfg, cat, kv, env.Logger)
			if err != nil {
				return nil, err
			}
			go cat.Follow(ctx, registryv1connect.NewRegistryServiceClient(env.Client, rpcserver.BaseURL(cfg.RegistryAddr)), env.Logger.With("part", "catalog"))
			serving := &svcmain.Serving{
				Handlers: svc.Handlers(), Close: svc.Close,
				LogAttrs: []any{"registry", cfg.RegistryAddr, "bundle", svc.BundleVersion()},
			}
			if cfg.AuthAddr != "" {
				// Other teams' services may call Check with their own credential: authsvc
				// says who they are, Cedar which tenants they may ask about.
				auth := authv1connect.NewAuthServiceClient(env.Client, rpcserver.BaseURL(cfg.AuthAddr))
				serving.CallerAuth = rpcserver.AuthenticateWith(auth)
				// And operators apply bundles with their own credential (Cedar decides).
				serving.OpenToCallers = map[string]bool{policyv1connect.PolicyServiceCheckProcedure: true, policyv1connect.PolicyServiceApplyBundleProcedure: true}
			}
			return serving, nil
		},
	}, args, getenv, stdout)
}
