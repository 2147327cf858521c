package authsvc_test

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/authsvc"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
)

func TestClientCertificates(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "identity.yaml", `mtls:
  spiffe:
    - trust_domain: prod.example
      tenant: acme
      principal_prefix: svc.
  subjects:
    - common_name: build-bot
      principal: build-bot
      tenant: ci
      kind: user
`)
	f := newFixture(t, authsvc.Config{IdentityConfig: path})
	auth := func(c *authv1.ClientCertificate) (*authv1.Principal, error) {
		resp, err := f.svc.Authenticate(testContext(t), connect.NewRequest(&authv1.AuthenticateRequest{Server: "echo", ClientCertificate: c}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetPrincipal(), nil
	}
	p, err := auth(&authv1.ClientCertificate{SpiffeIds: []string{"spiffe://prod.example/ns/web"}})
	if err != nil || p.GetId() != "svc.ns.web" || p.GetTenant() != "acme" || p.GetKind() != authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE {
		t.Fatalf("spiffe: %v %v", p, err)
	}
	p, err = auth(&authv1.ClientCertificate{CommonName: "build-bot"})
	if err != nil || p.GetId() != "build-bot" || p.GetTenant() != "ci" || p.GetKind() != authv1.PrincipalKind_PRINCIPAL_KIND_USER {
		t.Fatalf("subject: %v %v", p, err)
	}
	for _, tt := range []struct {
		name string
		cert *authv1.ClientCertificate
		want string
	}{
		{"unknown trust domain", &authv1.ClientCertificate{SpiffeIds: []string{"spiffe://dev.example/ns/web"}}, "trust domain"},
		{"two ids", &authv1.ClientCertificate{SpiffeIds: []string{"spiffe://prod.example/a", "spiffe://prod.example/b"}}, "more than one"},
		{"no path", &authv1.ClientCertificate{SpiffeIds: []string{"spiffe://prod.example"}}, "not a principal id"},
		{"path not an id", &authv1.ClientCertificate{SpiffeIds: []string{"spiffe://prod.example/a%20b"}}, "not a principal id"},
		{"a dot in a segment", &authv1.ClientCertificate{SpiffeIds: []string{"spiffe://prod.example/ns.web"}}, "not a principal id"},
		{"an escaped slash", &authv1.ClientCertificate{SpiffeIds: []string{"spiffe://prod.example/ns%2Fweb"}}, "not a principal id"},
		{"with a port", &authv1.ClientCertificate{SpiffeIds: []string{"spiffe://prod.example:8/a"}}, "malformed"},
		{"unmapped subject", &authv1.ClientCertificate{CommonName: "intruder"}, "not mapped"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth(tt.cert)
			wantCode(t, err, connect.CodeUnauthenticated, tt.want)
		})
	}
	// Without mappings a certificate identifies nobody.
	bare := newFixture(t, authsvc.Config{})
	_, err = bare.svc.Authenticate(testContext(t), connect.NewRequest(&authv1.AuthenticateRequest{Server: "echo", ClientCertificate: &authv1.ClientCertificate{CommonName: "build-bot"}}))
	wantCode(t, err, connect.CodeUnauthenticated, "not mapped")
}

func TestParseIdentityMTLS(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, doc, want string }{
		{"upper-case trust domain", "mtls:\n  spiffe:\n    - trust_domain: Prod.example\n      tenant: acme\n", "lower-case"},
		{"trust domain twice", "mtls:\n  spiffe:\n    - trust_domain: p.example\n      tenant: a\n    - trust_domain: p.example\n      tenant: b\n", "twice"},
		{"no tenant", "mtls:\n  spiffe:\n    - trust_domain: p.example\n", "tenant"},
		{"subject without principal", "mtls:\n  subjects:\n    - common_name: x\n      tenant: a\n", "principal"},
		{"bad kind", "mtls:\n  subjects:\n    - common_name: x\n      principal: x\n      tenant: a\n      kind: robot\n", "kind"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := authsvc.ParseIdentity([]byte(tt.doc)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseIdentity = %v, want %q", err, tt.want)
			}
		})
	}
}
