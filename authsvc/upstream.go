package authsvc

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Upstream tokens (identity mode gateway-jwt): a short-lived JWT per caller and upstream,
// minted here so that what an upstream is told about a caller is attested by the gateway's
// key, never the caller's own credential (the MCP spec forbids token passthrough).

// Bounds and defaults of upstream tokens. registrysvc/config enforces the same bounds on the
// servers' settings.
const (
	DefaultUpstreamTokenTTL = 5 * time.Minute
	minUpstreamTokenTTL     = 30 * time.Second
	maxUpstreamTokenTTL     = 15 * time.Minute
	// DefaultUpstreamTokenIssuer is the iss of upstream tokens when neither
	// --upstream-token-issuer nor the identity file's resource says otherwise.
	DefaultUpstreamTokenIssuer = "gatehouse"
	maxAudienceBytes           = 2048
)

// upstreamClaims are an upstream token's claims: the registered ones, the principal's tenant
// and its groups.
type upstreamClaims struct {
	jwt.Claims
	Tenant string   `json:"tenant"`
	Groups []string `json:"groups,omitempty"`
}

// MintUpstreamToken implements authv1connect.AuthServiceHandler.
func (s *Service) MintUpstreamToken(ctx context.Context, req *connect.Request[authv1.MintUpstreamTokenRequest]) (*connect.Response[authv1.MintUpstreamTokenResponse], error) {
	resp, err := s.mintUpstreamToken(ctx, req.Msg)
	if err != nil {
		return nil, s.toConnect(err)
	}
	return connect.NewResponse(resp), nil
}

func (s *Service) mintUpstreamToken(ctx context.Context, r *authv1.MintUpstreamTokenRequest) (*authv1.MintUpstreamTokenResponse, error) {
	ttl, err := validateMint(r)
	if err != nil {
		return nil, err
	}
	key, err := s.keys.signer(ctx)
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: signingAlgorithm, Key: jose.JSONWebKey{Key: key.private, KeyID: key.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("signer for key %s: %w", key.kid, err)
	}
	now := s.now().Truncate(time.Second)
	exp := now.Add(ttl)
	claims := upstreamClaims{
		Claims: jwt.Claims{
			Issuer:   s.issuer,
			Subject:  r.GetPrincipalId(),
			Audience: jwt.Audience{r.GetAudience()},
			IssuedAt: jwt.NewNumericDate(now),
			Expiry:   jwt.NewNumericDate(exp),
			ID:       randomString(16, hex.EncodeToString),
		},
		Tenant: r.GetTenant(),
		Groups: r.GetGroups(),
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return nil, fmt.Errorf("sign an upstream token: %w", err)
	}
	return &authv1.MintUpstreamTokenResponse{
		Token: token, IssueTime: timestamppb.New(now), ExpireTime: timestamppb.New(exp), KeyId: key.kid,
	}, nil
}

// validateMint checks a request and returns the token's lifetime.
func validateMint(r *authv1.MintUpstreamTokenRequest) (time.Duration, error) {
	switch {
	case !ident.ValidID(r.GetPrincipalId()):
		return 0, invalid("principal_id: want 1 to %d of [A-Za-z0-9._@-]", ident.MaxIDBytes)
	case !ident.ValidID(r.GetTenant()):
		return 0, invalid("tenant: want 1 to %d of [A-Za-z0-9._@-]", ident.MaxIDBytes)
	case len(r.GetGroups()) > maxGroups:
		return 0, invalid("%d groups, more than the limit of %d", len(r.GetGroups()), maxGroups)
	case r.GetAudience() == "" || len(r.GetAudience()) > maxAudienceBytes || !visibleASCII(r.GetAudience()):
		return 0, invalid("audience: want 1 to %d visible ASCII characters", maxAudienceBytes)
	}
	for i, g := range r.GetGroups() {
		if !ident.ValidID(g) {
			return 0, invalid("groups[%d]: want 1 to %d of [A-Za-z0-9._@-]", i, ident.MaxIDBytes)
		}
	}
	ttl := time.Duration(r.GetTtlSeconds()) * time.Second
	if r.GetTtlSeconds() == 0 {
		ttl = DefaultUpstreamTokenTTL
	}
	if r.GetTtlSeconds() < 0 || ttl < minUpstreamTokenTTL || ttl > maxUpstreamTokenTTL {
		return 0, invalid("ttl_seconds: want 0 (the default, %d) or %d to %d", int(DefaultUpstreamTokenTTL/time.Second),
			int(minUpstreamTokenTTL/time.Second), int(maxUpstreamTokenTTL/time.Second))
	}
	return ttl, nil
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// JWKS implements authv1connect.AuthServiceHandler: the public keys of the tokens that may
// still be valid. Before the first token there is no key, and the set is empty.
func (s *Service) JWKS(ctx context.Context, _ *connect.Request[authv1.JWKSRequest]) (*connect.Response[authv1.JWKSResponse], error) {
	st, err := s.keys.current(ctx)
	if err != nil {
		return nil, s.toConnect(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range st.published(s.now()) {
		set.Keys = append(set.Keys, k.public)
	}
	doc, err := json.Marshal(set)
	if err != nil {
		return nil, s.toConnect(fmt.Errorf("encode the JWKS: %w", err))
	}
	return connect.NewResponse(&authv1.JWKSResponse{Jwks: string(doc)}), nil
}

// RotateSigningKey implements authv1connect.AuthServiceHandler. Tokens already minted (and
// cached by bridges for up to half their life) stay valid: their key stays published.
func (s *Service) RotateSigningKey(ctx context.Context, _ *connect.Request[authv1.RotateSigningKeyRequest]) (*connect.Response[authv1.RotateSigningKeyResponse], error) {
	if err := s.admin(ctx, actionRotateKeys, ""); err != nil {
		return nil, s.toConnect(err)
	}
	st, err := s.keys.rotate(ctx)
	if err != nil {
		return nil, s.toConnect(err)
	}
	resp := &authv1.RotateSigningKeyResponse{KeyId: st.active().kid}
	for _, k := range st.published(s.now()) {
		if k != st.active() {
			resp.PublishedKeyIds = append(resp.PublishedKeyIds, k.kid)
		}
	}
	s.logger.Info("upstream signing key rotated", "kid", resp.KeyId, "still_published", resp.PublishedKeyIds)
	return connect.NewResponse(resp), nil
}
