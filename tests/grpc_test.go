package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestGRPCGoClients calls policysvc and registrysvc the way other teams will: plain grpc-go
// with the generated stubs, over h2c, to the single-process gateway's port.
func TestGRPCGoClients(t *testing.T) {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	cfg := "servers:\n" + stdioEntry("echo", echo) +
		"  - name: research-only\n    transport: http\n    url: http://127.0.0.1:9/mcp\n    tenants: [research]\n"
	g := gatehousetest.Start(t, gatehousetest.Options{Config: cfg})
	conn, err := grpc.NewClient(strings.TrimPrefix(g.Base, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	authed := metadata.AppendToOutgoingContext(ctx, strings.ToLower(rpcserver.InternalTokenHeader), g.InternalToken)

	registry := registryv1.NewRegistryServiceClient(conn)
	t.Run("registry without the internal token", func(t *testing.T) {
		_, err := registry.ListServers(ctx, &registryv1.ListServersRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("ListServers without the internal token: %v, want Unauthenticated", err)
		}
	})
	t.Run("registry ListServers by tenant", func(t *testing.T) {
		resp, err := registry.ListServers(authed, &registryv1.ListServersRequest{Tenant: "default"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetServers()) != 1 || resp.GetServers()[0].GetName() != "echo" {
			t.Fatalf("tenant default sees %v, want only echo", resp.GetServers())
		}
	})
	t.Run("registry GetServer", func(t *testing.T) {
		resp, err := registry.GetServer(authed, &registryv1.GetServerRequest{Name: "research-only"})
		if err != nil || resp.GetServer().GetTransport() != registryv1.Transport_TRANSPORT_STREAMABLE_HTTP {
			t.Fatalf("GetServer: %v %v", resp, err)
		}
		if _, err := registry.GetServer(authed, &registryv1.GetServerRequest{Name: "missing"}); status.Code(err) != codes.NotFound {
			t.Fatalf("GetServer(missing): %v, want NotFound", err)
		}
	})
	policy := policyv1.NewPolicyServiceClient(conn)
	for _, tc := range []struct {
		tenant, server string
		want           policyv1.Decision
	}{
		{"default", "echo", policyv1.Decision_DECISION_ALLOW},
		{"default", "research-only", policyv1.Decision_DECISION_DENY},
		{"research", "research-only", policyv1.Decision_DECISION_ALLOW},
		{"research", "echo", policyv1.Decision_DECISION_DENY},
		{"default", "missing", policyv1.Decision_DECISION_DENY},
	} {
		t.Run("policy Check "+tc.tenant+" "+tc.server, func(t *testing.T) {
			resp, err := policy.Check(authed, &policyv1.CheckRequest{
				Subject:  &policyv1.Subject{Id: "alice", Tenant: tc.tenant, Kind: "user"},
				Action:   "tools/call",
				Resource: &policyv1.Resource{Server: tc.server, Name: "echo"},
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetDecision() != tc.want {
				t.Fatalf("decision %v, want %v", resp.GetDecision(), tc.want)
			}
			if !strings.HasPrefix(resp.GetBundleVersion(), "sha256:") {
				t.Fatalf("bundle version %q", resp.GetBundleVersion())
			}
		})
	}
	// Another team's service, with a service token of its own (no internal token): Cedar lets
	// it ask about principals of its tenant, and of no other.
	t.Run("policy Check with a service identity", func(t *testing.T) {
		auth := authv1connect.NewAuthServiceClient(g.AdminClient(), g.Base)
		created, err := auth.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "billing-svc", Tenant: "default", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE}))
		if err != nil {
			t.Fatal(err)
		}
		asService := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+created.Msg.GetToken())
		ask := func(ctx context.Context, tenant string) error {
			_, err := policy.Check(ctx, &policyv1.CheckRequest{
				Subject: &policyv1.Subject{Id: "alice", Tenant: tenant, Kind: "user"}, Action: "tools/call",
				Resource: &policyv1.Resource{Server: "echo", Name: "echo"},
			})
			return err
		}
		if err := ask(asService, "default"); err != nil {
			t.Fatalf("its own tenant: %v", err)
		}
		if err := ask(asService, "research"); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("another tenant: %v, want PermissionDenied", err)
		}
		if err := ask(ctx, "default"); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("no identity: %v, want Unauthenticated", err)
		}
		bogus := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer gh_not_a_token_at_all_0000")
		if err := ask(bogus, "default"); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("an unknown token: %v, want Unauthenticated", err)
		}
		// The registry, likewise: its own tenant's servers, and no other's.
		list, err := registry.ListServers(asService, &registryv1.ListServersRequest{Tenant: "default"})
		if err != nil || len(list.GetServers()) != 1 || list.GetServers()[0].GetName() != "echo" {
			t.Fatalf("ListServers of its own tenant: %v %v", list, err)
		}
		if _, err := registry.ListServers(asService, &registryv1.ListServersRequest{Tenant: "research"}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("ListServers of another tenant: %v, want PermissionDenied", err)
		}
		if _, err := registry.GetServer(asService, &registryv1.GetServerRequest{Name: "research-only"}); status.Code(err) != codes.NotFound {
			t.Fatalf("GetServer of another tenant's server: %v, want NotFound (as if it did not exist)", err)
		}
		if _, err := registry.GetServer(asService, &registryv1.GetServerRequest{Name: "echo"}); err != nil {
			t.Fatalf("GetServer of its own tenant's server: %v", err)
		}
		// Every other RPC still needs the internal token.
		if _, err := policy.ApplyBundle(asService, &policyv1.ApplyBundleRequest{}); status.Code(err) == codes.OK {
			t.Fatal("ApplyBundle by a service succeeded")
		}
	})
	t.Run("policy Check invalid", func(t *testing.T) {
		_, err := policy.Check(authed, &policyv1.CheckRequest{Action: "tools/call"})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("Check without a subject: %v, want InvalidArgument", err)
		}
	})
}
