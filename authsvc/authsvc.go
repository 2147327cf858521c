// Package authsvc turns the credential an MCP host presents into a Principal: a JWT of a
// configured OpenID Connect issuer (--identity-config; verified against the issuer's
// published keys, audience = this gateway), a gateway-issued API token (stored in etcd only
// as its SHA-256 digest, scoped to a tenant, revocable at once) or, for servers an operator
// opened to it, no credential at all (a fixed anonymous principal). authsvc answers who is calling, never whether they may:
// that is policysvc's PermissionDenied, so authsvc's only refusal is Unauthenticated.
package authsvc

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/authsvc/internal/oidc"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults of the configuration.
const (
	DefaultListen             = "127.0.0.1:7101"
	DefaultKeyPrefix          = "/gatehouse/auth/"
	DefaultAnonymousPrincipal = "anonymous"
	DefaultAnonymousTenant    = "default"
)

// Config is the auth service's configuration.
type Config struct {
	// Listen is the address the standalone binary serves on.
	Listen string
	// KeyPrefix is where tokens live in etcd. Empty means DefaultKeyPrefix.
	KeyPrefix string
	// AnonymousServers is a comma-separated list of server names that hosts may use without
	// a credential, as the anonymous principal. Empty (the default) allows none.
	AnonymousServers string
	// AnonymousPrincipal and AnonymousTenant identify anonymous callers; empty means
	// DefaultAnonymousPrincipal and DefaultAnonymousTenant.
	AnonymousPrincipal string
	AnonymousTenant    string
	// MaxWatchers bounds concurrent WatchRevocations streams; 0 means DefaultMaxWatchers.
	MaxWatchers int
	// IdentityConfig is the identity file: the gateway's resource identifier and the OpenID
	// Connect issuers whose JWTs are accepted (docs/identity.md). Empty: API tokens only.
	IdentityConfig string
	// UpstreamTokenIssuer is the iss of the tokens minted for upstreams (gateway-jwt); empty
	// means the identity file's resource, else DefaultUpstreamTokenIssuer.
	UpstreamTokenIssuer string
	// Clock is the time source for token expiry; nil means time.Now. Not a flag: tests set it.
	Clock func() time.Time
	// IssuerClient fetches issuers' discovery documents and keys; nil means a client with
	// timeouts that follows no redirects. Not a flag.
	IssuerClient *http.Client
	// PolicyAddr is policysvc's address, which the standalone binary asks to decide admin
	// requests (empty: admin RPCs are refused to every caller).
	PolicyAddr string
	// Authorize decides admin requests (admin.go); the standalone binary makes it from
	// PolicyAddr, single-process mode from its policysvc. Not a flag.
	Authorize Authorizer
}

// RegisterFlags binds the configuration to flags with their defaults. Environment fallbacks
// (GATEHOUSE_AUTH_<FLAG>) are svcmain's, applied to every flag alike.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", DefaultListen, "address to serve on")
	fs.StringVar(&c.KeyPrefix, "key-prefix", DefaultKeyPrefix, "etcd key prefix of the token store")
	fs.StringVar(&c.AnonymousServers, "anonymous-servers", "", "comma-separated servers hosts may use without a credential (empty: none)")
	fs.StringVar(&c.AnonymousPrincipal, "anonymous-principal", DefaultAnonymousPrincipal, "principal id of anonymous callers")
	fs.StringVar(&c.AnonymousTenant, "anonymous-tenant", DefaultAnonymousTenant, "tenant of anonymous callers")
	fs.IntVar(&c.MaxWatchers, "max-watchers", DefaultMaxWatchers, "most concurrent WatchRevocations streams (one per ingress replica)")
	fs.StringVar(&c.IdentityConfig, "identity-config", "", "YAML file naming the gateway's resource URL and the OpenID Connect issuers whose tokens are accepted (empty: API tokens only)")
	fs.StringVar(&c.PolicyAddr, "policy-addr", "127.0.0.1:7102", "policysvc address, which decides operators' admin requests (empty: admin RPCs refused to every caller)")
	fs.StringVar(&c.UpstreamTokenIssuer, "upstream-token-issuer", "", "iss of the JWTs minted for upstreams (gateway-jwt; empty: the identity file's resource, else \"gatehouse\")")
}

// Etcd is what the token store needs of an etcd client (*clientv3.Client has it): keys,
// leases so that expired tokens are removed by etcd itself, and watches for WatchRevocations.
type Etcd interface {
	clientv3.KV
	clientv3.Lease
	clientv3.Watcher
}

// Service authenticates credentials and manages API tokens.
type Service struct {
	tokens    *tokenStore
	anonymous map[string]bool // server names open to anonymous callers
	anonID    string
	anonTen   string
	now       func() time.Time
	logger    *slog.Logger
	// verifier checks OpenID Connect JWTs; nil when no issuer is configured.
	verifier *oidc.Verifier
	resource string   // the gateway's resource identifier; "" without issuers
	scopes   []string // every scope some issuer requires
	// certs maps verified client certificates; nil when none is mapped.
	certs *certMapper
	// authorize decides admin requests; nil refuses every operator's.
	authorize Authorizer
	// watchers holds one slot per open WatchRevocations stream.
	watchers chan struct{}
	// closing ends when Close is called: the WatchRevocations streams end.
	closing context.Context
	close   context.CancelFunc
	// keys sign upstream tokens (keys.go); issuer is their iss.
	keys   *keyring
	issuer string
}

// New checks the configuration and returns the service; it does not contact etcd. kv stays
// the caller's to close.
func New(cfg Config, kv Etcd, logger *slog.Logger) (*Service, error) {
	if kv == nil {
		return nil, errors.New("authsvc: an etcd client is required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	prefix := cfg.KeyPrefix
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	s := &Service{
		anonymous: map[string]bool{},
		anonID:    orDefault(cfg.AnonymousPrincipal, DefaultAnonymousPrincipal),
		anonTen:   orDefault(cfg.AnonymousTenant, DefaultAnonymousTenant),
		now:       cfg.Clock,
		logger:    logger,
		authorize: cfg.Authorize,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if cfg.MaxWatchers < 0 {
		return nil, fmt.Errorf("authsvc: max watchers must not be negative (%d)", cfg.MaxWatchers)
	}
	s.watchers = make(chan struct{}, cmp.Or(cfg.MaxWatchers, DefaultMaxWatchers))
	s.closing, s.close = context.WithCancel(context.Background())
	if !ident.ValidID(s.anonID) {
		return nil, fmt.Errorf("authsvc: anonymous principal %q: want 1 to %d of [A-Za-z0-9._@-]", s.anonID, ident.MaxIDBytes)
	}
	if !ident.ValidID(s.anonTen) {
		return nil, fmt.Errorf("authsvc: anonymous tenant %q: want 1 to %d of [A-Za-z0-9._@-]", s.anonTen, ident.MaxIDBytes)
	}
	for name := range strings.SplitSeq(cfg.AnonymousServers, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !ident.ValidServerName(name) {
			return nil, fmt.Errorf("authsvc: anonymous server %q is not a server name ([a-z0-9][a-z0-9._-]{0,62})", name)
		}
		s.anonymous[name] = true
	}
	s.tokens = &tokenStore{kv: kv, prefix: prefix, now: s.now}
	s.issuer = cfg.UpstreamTokenIssuer
	if cfg.IdentityConfig != "" {
		id, err := ReadIdentity(cfg.IdentityConfig)
		if err != nil {
			return nil, fmt.Errorf("authsvc: %w", err)
		}
		if s.issuer == "" {
			s.issuer = id.Resource // the gateway's public URL, when the file names it
		}
		if len(id.SPIFFE)+len(id.Subjects) > 0 {
			if s.certs, err = newCertMapper(id.SPIFFE, id.Subjects); err != nil {
				return nil, fmt.Errorf("authsvc: %w", err)
			}
		}
		if len(id.Issuers) > 0 {
			client := cfg.IssuerClient
			if client == nil {
				client = oidc.NewHTTPClient()
			}
			if s.verifier, err = oidc.New(id.Issuers, client, s.now, logger); err != nil {
				return nil, fmt.Errorf("authsvc: %w", err)
			}
			s.resource = id.Resource
			for _, c := range id.Issuers {
				for _, sc := range c.RequiredScopes {
					if !slices.Contains(s.scopes, sc) {
						s.scopes = append(s.scopes, sc)
					}
				}
			}
			logger.Info("OpenID Connect issuers accepted", "issuers", strings.Join(s.verifier.Issuers(), ","), "resource", s.resource)
		}
	}
	if s.issuer == "" {
		s.issuer = DefaultUpstreamTokenIssuer
	}
	if len(s.issuer) > maxAudienceBytes || !visibleASCII(s.issuer) {
		return nil, fmt.Errorf("authsvc: upstream token issuer %q: want 1 to %d visible ASCII characters", s.issuer, maxAudienceBytes)
	}
	s.keys = newKeyring(s.closing, kv, prefix, s.now, logger)
	if len(s.anonymous) > 0 {
		logger.Info("anonymous access enabled", "servers", strings.Join(sortedKeys(s.anonymous), ","), "principal", s.anonID, "tenant", s.anonTen)
	}
	return s, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Handlers returns the AuthService handler to mount.
func (s *Service) Handlers() []rpcserver.Handler {
	path, h := authv1connect.NewAuthServiceHandler(s, connect.WithReadMaxBytes(maxRequestBytes))
	return []rpcserver.Handler{{Service: authv1connect.AuthServiceName, Path: path, Handler: h}}
}

// Authenticate implements authv1connect.AuthServiceHandler.
func (s *Service) Authenticate(ctx context.Context, req *connect.Request[authv1.AuthenticateRequest]) (*connect.Response[authv1.AuthenticateResponse], error) {
	ctx, span := telemetry.StartHandler(ctx, tracerScope, authv1connect.AuthServiceAuthenticateProcedure)
	p, err := s.authenticate(ctx, req.Msg.GetCredential(), req.Msg.GetServer(), req.Msg.GetClientCertificate())
	s.endAuthenticate(ctx, span, req.Msg.GetServer(), p, err)
	if err != nil {
		return nil, s.toConnect(err)
	}
	return connect.NewResponse(&authv1.AuthenticateResponse{Principal: p}), nil
}

// authenticate resolves a credential for a server: the bearer token if there is one, else
// the client certificate, else the anonymous grant. The credential itself is never logged
// and never part of an error.
func (s *Service) authenticate(ctx context.Context, credential, server string, cert *authv1.ClientCertificate) (*authv1.Principal, error) {
	if len(server) > maxServerBytes {
		return nil, invalid("server name is longer than %d bytes", maxServerBytes)
	}
	if credential == "" && cert != nil {
		if s.certs == nil {
			return nil, unauthenticated("client certificates are not mapped to principals here")
		}
		return s.certs.principal(cert)
	}
	if credential == "" {
		if s.anonymous[server] {
			return &authv1.Principal{Id: s.anonID, Kind: authv1.PrincipalKind_PRINCIPAL_KIND_ANONYMOUS, Tenant: s.anonTen}, nil
		}
		return nil, unauthenticated("no credential")
	}
	if len(credential) > MaxTokenBytes {
		return nil, unauthenticated("credential longer than %d bytes", MaxTokenBytes)
	}
	if s.verifier != nil && oidc.LooksLikeJWT(credential) {
		return s.verifyJWT(ctx, credential, server)
	}
	rec, err := s.tokens.lookup(ctx, credential)
	if err != nil {
		return nil, err
	}
	if rec.ExpireTime != nil && !s.now().Before(*rec.ExpireTime) {
		return nil, unauthenticated("token expired")
	}
	return rec.principal(), nil
}

// CreateToken implements authv1connect.AuthServiceHandler. The token is in the response
// only; etcd holds its digest.
func (s *Service) CreateToken(ctx context.Context, req *connect.Request[authv1.CreateTokenRequest]) (*connect.Response[authv1.CreateTokenResponse], error) {
	if err := s.admin(ctx, actionIssueTokens, req.Msg.GetTenant()); err != nil {
		return nil, s.toConnect(err)
	}
	id, token, err := s.tokens.create(ctx, req.Msg)
	if err != nil {
		return nil, s.toConnect(err)
	}
	s.logger.Info("token created", "token_id", id, "principal", req.Msg.GetPrincipalId(), "tenant", req.Msg.GetTenant(),
		"ttl_seconds", req.Msg.GetTtlSeconds(), "explicit", req.Msg.GetToken() != "")
	return connect.NewResponse(&authv1.CreateTokenResponse{TokenId: id, Token: token}), nil
}

// RevokeToken implements authv1connect.AuthServiceHandler.
func (s *Service) RevokeToken(ctx context.Context, req *connect.Request[authv1.RevokeTokenRequest]) (*connect.Response[authv1.RevokeTokenResponse], error) {
	if _, isCaller := rpcserver.CallerFrom(ctx); isCaller && ident.ValidID(req.Msg.GetTokenId()) {
		tenant, err := s.tokens.tenantOf(ctx, req.Msg.GetTokenId())
		if err != nil {
			return nil, s.toConnect(err)
		}
		if err := s.admin(ctx, actionRevokeTokens, tenant); err != nil {
			return nil, s.toConnect(err)
		}
	}
	if err := s.tokens.revoke(ctx, req.Msg.GetTokenId()); err != nil {
		return nil, s.toConnect(err)
	}
	s.logger.Info("token revoked", "token_id", req.Msg.GetTokenId())
	return connect.NewResponse(&authv1.RevokeTokenResponse{}), nil
}

// ListTokens implements authv1connect.AuthServiceHandler.
func (s *Service) ListTokens(ctx context.Context, req *connect.Request[authv1.ListTokensRequest]) (*connect.Response[authv1.ListTokensResponse], error) {
	// Listing every tenant's tokens is decided on the gateway, one tenant's on that tenant.
	if err := s.admin(ctx, actionListTokens, req.Msg.GetTenant()); err != nil {
		return nil, s.toConnect(err)
	}
	tokens, next, err := s.tokens.list(ctx, req.Msg)
	if err != nil {
		return nil, s.toConnect(err)
	}
	return connect.NewResponse(&authv1.ListTokensResponse{Tokens: tokens, NextPageToken: next}), nil
}

// verifyJWT checks an OpenID Connect token presented to a server's endpoint: its audience
// must be the gateway, that endpoint, or one the issuer's configuration names.
func (s *Service) verifyJWT(ctx context.Context, token, server string) (*authv1.Principal, error) {
	resources := []string{s.resource}
	if server != "" {
		resources = append(resources, EndpointResource(s.resource, server))
	}
	p, err := s.verifier.Verify(ctx, token, resources)
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, oidc.ErrInvalidToken):
		return nil, unauthenticated("%s", strings.TrimPrefix(err.Error(), oidc.ErrInvalidToken.Error()+": "))
	case errors.Is(err, oidc.ErrInsufficientScope):
		return nil, fmt.Errorf("%w: %w", errInsufficientScope, err)
	case errors.Is(err, oidc.ErrUnavailable):
		return nil, fmt.Errorf("%w: %w", errIssuerUnavailable, err)
	}
	return nil, err
}

// ResourceMetadata implements authv1connect.AuthServiceHandler.
func (s *Service) ResourceMetadata(context.Context, *connect.Request[authv1.ResourceMetadataRequest]) (*connect.Response[authv1.ResourceMetadataResponse], error) {
	resp := &authv1.ResourceMetadataResponse{}
	if s.verifier != nil {
		resp.Resource = s.resource
		resp.AuthorizationServers = s.verifier.Issuers()
		resp.ScopesSupported = slices.Clone(s.scopes)
	}
	return connect.NewResponse(resp), nil
}
