package bridgesvc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/secret"
	"github.com/gatehouse-mcp/gatehouse/internal/upstreamtoken"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/streamable"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/tokenexchange"
)

// Upstream identity: how the bridge tells an upstream who calls, as the server's identity
// config says (registry UpstreamIdentity). The host's own credential never goes upstream;
// what does is one of
//   - static: a secret of the upstream's own, read from the bridge's environment or a file
//     when needed (never stored in the registry), in a header, or for a stdio child in an
//     environment variable;
//   - gateway-jwt: a token authsvc mints for the caller and the upstream, cached for half
//     its life (internal/upstreamtoken);
//   - token-exchange: the host's OpenID Connect token, which the ingress passes along for
//     such servers only, exchanged at the upstream's authorization server (RFC 8693) for one
//     whose audience is the upstream, cached until shortly before it expires.

// Option configures a Service beyond its Config.
type Option func(*Service)

// WithUpstreamTokens gives the bridge authsvc (its Connect client in split mode, the service
// itself in one process) to mint the tokens of gateway-jwt servers with. Without it such
// servers cannot be called.
func WithUpstreamTokens(m upstreamtoken.Minter) Option {
	return func(s *Service) { s.tokens = upstreamtoken.New(m, nil) }
}

// Bounds of secrets.
const (
	// secretFileTTL is how long a secret read from a file is used before the file is read
	// again: a rotated secret file takes effect within it, without a restart.
	secretFileTTL = 30 * time.Second
	// maxSecretFiles bounds the cache of secret files; past it the cache starts over.
	maxSecretFiles = 1024
	// maxHeaderSecret bounds a secret sent in a header.
	maxHeaderSecret = 8 << 10
)

// subjectKey carries the host's token for a token-exchange server through a call's context,
// from the request that brought it to the transport that needs it, and no further.
type subjectKey struct{}

func withSubject(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return context.WithValue(ctx, subjectKey{}, token)
}

func subjectOf(ctx context.Context) string {
	s, _ := ctx.Value(subjectKey{}).(string)
	return s
}

// credential returns the header an HTTP upstream started for who is sent on every request,
// nil when the server's identity is none.
func (s *Service) credential(srv *registryv1.Server, who owner) streamable.Credential {
	id := srv.GetIdentity()
	if id.GetMode() == nil {
		return nil
	}
	name := cmp.Or(id.GetHeader(), "Authorization")
	scheme := "Bearer"
	if id.Scheme != nil {
		scheme = *id.Scheme
	}
	value := func(v string) string {
		if scheme == "" {
			return v
		}
		return scheme + " " + v
	}
	switch m := id.GetMode().(type) {
	case *registryv1.UpstreamIdentity_Static:
		ref := m.Static.GetSecret()
		return func(context.Context) (string, string, error) {
			v, err := s.secrets.read(ref)
			if err != nil {
				return "", "", err
			}
			if len(v) > maxHeaderSecret || !headerSafe(v) {
				return "", "", fmt.Errorf("%w: the secret of server %s is over %d bytes or holds characters a header cannot carry", ErrIdentity, srv.GetName(), maxHeaderSecret)
			}
			return name, value(v), nil
		}
	case *registryv1.UpstreamIdentity_GatewayJwt:
		req := &authv1.MintUpstreamTokenRequest{
			PrincipalId: who.principal, Tenant: who.tenant, Groups: who.groups,
			Audience:   cmp.Or(m.GatewayJwt.GetAudience(), srv.GetUrl()),
			TtlSeconds: int64(m.GatewayJwt.GetTtl().AsDuration() / time.Second),
		}
		return func(ctx context.Context) (string, string, error) {
			tok, err := s.mint(ctx, req)
			if err != nil {
				return "", "", err
			}
			return name, value(tok), nil
		}
	case *registryv1.UpstreamIdentity_TokenExchange:
		x := &exchanger{s: s, spec: m.TokenExchange, audience: cmp.Or(m.TokenExchange.GetAudience(), srv.GetUrl())}
		return func(ctx context.Context) (string, string, error) {
			tok, err := x.token(ctx)
			if err != nil {
				return "", "", err
			}
			return name, value(tok), nil
		}
	}
	return func(context.Context) (string, string, error) {
		return "", "", fmt.Errorf("%w: server %s has an identity mode this bridge does not know", ErrIdentity, srv.GetName())
	}
}

// mint gets a gateway-jwt token through the cache. authsvc's own errors are not wrapped (the
// bridge would pass a *connect.Error on as is): their text is kept for the log.
func (s *Service) mint(ctx context.Context, req *authv1.MintUpstreamTokenRequest) (string, error) {
	if s.tokens == nil {
		return "", fmt.Errorf("%w: gateway-jwt needs authsvc, and this bridge has none (split mode: --auth-addr)", ErrIdentity)
	}
	if req.GetPrincipalId() == "" || req.GetTenant() == "" {
		return "", fmt.Errorf("%w: gateway-jwt needs the caller's principal and tenant, and the request named none", ErrIdentity)
	}
	tok, err := s.tokens.Token(ctx, req)
	switch {
	case err == nil:
		return tok, nil
	case ctx.Err() != nil:
		return "", ctx.Err()
	case connect.CodeOf(err) == connect.CodeInvalidArgument:
		return "", fmt.Errorf("%w: authsvc refused to mint: %v", ErrIdentity, err)
	}
	return "", fmt.Errorf("%w: mint an upstream token: %v", ErrIdentityUnavailable, err)
}

// exchanger is one upstream's token exchange. It remembers the last token it got, for the
// upstream requests no host request carries a token for (the DELETE that ends a session).
type exchanger struct {
	s        *Service
	spec     *registryv1.TokenExchange
	audience string

	mu   sync.Mutex
	last tokenexchange.Token
}

func (x *exchanger) token(ctx context.Context) (string, error) {
	subject := subjectOf(ctx)
	if subject == "" {
		x.mu.Lock()
		last := x.last
		x.mu.Unlock()
		if last.Value != "" && time.Now().Before(last.Expires) {
			return last.Value, nil
		}
		return "", ErrNoSubjectToken
	}
	clientSecret, err := x.s.secrets.read(x.spec.GetClientSecret())
	if err != nil {
		return "", err
	}
	tok, err := x.s.exchange.Exchange(ctx, tokenexchange.Request{
		Endpoint: x.spec.GetTokenEndpoint(), ClientID: x.spec.GetClientId(), ClientSecret: clientSecret,
		SubjectToken: subject, Audience: x.audience, Resource: x.spec.GetResource(), Scope: x.spec.GetScope(),
	})
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return "", ctx.Err()
	case errors.Is(err, tokenexchange.ErrRefused):
		return "", fmt.Errorf("%w: %v", ErrExchangeRefused, err)
	default:
		return "", fmt.Errorf("%w: %v", ErrIdentityUnavailable, err)
	}
	if !tok.Expires.IsZero() {
		x.mu.Lock()
		if tok.Expires.After(x.last.Expires) {
			x.last = tok
		}
		x.mu.Unlock()
	}
	return tok.Value, nil
}

// childEnv is a stdio server's environment: its configured variables and, for a static
// identity, the secret in the variable its config names.
func (s *Service) childEnv(srv *registryv1.Server) (map[string]string, error) {
	st := srv.GetIdentity().GetStatic()
	if st == nil {
		return srv.GetEnv(), nil
	}
	v, err := s.secrets.read(st.GetSecret())
	if err != nil {
		return nil, err
	}
	if strings.ContainsRune(v, 0) {
		return nil, fmt.Errorf("%w: the secret of server %s holds a NUL byte, which an environment variable cannot carry", ErrIdentity, srv.GetName())
	}
	env := maps.Clone(srv.GetEnv())
	if env == nil {
		env = map[string]string{}
	}
	env[st.GetChildEnv()] = v
	return env, nil
}

// secrets reads the secrets the config names: an environment variable of the bridge, or a
// file (secret.ReadFile: only its owner may read it), read again every secretFileTTL.
type secrets struct {
	getenv func(string) string
	now    func() time.Time

	mu    sync.Mutex
	files map[string]cachedSecret
}

type cachedSecret struct {
	value string
	read  time.Time
}

func newSecrets() *secrets {
	return &secrets{getenv: os.Getenv, now: time.Now, files: map[string]cachedSecret{}}
}

// read returns the secret ref names. Errors name the variable or file, never a value.
func (c *secrets) read(ref *registryv1.SecretRef) (string, error) {
	if env := ref.GetEnv(); env != "" {
		v := c.getenv(env)
		if v == "" {
			return "", fmt.Errorf("%w: the bridge's environment variable %s is not set", ErrIdentity, env)
		}
		return v, nil
	}
	path := ref.GetFile()
	if path == "" {
		return "", fmt.Errorf("%w: the config names no secret", ErrIdentity)
	}
	now := c.now()
	c.mu.Lock()
	e, ok := c.files[path]
	c.mu.Unlock()
	if ok && now.Sub(e.read) < secretFileTTL {
		return e.value, nil
	}
	v, err := secret.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: secret file: %v", ErrIdentity, err)
	}
	c.mu.Lock()
	if len(c.files) >= maxSecretFiles {
		clear(c.files)
	}
	c.files[path] = cachedSecret{value: v, read: now}
	c.mu.Unlock()
	return v, nil
}

// headerSafe reports whether a secret can travel in a header value: printable ASCII.
func headerSafe(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return v != ""
}
