package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Upstream identity modes, as the file names them (the identity block's mode).
const (
	IdentityNone          = "none"
	IdentityStatic        = "static"
	IdentityGatewayJWT    = "gateway-jwt"
	IdentityTokenExchange = "token-exchange"
)

// Bounds of a gateway-jwt token's lifetime: a few minutes, so that a token an upstream leaks
// is soon worthless, and never so short that the bridge's cache (which reuses a token for
// half its life) mints on nearly every call. authsvc enforces the same bounds.
const (
	DefaultUpstreamTokenTTL = 5 * time.Minute
	MinUpstreamTokenTTL     = 30 * time.Second
	MaxUpstreamTokenTTL     = 15 * time.Minute
)

// Limits of the identity block's fields.
const (
	maxHeaderNameBytes = 128
	maxSchemeBytes     = 64
	maxClientIDBytes   = 256
	maxAudienceBytes   = 2048
	maxScopeBytes      = 1024
	maxPathBytes       = 4096
)

// reservedHeaders are set by the bridge's transport (or by net/http): an identity header may
// not replace one of them.
var reservedHeaders = map[string]bool{
	"accept": true, "content-type": true, "content-length": true, "transfer-encoding": true,
	"connection": true, "host": true, "user-agent": true, "mcp-session-id": true,
	"mcp-protocol-version": true, "last-event-id": true, "te": true, "upgrade": true,
	"keep-alive": true, "proxy-authorization": true, "trailer": true, "cookie": true,
}

// identityYAML is a server's identity block. The secret itself is never in the file: the
// fields that would hold one exist only to refuse it with a clear error.
type identityYAML struct {
	Mode string `yaml:"mode"`
	// static: where the bridge reads the upstream's credential.
	SecretEnv  string `yaml:"secret_env"`
	SecretFile string `yaml:"secret_file"`
	ChildEnv   string `yaml:"child_env"`
	// HTTP upstreams: the header that carries the credential, and its scheme.
	Header string  `yaml:"header"`
	Scheme *string `yaml:"scheme"`
	// gateway-jwt and token-exchange.
	Audience string `yaml:"audience"`
	TTL      string `yaml:"ttl"`
	// token-exchange.
	TokenEndpoint    string `yaml:"token_endpoint"`
	ClientID         string `yaml:"client_id"`
	ClientSecretEnv  string `yaml:"client_secret_env"`
	ClientSecretFile string `yaml:"client_secret_file"`
	Resource         string `yaml:"resource"`
	Scope            string `yaml:"scope"`

	// Refused: a secret written into the file.
	Secret       string `yaml:"secret"`
	Token        string `yaml:"token"`
	Value        string `yaml:"value"`
	Password     string `yaml:"password"`
	ClientSecret string `yaml:"client_secret"`
}

// identity turns the YAML block into the registry's message; Validate judges what it holds
// beyond which fields belong to which mode.
func (y *identityYAML) identity(server string) (*registryv1.UpstreamIdentity, error) {
	bad := func(field, format string, args ...any) error {
		return &ValidationError{Server: server, Field: "identity." + field, Problem: fmt.Sprintf(format, args...)}
	}
	for field, v := range map[string]string{"secret": y.Secret, "token": y.Token, "value": y.Value, "password": y.Password} {
		if v != "" {
			return nil, bad(field, "a secret is never written in the config (it is stored and copied): name an environment variable of the bridge (secret_env) or a file (secret_file)")
		}
	}
	if y.ClientSecret != "" {
		return nil, bad("client_secret", "a secret is never written in the config (it is stored and copied): name an environment variable of the bridge (client_secret_env) or a file (client_secret_file)")
	}
	// used lists the fields set, so that a field of another mode is an error, not ignored.
	used := map[string]bool{
		"secret_env": y.SecretEnv != "", "secret_file": y.SecretFile != "", "child_env": y.ChildEnv != "",
		"header": y.Header != "", "scheme": y.Scheme != nil, "audience": y.Audience != "", "ttl": y.TTL != "",
		"token_endpoint": y.TokenEndpoint != "", "client_id": y.ClientID != "",
		"client_secret_env": y.ClientSecretEnv != "", "client_secret_file": y.ClientSecretFile != "",
		"resource": y.Resource != "", "scope": y.Scope != "",
	}
	allowed := func(mode string, fields ...string) error {
		ok := map[string]bool{}
		for _, f := range fields {
			ok[f] = true
		}
		for _, f := range sortedTrue(used) {
			if !ok[f] {
				return bad(f, "not a setting of mode %s", mode)
			}
		}
		return nil
	}
	id := &registryv1.UpstreamIdentity{Header: y.Header, Scheme: y.Scheme}
	switch y.Mode {
	case "", IdentityNone:
		if y.Mode == "" {
			return nil, bad("mode", "required: %s, %s, %s or %s", IdentityNone, IdentityStatic, IdentityGatewayJWT, IdentityTokenExchange)
		}
		if err := allowed(IdentityNone); err != nil {
			return nil, err
		}
		return nil, nil
	case IdentityStatic:
		if err := allowed(IdentityStatic, "secret_env", "secret_file", "child_env", "header", "scheme"); err != nil {
			return nil, err
		}
		id.Mode = &registryv1.UpstreamIdentity_Static{Static: &registryv1.StaticCredential{
			Secret:   &registryv1.SecretRef{Env: y.SecretEnv, File: y.SecretFile},
			ChildEnv: y.ChildEnv,
		}}
	case IdentityGatewayJWT:
		if err := allowed(IdentityGatewayJWT, "audience", "ttl", "header", "scheme"); err != nil {
			return nil, err
		}
		g := &registryv1.GatewayToken{Audience: y.Audience}
		if y.TTL != "" {
			d, err := time.ParseDuration(y.TTL)
			if err != nil {
				return nil, bad("ttl", "%q is not a duration such as 5m", y.TTL)
			}
			g.Ttl = durationpb.New(d)
		}
		id.Mode = &registryv1.UpstreamIdentity_GatewayJwt{GatewayJwt: g}
	case IdentityTokenExchange:
		if err := allowed(IdentityTokenExchange, "token_endpoint", "client_id", "client_secret_env", "client_secret_file", "audience", "resource", "scope", "header", "scheme"); err != nil {
			return nil, err
		}
		id.Mode = &registryv1.UpstreamIdentity_TokenExchange{TokenExchange: &registryv1.TokenExchange{
			TokenEndpoint: y.TokenEndpoint,
			ClientId:      y.ClientID,
			ClientSecret:  &registryv1.SecretRef{Env: y.ClientSecretEnv, File: y.ClientSecretFile},
			Audience:      y.Audience,
			Resource:      y.Resource,
			Scope:         y.Scope,
		}}
	default:
		return nil, bad("mode", "%q is not %s, %s, %s or %s", y.Mode, IdentityNone, IdentityStatic, IdentityGatewayJWT, IdentityTokenExchange)
	}
	return id, nil
}

func sortedTrue(m map[string]bool) []string {
	var out []string
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	slices.Sort(out) // so the error reported is always the same one
	return out
}

// validateIdentity checks a server's upstream identity against its transport: stdio servers
// take none or a static secret handed to the child in an environment variable (a child has no
// per-call header to carry a minted or exchanged token); HTTP servers take every mode, the
// credential in a header.
func validateIdentity(s *registryv1.Server, bad func(string, string, ...any) error) error {
	id := s.GetIdentity()
	if id == nil {
		return nil
	}
	stdio := s.GetTransport() == registryv1.Transport_TRANSPORT_STDIO
	if id.GetMode() == nil {
		if id.GetHeader() != "" || id.Scheme != nil {
			return bad("identity.mode", "header and scheme need a mode that sends a credential")
		}
		return nil
	}
	if stdio && (id.GetHeader() != "" || id.Scheme != nil) {
		return bad("identity.header", "a stdio server gets its credential in an environment variable (child_env), not a header")
	}
	if h := id.GetHeader(); h != "" {
		if len(h) > maxHeaderNameBytes || !isToken(h) {
			return bad("identity.header", "%q is not an HTTP header name (at most %d bytes)", h, maxHeaderNameBytes)
		}
		if reservedHeaders[strings.ToLower(h)] {
			return bad("identity.header", "%s is set by the gateway's transport; choose another header", h)
		}
	}
	if id.Scheme != nil && *id.Scheme != "" && (len(*id.Scheme) > maxSchemeBytes || !isToken(*id.Scheme)) {
		return bad("identity.scheme", "%q is not an authentication scheme such as Bearer (at most %d bytes; empty sends the credential alone)", *id.Scheme, maxSchemeBytes)
	}
	switch m := id.GetMode().(type) {
	case *registryv1.UpstreamIdentity_Static:
		st := m.Static
		if err := validateSecretRef(st.GetSecret(), "secret", bad); err != nil {
			return err
		}
		switch {
		case stdio && st.GetChildEnv() == "":
			return bad("identity.child_env", "required for a stdio server: the child's environment variable that receives the secret")
		case stdio && !validEnvKey(st.GetChildEnv()):
			return bad("identity.child_env", "%q is not a variable name ([A-Za-z_][A-Za-z0-9_]*)", st.GetChildEnv())
		case stdio && strings.HasPrefix(strings.ToUpper(st.GetChildEnv()), "GATEHOUSE_"):
			return bad("identity.child_env", "GATEHOUSE_ variables are the gateway's own")
		case stdio:
			if _, clash := s.GetEnv()[st.GetChildEnv()]; clash {
				return bad("identity.child_env", "%s is also set in env", st.GetChildEnv())
			}
		case st.GetChildEnv() != "":
			return bad("identity.child_env", "for stdio servers only; an http server gets the secret in a header")
		}
	case *registryv1.UpstreamIdentity_GatewayJwt:
		if stdio {
			return bad("identity.mode", "gateway-jwt is for http servers only: a stdio child has no per-call header to carry a token (use none or static)")
		}
		g := m.GatewayJwt
		if err := validateAudience(g.GetAudience(), "identity.audience", bad); err != nil {
			return err
		}
		if ttl := g.GetTtl(); ttl != nil {
			if err := ttl.CheckValid(); err != nil {
				return bad("identity.ttl", "%v", err)
			}
			if d := ttl.AsDuration(); d < MinUpstreamTokenTTL || d > MaxUpstreamTokenTTL || d%time.Second != 0 {
				return bad("identity.ttl", "%v: want whole seconds from %v to %v", d, MinUpstreamTokenTTL, MaxUpstreamTokenTTL)
			}
		}
	case *registryv1.UpstreamIdentity_TokenExchange:
		if stdio {
			return bad("identity.mode", "token-exchange is for http servers only: a stdio child has no per-call header to carry a token (use none or static)")
		}
		x := m.TokenExchange
		if err := validateEndpoint(x.GetTokenEndpoint(), bad); err != nil {
			return err
		}
		if c := x.GetClientId(); c == "" || len(c) > maxClientIDBytes || !visible(c) {
			return bad("identity.client_id", "required: the gateway's client id at the authorization server (1 to %d visible ASCII characters)", maxClientIDBytes)
		}
		if err := validateSecretRef(x.GetClientSecret(), "client_secret", bad); err != nil {
			return err
		}
		if err := validateAudience(x.GetAudience(), "identity.audience", bad); err != nil {
			return err
		}
		if r := x.GetResource(); r != "" {
			u, err := url.Parse(r)
			if err != nil || !u.IsAbs() || u.Fragment != "" || len(r) > maxAudienceBytes {
				return bad("identity.resource", "%q: want an absolute URI without a fragment (RFC 8707)", r)
			}
		}
		if sc := x.GetScope(); len(sc) > maxScopeBytes || !printable(sc) {
			return bad("identity.scope", "want space-separated scopes of printable ASCII, at most %d bytes", maxScopeBytes)
		}
	default:
		return bad("identity.mode", "unknown mode")
	}
	return nil
}

// validateSecretRef accepts exactly one of an environment variable (not one of the gateway's
// own GATEHOUSE_ variables, which would hand an upstream the internal token) and an absolute
// file path.
func validateSecretRef(ref *registryv1.SecretRef, name string, bad func(string, string, ...any) error) error {
	env, file := ref.GetEnv(), ref.GetFile()
	envKey, fileKey := name+"_env", name+"_file"
	envField, fileField := "identity."+envKey, "identity."+fileKey
	switch {
	case env == "" && file == "":
		return bad(envField, "required: name the bridge's environment variable (%s) or a file (%s) that holds the secret", envKey, fileKey)
	case env != "" && file != "":
		return bad(envField, "set %s or %s, not both", envKey, fileKey)
	case env != "" && !validEnvKey(env):
		return bad(envField, "%q is not a variable name ([A-Za-z_][A-Za-z0-9_]*)", env)
	case env != "" && strings.HasPrefix(strings.ToUpper(env), "GATEHOUSE_"):
		return bad(envField, "GATEHOUSE_ variables are the gateway's own secrets and never go to an upstream")
	case file != "" && (len(file) > maxPathBytes || strings.ContainsRune(file, 0) || !filepath.IsAbs(file)):
		return bad(fileField, "want an absolute path (the bridge may run elsewhere than the config's directory), at most %d bytes", maxPathBytes)
	}
	return nil
}

func validateAudience(aud, field string, bad func(string, string, ...any) error) error {
	if aud == "" {
		return nil
	}
	if len(aud) > maxAudienceBytes || !visible(aud) {
		return bad(field, "want 1 to %d visible ASCII characters", maxAudienceBytes)
	}
	return nil
}

// validateEndpoint accepts a token endpoint: an absolute https URL (http on a loopback host
// only, for development), without credentials or a fragment.
func validateEndpoint(raw string, bad func(string, string, ...any) error) error {
	const field = "identity.token_endpoint"
	if raw == "" {
		return bad(field, "required: the authorization server's token endpoint")
	}
	u, err := url.Parse(raw)
	if err != nil || len(raw) > maxURLBytes || u.Host == "" || u.User != nil || u.Fragment != "" {
		return bad(field, "%q: want an absolute URL without credentials or fragment", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if h := u.Hostname(); h != "localhost" && h != "127.0.0.1" && h != "::1" {
			return bad(field, "%q: http is allowed on a loopback host only (the client secret and tokens cross it); use https", raw)
		}
	default:
		return bad(field, "%q: want https", raw)
	}
	return nil
}

// isToken reports whether s is an RFC 9110 token (a header name, an auth scheme).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

func visible(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
