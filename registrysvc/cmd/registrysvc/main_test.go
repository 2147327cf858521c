package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdclient"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain/svcmaintest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var (
	shared *etcdtest.Etcd
	secure *etcdtest.TLSEtcd // etcd with --client-cert-auth, as split mode runs it
)

func TestMain(m *testing.M) {
	var err error
	if secure, err = etcdtest.StartTLS(); err != nil {
		panic(err)
	}
	code := etcdtest.Main(m, &shared)
	secure.Close()
	os.Exit(code)
}

// TestRunEtcdClientAuth: split mode refuses a plaintext etcd unless told it is development,
// and serves against an etcd that requires client certificates when given one.
func TestRunEtcdClientAuth(t *testing.T) {
	t.Parallel()
	t.Run("plaintext refused", func(t *testing.T) {
		var out bytes.Buffer
		err := run(context.Background(), []string{"-listen", "127.0.0.1:0", "-etcd-endpoints", shared.Endpoint()}, withToken, &out)
		if !errors.Is(err, etcdclient.ErrInsecure) || !strings.Contains(err.Error(), "--etcd-insecure-dev") {
			t.Fatalf("err = %v, want ErrInsecure naming --etcd-insecure-dev", err)
		}
	})
	t.Run("TLS client auth", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "servers.yaml")
		if err := os.WriteFile(file, []byte("servers:\n  - name: web\n    transport: http\n    url: http://127.0.0.1:9/mcp\n    tenants: [default]\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		out := &testsync.Buffer{}
		done := make(chan error, 1)
		c := secure.Certs
		go func() {
			done <- run(ctx, []string{
				"-listen", "127.0.0.1:0", "-etcd-endpoints", secure.Endpoint, "-key-prefix", etcdtest.Prefix(t),
				"-etcd-ca-file", c.CA, "-etcd-cert-file", c.ClientCert, "-etcd-key-file", c.ClientKey,
				"-servers", file, "-drain", "1s",
			}, withToken, out)
		}()
		addr := svcmaintest.WaitServing(t, out, done, 20*time.Second)
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		authed := metadata.AppendToOutgoingContext(rctx, strings.ToLower(rpcserver.InternalTokenHeader), token)
		resp, err := registryv1.NewRegistryServiceClient(conn).ListServers(authed, &registryv1.ListServersRequest{Tenant: "default"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetServers()) != 1 || resp.GetServers()[0].GetName() != "web" {
			t.Fatalf("ListServers = %v, want [web] (seeded through TLS etcd)", resp.GetServers())
		}
		if strings.Contains(out.String(), "DEVELOPMENT MODE") {
			t.Errorf("a TLS start logged the development warning:\n%s", out.String())
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run: %v", err)
		}
	})
}

func noenv(string) string { return "" }

const token = "test-internal-token"

// withToken is an environment holding the internal token.
func withToken(k string) string {
	if k == "GATEHOUSE_INTERNAL_TOKEN" {
		return token
	}
	return ""
}

func TestRunHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, noenv, &out); err != nil {
		t.Fatalf("-h: %v, want nil (exit 0)", err)
	}
	if !strings.Contains(out.String(), "-servers") || !strings.Contains(out.String(), "-etcd-ca-file") {
		t.Errorf("usage:\n%s", out.String())
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("servers:\n  - name: x\n    transport: stdio\n    comand: [a]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		getenv  func(string) string
		wantErr string
	}{
		{"unknown flag", []string{"-nope"}, withToken, "not defined"},
		{"stray argument", []string{"extra"}, withToken, "unexpected arguments"},
		{"missing servers file", []string{"-servers", filepath.Join(dir, "none.yaml")}, withToken, "servers file"},
		{"bad servers file", []string{"-servers", bad}, withToken, "field comand not found"},
		{"no internal token", nil, noenv, "no internal token"},
		{"bad env", nil, func(k string) string {
			if k == "GATEHOUSE_REGISTRY_MAX_WATCHERS" {
				return "many"
			}
			return withToken(k)
		}, "GATEHOUSE_REGISTRY_MAX_WATCHERS"},
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

// TestRunSeedsAndServes runs the binary's run against the shared etcd with a servers file
// and the internal token, calls it with grpc-go, and stops it.
func TestRunSeedsAndServes(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "servers.yaml")
	cfg := "servers:\n  - name: echo\n    transport: stdio\n    command: [echo]\n    tenants: [default]\n" +
		"  - name: web\n    transport: http\n    url: http://127.0.0.1:9/mcp\n    tenants: [research]\n"
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &testsync.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{
			"-listen", "127.0.0.1:0", "-etcd-endpoints", shared.Endpoint(), "-etcd-insecure-dev", "-key-prefix", etcdtest.Prefix(t),
			"-servers", file, "-drain", "1s",
		}, withToken, out)
	}()
	addr := svcmaintest.WaitServing(t, out, done, 20*time.Second)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := registryv1.NewRegistryServiceClient(conn)
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	if _, err := client.ListServers(rctx, &registryv1.ListServersRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without the internal token: %v, want Unauthenticated", err)
	}
	authed := metadata.AppendToOutgoingContext(rctx, strings.ToLower(rpcserver.InternalTokenHeader), token)
	resp, err := client.ListServers(authed, &registryv1.ListServersRequest{Tenant: "research"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetServers()) != 1 || resp.GetServers()[0].GetName() != "web" {
		t.Fatalf("ListServers(research) = %v, want [web]", resp.GetServers())
	}
	// An open watch must not hold up shutdown.
	stream, err := client.WatchServers(authed, &registryv1.WatchServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
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
