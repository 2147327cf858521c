package oidc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The ways a token fails, for the caller to map: an invalid token (401, invalid_token), a
// valid one without a required scope (403, insufficient_scope), or an issuer whose keys
// cannot be had (the caller cannot tell, so nobody is let in: unavailable).
var (
	ErrInvalidToken      = errors.New("invalid token")
	ErrInsufficientScope = errors.New("insufficient scope")
	ErrUnavailable       = errors.New("issuer keys unavailable")
)

// invalid is ErrInvalidToken with the reason a host may see. It never holds the token.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidToken}, args...)...)
}

// ScopeError is ErrInsufficientScope with the scopes the token lacks.
type ScopeError struct{ Missing []string }

func (e *ScopeError) Error() string {
	return "token lacks the scope " + strings.Join(e.Missing, " ")
}
func (e *ScopeError) Is(target error) bool { return target == ErrInsufficientScope }

// Verifier verifies the tokens of its issuers.
type Verifier struct {
	issuers map[string]*issuer
	algs    []jose.SignatureAlgorithm // every issuer's, for parsing
	now     func() time.Time
}

type issuer struct {
	cfg  IssuerConfig
	algs []jose.SignatureAlgorithm
	keys *keySet
}

// New validates the issuers and returns their verifier; it fetches nothing until a token
// of an issuer arrives. client fetches discovery documents and keys (NewHTTPClient).
func New(cfgs []IssuerConfig, client *http.Client, now func() time.Time, logger *slog.Logger) (*Verifier, error) {
	if len(cfgs) > MaxIssuers {
		return nil, fmt.Errorf("%d issuers, more than the limit of %d", len(cfgs), MaxIssuers)
	}
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	v := &Verifier{issuers: map[string]*issuer{}, now: now}
	for i := range cfgs {
		c := cfgs[i]
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("issuer %d (%s): %w", i+1, c.Issuer, err)
		}
		if v.issuers[c.Issuer] != nil {
			return nil, fmt.Errorf("issuer %s is configured twice", c.Issuer)
		}
		is := &issuer{cfg: c, keys: newKeySet(c.Issuer, c.JWKSURI, client, now, logger)}
		for _, a := range c.Algorithms {
			is.algs = append(is.algs, jose.SignatureAlgorithm(a))
			if !slices.Contains(v.algs, jose.SignatureAlgorithm(a)) {
				v.algs = append(v.algs, jose.SignatureAlgorithm(a))
			}
		}
		v.issuers[c.Issuer] = is
	}
	return v, nil
}

// Issuers returns the configured issuers, in no particular order.
func (v *Verifier) Issuers() []string {
	out := make([]string, 0, len(v.issuers))
	for iss := range v.issuers {
		out = append(out, iss)
	}
	slices.Sort(out)
	return out
}

// LooksLikeJWT reports whether a credential has the shape of a compact JWS (three base64url
// parts, the last empty in an unsecured "alg":"none" token, which Verify then refuses as
// such), a shape gateway API tokens never have.
func LooksLikeJWT(s string) bool {
	if strings.Count(s, ".") != 2 {
		return false
	}
	for i, part := range strings.Split(s, ".") {
		if part == "" && i < 2 {
			return false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Verify checks a token and returns its principal. resources are the resource identifiers
// of the endpoint the token was presented to (RFC 8707/9728): an audience among them, or
// among the issuer's configured audiences, is accepted. Every failure is ErrInvalidToken,
// ErrInsufficientScope or ErrUnavailable (or ctx's error).
func (v *Verifier) Verify(ctx context.Context, raw string, resources []string) (*authv1.Principal, error) {
	tok, err := jwt.ParseSigned(raw, v.algs)
	if err != nil {
		return nil, invalid("not a signed JWT with an allowed algorithm")
	}
	if len(tok.Headers) != 1 {
		return nil, invalid("want exactly one signature")
	}
	hdr := tok.Headers[0]
	var unverified struct {
		Issuer string `json:"iss"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, invalid("claims are not a JSON object")
	}
	is := v.issuers[unverified.Issuer]
	if is == nil {
		return nil, invalid("issuer is not trusted")
	}
	alg := jose.SignatureAlgorithm(hdr.Algorithm)
	if !slices.Contains(is.algs, alg) {
		return nil, invalid("algorithm %s is not allowed for this issuer", hdr.Algorithm)
	}
	keys, err := is.keys.candidates(ctx, hdr.KeyID, hdr.Algorithm)
	switch {
	case errors.Is(err, errUnknownKey):
		return nil, invalid("signing key is unknown")
	case err != nil && ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var std jwt.Claims
	var claims map[string]any
	verified := false
	for _, k := range keys {
		// go-jose checks that the key's type fits the algorithm: an RSA public key is never
		// taken as an HMAC secret.
		if err := tok.Claims(k.Key, &std, &claims); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, invalid("signature does not verify")
	}
	return is.principal(std, claims, resources, v.now())
}

// principal checks the verified claims and maps them to a principal.
func (is *issuer) principal(std jwt.Claims, claims map[string]any, resources []string, now time.Time) (*authv1.Principal, error) {
	c := &is.cfg
	if std.Expiry == nil {
		return nil, invalid("no exp claim")
	}
	audiences := append(slices.Clip(c.Audiences), resources...)
	if len(audiences) == 0 {
		// With nothing to compare, go-jose would accept any audience.
		return nil, invalid("no audience is configured for this issuer")
	}
	err := std.ValidateWithLeeway(jwt.Expected{Issuer: c.Issuer, AnyAudience: audiences, Time: now}, c.ClockSkew)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrExpired):
		return nil, invalid("token expired")
	case errors.Is(err, jwt.ErrNotValidYet):
		return nil, invalid("token not valid yet")
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, invalid("token issued in the future")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, invalid("token is not for this gateway (audience)")
	default:
		return nil, invalid("claims: %v", err)
	}

	sub, ok := claims[c.PrincipalClaim].(string)
	if !ok || sub == "" {
		return nil, invalid("no %s claim", c.PrincipalClaim)
	}
	id := c.PrincipalPrefix + sub
	if !ident.ValidID(id) {
		return nil, invalid("%s claim is not a principal id (1 to %d of [A-Za-z0-9._@-], prefix included)", c.PrincipalClaim, ident.MaxIDBytes)
	}
	tenant := c.Tenant
	if c.TenantClaim != "" {
		tenant, _ = claims[c.TenantClaim].(string)
		if !ident.ValidID(tenant) {
			return nil, invalid("%s claim is missing or not a tenant id", c.TenantClaim)
		}
		if len(c.AllowedTenants) > 0 && !slices.Contains(c.AllowedTenants, tenant) {
			return nil, invalid("%s claim names a tenant this issuer may not", c.TenantClaim)
		}
	}
	var groups []string
	if c.GroupsClaim != "" {
		if groups, ok = stringList(claims[c.GroupsClaim]); !ok {
			return nil, invalid("%s claim is not a list of names", c.GroupsClaim)
		}
		if len(groups) > maxGroups {
			return nil, invalid("%s claim names %d groups, more than %d", c.GroupsClaim, len(groups), maxGroups)
		}
		for _, g := range groups {
			if !ident.ValidID(g) {
				return nil, invalid("%s claim holds a name that is not a group id", c.GroupsClaim)
			}
		}
		if len(c.AllowedGroups) > 0 {
			groups = slices.DeleteFunc(groups, func(g string) bool { return !slices.Contains(c.AllowedGroups, g) })
		}
		groups = slices.Compact(slices.Sorted(slices.Values(groups)))
	}
	if len(c.RequiredScopes) > 0 {
		granted, _ := stringList(claims["scope"])
		if scp, ok := stringList(claims["scp"]); ok {
			granted = append(granted, scp...)
		}
		var missing []string
		for _, s := range c.RequiredScopes {
			if !slices.Contains(granted, s) {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			return nil, &ScopeError{Missing: missing}
		}
	}
	kind := authv1.PrincipalKind_PRINCIPAL_KIND_USER
	if c.Kind == KindService {
		kind = authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE
	}
	return &authv1.Principal{
		Id:         id,
		Kind:       kind,
		Tenant:     tenant,
		Groups:     groups,
		Attributes: map[string]string{"auth": "oidc", "issuer": c.Issuer},
		ExpireTime: timestamppb.New(std.Expiry.Time()),
	}, nil
}

// stringList reads a claim that lists names: a JSON array of strings, or one string of
// space-separated names (as OAuth's scope is).
func stringList(v any) ([]string, bool) {
	switch v := v.(type) {
	case nil:
		return nil, true
	case string:
		return strings.Fields(v), true
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}
