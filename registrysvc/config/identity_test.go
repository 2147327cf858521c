package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

const httpServer = "servers:\n  - name: up\n    transport: http\n    url: https://up.example/mcp\n    identity:\n"
const stdioServer = "servers:\n  - name: up\n    transport: stdio\n    command: [x]\n    env: {LOG_LEVEL: debug}\n    identity:\n"

func TestParseIdentity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data string
		want       *registryv1.UpstreamIdentity
	}{
		{"none", httpServer + "      mode: none\n", nil},
		{"static from env", httpServer + "      mode: static\n      secret_env: UP_TOKEN\n",
			&registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_Static{Static: &registryv1.StaticCredential{Secret: &registryv1.SecretRef{Env: "UP_TOKEN"}}}}},
		{"static from file, own header, no scheme", httpServer + "      mode: static\n      secret_file: /run/secrets/up\n      header: X-Api-Key\n      scheme: \"\"\n",
			&registryv1.UpstreamIdentity{Header: "X-Api-Key", Scheme: proto.String(""),
				Mode: &registryv1.UpstreamIdentity_Static{Static: &registryv1.StaticCredential{Secret: &registryv1.SecretRef{File: "/run/secrets/up"}}}}},
		{"static for a stdio child", stdioServer + "      mode: static\n      secret_env: UP_TOKEN\n      child_env: API_TOKEN\n",
			&registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_Static{Static: &registryv1.StaticCredential{Secret: &registryv1.SecretRef{Env: "UP_TOKEN"}, ChildEnv: "API_TOKEN"}}}},
		{"gateway-jwt with defaults", httpServer + "      mode: gateway-jwt\n",
			&registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_GatewayJwt{GatewayJwt: &registryv1.GatewayToken{}}}},
		{"gateway-jwt configured", httpServer + "      mode: gateway-jwt\n      audience: urn:up\n      ttl: 2m\n      scheme: Token\n",
			&registryv1.UpstreamIdentity{Scheme: proto.String("Token"), Mode: &registryv1.UpstreamIdentity_GatewayJwt{GatewayJwt: &registryv1.GatewayToken{Audience: "urn:up", Ttl: durationpb.New(2 * time.Minute)}}}},
		{"token-exchange", httpServer + "      mode: token-exchange\n      token_endpoint: https://idp.example/token\n      client_id: gatehouse\n      client_secret_file: /run/secrets/idp\n      audience: https://up.example\n      resource: https://up.example/mcp\n      scope: read write\n",
			&registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_TokenExchange{TokenExchange: &registryv1.TokenExchange{
				TokenEndpoint: "https://idp.example/token", ClientId: "gatehouse", ClientSecret: &registryv1.SecretRef{File: "/run/secrets/idp"},
				Audience: "https://up.example", Resource: "https://up.example/mcp", Scope: "read write"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := config.Parse([]byte(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Servers[0].GetIdentity(); !proto.Equal(got, tt.want) {
				t.Fatalf("identity = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseIdentityErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data, want string
	}{
		{"secret in the yaml", httpServer + "      mode: static\n      secret: hunter2hunter2\n", "identity.secret: a secret is never written in the config"},
		{"token in the yaml", httpServer + "      mode: static\n      token: abc\n", "identity.token: a secret is never written"},
		{"client secret in the yaml", httpServer + "      mode: token-exchange\n      client_secret: abc\n", "identity.client_secret: a secret is never written"},
		{"unknown key", httpServer + "      mode: static\n      secret_envv: X\n", "field secret_envv not found"},
		{"no mode", httpServer + "      secret_env: X\n", "identity.mode: required"},
		{"unknown mode", httpServer + "      mode: mtls\n", `identity.mode: "mtls" is not none, static, gateway-jwt or token-exchange`},
		{"mode is case-sensitive", httpServer + "      mode: Static\n", `"Static" is not`},
		{"none with settings", httpServer + "      mode: none\n      header: X-Key\n", "identity.header: not a setting of mode none"},
		{"static without a secret", httpServer + "      mode: static\n", "identity.secret_env: required"},
		{"static with env and file", httpServer + "      mode: static\n      secret_env: A\n      secret_file: /a\n", "identity.secret_env: set secret_env or secret_file, not both"},
		{"static env not a name", httpServer + "      mode: static\n      secret_env: A-B\n", `identity.secret_env: "A-B" is not a variable name`},
		{"static env of the gateway", httpServer + "      mode: static\n      secret_env: GATEHOUSE_INTERNAL_TOKEN\n", "identity.secret_env: GATEHOUSE_ variables are the gateway's own"},
		{"static relative file", httpServer + "      mode: static\n      secret_file: secrets/up\n", "identity.secret_file: want an absolute path"},
		{"static with a ttl", httpServer + "      mode: static\n      secret_env: A\n      ttl: 5m\n", "identity.ttl: not a setting of mode static"},
		{"static child_env on http", httpServer + "      mode: static\n      secret_env: A\n      child_env: B\n", "identity.child_env: for stdio servers only"},
		{"stdio static without child_env", stdioServer + "      mode: static\n      secret_env: A\n", "identity.child_env: required for a stdio server"},
		{"stdio child_env clashes with env", stdioServer + "      mode: static\n      secret_env: A\n      child_env: LOG_LEVEL\n", "identity.child_env: LOG_LEVEL is also set in env"},
		{"stdio child_env of the gateway", stdioServer + "      mode: static\n      secret_env: A\n      child_env: GATEHOUSE_STDIO_CHILD\n", "identity.child_env: GATEHOUSE_ variables"},
		{"stdio header", stdioServer + "      mode: static\n      secret_env: A\n      child_env: B\n      header: X-Key\n", "identity.header: a stdio server gets its credential in an environment variable"},
		{"stdio gateway-jwt", stdioServer + "      mode: gateway-jwt\n", "identity.mode: gateway-jwt is for http servers only"},
		{"stdio token-exchange", stdioServer + "      mode: token-exchange\n      token_endpoint: https://idp.example/token\n      client_id: g\n      client_secret_env: S\n", "identity.mode: token-exchange is for http servers only"},
		{"header reserved", httpServer + "      mode: gateway-jwt\n      header: mcp-session-id\n", "identity.header: mcp-session-id is set by the gateway's transport"},
		{"header not a name", httpServer + "      mode: gateway-jwt\n      header: \"X Key\"\n", "identity.header: \"X Key\" is not an HTTP header name"},
		{"scheme not a token", httpServer + "      mode: gateway-jwt\n      scheme: \"Bearer x\"\n", "identity.scheme"},
		{"ttl not a duration", httpServer + "      mode: gateway-jwt\n      ttl: 5\n", `identity.ttl: "5" is not a duration`},
		{"ttl too short", httpServer + "      mode: gateway-jwt\n      ttl: 10s\n", "identity.ttl: 10s: want whole seconds from 30s to 15m0s"},
		{"ttl too long", httpServer + "      mode: gateway-jwt\n      ttl: 1h\n", "identity.ttl: 1h0m0s: want whole seconds"},
		{"audience with a space", httpServer + "      mode: gateway-jwt\n      audience: a b\n", "identity.audience"},
		{"exchange without endpoint", httpServer + "      mode: token-exchange\n      client_id: g\n      client_secret_env: S\n", "identity.token_endpoint: required"},
		{"exchange over plain http", httpServer + "      mode: token-exchange\n      token_endpoint: http://idp.example/token\n      client_id: g\n      client_secret_env: S\n", "http is allowed on a loopback host only"},
		{"exchange endpoint with credentials", httpServer + "      mode: token-exchange\n      token_endpoint: https://u:p@idp.example/token\n      client_id: g\n      client_secret_env: S\n", "without credentials"},
		{"exchange without client id", httpServer + "      mode: token-exchange\n      token_endpoint: https://idp.example/token\n      client_secret_env: S\n", "identity.client_id: required"},
		{"exchange without client secret", httpServer + "      mode: token-exchange\n      token_endpoint: https://idp.example/token\n      client_id: g\n", "identity.client_secret_env: required"},
		{"exchange relative resource", httpServer + "      mode: token-exchange\n      token_endpoint: https://idp.example/token\n      client_id: g\n      client_secret_env: S\n      resource: /mcp\n", "identity.resource"},
		{"exchange with a ttl", httpServer + "      mode: token-exchange\n      token_endpoint: https://idp.example/token\n      client_id: g\n      client_secret_env: S\n      ttl: 1m\n", "identity.ttl: not a setting of mode token-exchange"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "field ") {
				var ve *config.ValidationError
				if !errors.As(err, &ve) || ve.Server != "up" {
					t.Fatalf("err = %v, want a *ValidationError naming server up", err)
				}
			}
		})
	}
}

// TestValidateIdentity judges messages that did not come from the file (a registry entry
// written another way): an identity with a header but no mode, or a mode with no settings.
func TestValidateIdentity(t *testing.T) {
	t.Parallel()
	srv := func(id *registryv1.UpstreamIdentity) *registryv1.Server {
		return &registryv1.Server{Name: "up", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: "https://up.example/mcp", Identity: id}
	}
	for _, tt := range []struct {
		name  string
		id    *registryv1.UpstreamIdentity
		field string
	}{
		{"header without a mode", &registryv1.UpstreamIdentity{Header: "X-Key"}, "identity.mode"},
		{"static without a secret ref", &registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_Static{Static: &registryv1.StaticCredential{}}}, "identity.secret_env"},
		{"ttl not whole seconds", &registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_GatewayJwt{GatewayJwt: &registryv1.GatewayToken{Ttl: durationpb.New(time.Minute + time.Millisecond)}}}, "identity.ttl"},
		{"file with NUL", &registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_Static{Static: &registryv1.StaticCredential{Secret: &registryv1.SecretRef{File: "/a\x00b"}}}}, "identity.secret_file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ve *config.ValidationError
			if err := config.Validate(srv(tt.id)); !errors.As(err, &ve) || ve.Field != tt.field {
				t.Fatalf("Validate = %v, want a *ValidationError of %s", err, tt.field)
			}
		})
	}
	if err := config.Validate(srv(&registryv1.UpstreamIdentity{})); err != nil {
		t.Fatalf("an empty identity (mode none) = %v, want nil", err)
	}
}
