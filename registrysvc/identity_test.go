package registrysvc_test

import (
	"testing"

	"connectrpc.com/connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/registrysvc"
	"google.golang.org/protobuf/proto"
)

// TestIdentityStored: a server's upstream identity (a secret's reference, never a secret)
// survives etcd as it was seeded; a scheme set to "" stays distinct from no scheme.
func TestIdentityStored(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	svc := newService(t, registrysvc.Config{}, nil)
	static := web("static", "default")
	static.Identity = &registryv1.UpstreamIdentity{Header: "X-Api-Key", Scheme: proto.String(""),
		Mode: &registryv1.UpstreamIdentity_Static{Static: &registryv1.StaticCredential{Secret: &registryv1.SecretRef{File: "/run/secrets/static"}}}}
	exchange := web("exchange", "default")
	exchange.Identity = &registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_TokenExchange{TokenExchange: &registryv1.TokenExchange{
		TokenEndpoint: "https://idp.example/token", ClientId: "gatehouse", ClientSecret: &registryv1.SecretRef{Env: "IDP_CLIENT_SECRET"}}}}
	if err := svc.Seed(ctx, []*registryv1.Server{static, exchange}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []*registryv1.Server{static, exchange} {
		resp, err := svc.GetServer(ctx, connect.NewRequest(&registryv1.GetServerRequest{Name: want.GetName()}))
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(resp.Msg.GetServer(), want) {
			t.Fatalf("GetServer(%s) = %v, want %v", want.GetName(), resp.Msg.GetServer(), want)
		}
	}
}
