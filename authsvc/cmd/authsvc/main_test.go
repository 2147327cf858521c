package main

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain/svcmaintest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

var shared *etcdtest.Etcd

func TestMain(m *testing.M) { os.Exit(etcdtest.Main(m, &shared)) }

func noenv(string) string { return "" }

const internal = "test-internal-token"

// withToken is an environment holding the internal token.
func withToken(k string) string {
	switch k {
	case "GATEHOUSE_INTERNAL_TOKEN":
		return internal
	case "GATEHOUSE_BOOTSTRAP_ADMIN_TOKEN":
		return bootstrapAdmin
	}
	return ""
}

// bootstrapAdmin is the first operator's token the binary registers at start.
const bootstrapAdmin = "bootstrap-admin-token-0123456789"

func TestRunHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, noenv, &out); err != nil {
		t.Fatalf("-h: %v, want nil (exit 0)", err)
	}
	for _, want := range []string{"-anonymous-servers", "-etcd-cert-file", "-etcd-insecure-dev", "GATEHOUSE_AUTH_"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		getenv  func(string) string
		wantErr string
	}{
		{"unknown flag", []string{"-nope"}, withToken, "not defined"},
		{"stray argument", []string{"extra"}, withToken, "unexpected arguments"},
		{"bad anonymous server", []string{"-anonymous-servers", "echo,NO"}, withToken, `"NO"`},
		// Without the token, CreateToken would mint tokens for anyone who reaches the port.
		{"no internal token", nil, noenv, "no internal token"},
		{"internal token as a flag", []string{"-internal-token", "x"}, withToken, "not defined"},
		{"bad anonymous tenant from env", nil, func(k string) string {
			if k == "GATEHOUSE_AUTH_ANONYMOUS_TENANT" {
				return "a b"
			}
			return withToken(k)
		}, "anonymous tenant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			args := append([]string{"-etcd-endpoints", shared.Endpoint(), "-etcd-insecure-dev", "-listen", "127.0.0.1:0"}, tt.args...)
			err := run(context.Background(), args, tt.getenv, &out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestRunServes runs the binary's run against the shared etcd with the internal token and an
// anonymous server, issues and uses a token over Connect, and stops it.
func TestRunServes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &testsync.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{
			"-listen", "127.0.0.1:0", "-etcd-endpoints", shared.Endpoint(), "-etcd-insecure-dev", "-key-prefix", etcdtest.Prefix(t),
			"-anonymous-servers", "echo", "-drain", "1s",
		}, withToken, out)
	}()
	addr := svcmaintest.WaitServing(t, out, done, 20*time.Second)
	base := rpcserver.BaseURL(addr)
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()

	outsider := authv1connect.NewAuthServiceClient(rpcserver.NewClient(), base)
	_, err := outsider.CreateToken(rctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "eve", Tenant: "default"}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("CreateToken without the internal token: %v, want Unauthenticated", err)
	}
	client := authv1connect.NewAuthServiceClient(rpcserver.WithToken(rpcserver.NewClient(), internal), base)
	// An admin RPC with the internal token alone is refused; with the operator's own
	// credential it is decided by policysvc, which does not run here: unavailable, never
	// allowed.
	if _, err := client.CreateToken(rctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "alice", Tenant: "default"})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("CreateToken with the internal token alone: %v, want PermissionDenied", err)
	}
	operator := authv1connect.NewAuthServiceClient(rpcserver.WithBearer(rpcserver.NewClient(), bootstrapAdmin), base)
	if _, err := operator.CreateToken(rctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "alice", Tenant: "default"})); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("CreateToken by the operator with no policysvc to decide: %v, want Unavailable", err)
	}
	// The bootstrap token is the first operator's: principal admin, in the admin group.
	created := struct{ token string }{bootstrapAdmin}
	resp, err := client.Authenticate(rctx, connect.NewRequest(&authv1.AuthenticateRequest{Credential: created.token, Server: "echo"}))
	if err != nil || resp.Msg.GetPrincipal().GetId() != "admin" || !slices.Contains(resp.Msg.GetPrincipal().GetGroups(), "gatehouse-admins") {
		t.Fatalf("Authenticate: %v, %v", resp, err)
	}
	anon, err := client.Authenticate(rctx, connect.NewRequest(&authv1.AuthenticateRequest{Server: "echo"}))
	if err != nil || anon.Msg.GetPrincipal().GetKind() != authv1.PrincipalKind_PRINCIPAL_KIND_ANONYMOUS {
		t.Fatalf("anonymous Authenticate: %v, %v", anon, err)
	}
	if strings.Contains(out.String(), created.token) {
		t.Fatal("the logs contain the token")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancellation")
	}
}
