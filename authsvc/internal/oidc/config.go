// Package oidc verifies the JWT bearer tokens of configured OpenID Connect (or plain OAuth 2)
// issuers and maps their claims to a Principal. JOSE itself (JWS parsing, signature checks,
// JWK decoding) is go-jose's; this package chooses what to trust: which issuer, which keys
// (discovered and cached, refetched within a bound when an unknown key id appears), which
// algorithms, which audience, how much clock skew, and which claims name the principal, its
// tenant and its groups.
package oidc

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/ident"
	"github.com/go-jose/go-jose/v4"
)

// Limits of the configuration and of what issuers send.
const (
	// DefaultClockSkew is the leeway on exp, nbf and iat when an issuer sets none.
	DefaultClockSkew = 60 * time.Second
	// MaxClockSkew bounds the configured leeway: more would keep expired tokens alive.
	MaxClockSkew = 5 * time.Minute
	// MaxIssuers bounds the issuers of one configuration.
	MaxIssuers = 16
	// maxDocumentBytes bounds a discovery document or a JWKS.
	maxDocumentBytes = 1 << 20
	// maxKeys bounds the keys of one JWKS that are kept.
	maxKeys = 64
	// maxGroups bounds the groups taken from a token.
	maxGroups = 64
)

// DefaultAlgorithms are the signature algorithms accepted when an issuer names none: the
// asymmetric ones issuers use. HMAC is never accepted (a shared secret is not an issuer's
// public key, and accepting it invites HS/RS confusion), nor is "none".
var DefaultAlgorithms = []string{"RS256", "ES256"}

// asymmetric are the algorithms an issuer may be configured with.
var asymmetric = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// Principal kinds an issuer's tokens may stand for.
const (
	KindUser    = "user"
	KindService = "service"
)

// IssuerConfig is one trusted issuer.
type IssuerConfig struct {
	// Issuer is the exact `iss` of its tokens and the base of its discovery document.
	Issuer string
	// Audiences are the `aud` values accepted (any one suffices). The resource identifier of
	// the gateway endpoint a token is presented to is always accepted too (Verify's resources).
	Audiences []string
	// Algorithms is the allow-list of signature algorithms; empty means DefaultAlgorithms.
	Algorithms []string
	// ClockSkew is the leeway on exp, nbf and iat; 0 means DefaultClockSkew.
	ClockSkew time.Duration
	// JWKSURI, when set, is used instead of the discovery document's jwks_uri.
	JWKSURI string
	// PrincipalClaim names the claim that is the principal id; empty means "sub".
	PrincipalClaim string
	// PrincipalPrefix is put before the claim's value, so that two issuers' subjects cannot
	// name the same principal ("okta." + "alice").
	PrincipalPrefix string
	// TenantClaim names the claim that is the tenant; Tenant fixes one instead. Exactly one
	// of the two is set.
	TenantClaim string
	Tenant      string
	// GroupsClaim names the claim that lists the groups (an array of strings, or one string
	// of space-separated names); empty means no groups.
	GroupsClaim string
	// Kind is the principal kind of its tokens: KindUser (the default) or KindService.
	Kind string
	// AllowedTenants, when set, are the only tenants a tenant claim may name (a token naming
	// another is refused); AllowedGroups the only groups taken from the groups claim (others
	// are dropped: a group grants, so dropping one only takes away). Groups and tenants are
	// one namespace across issuers, API tokens and certificates: without these lists an
	// issuer can name any of them.
	AllowedTenants []string
	AllowedGroups  []string
	// RequiredScopes must all be granted by a token (its `scope` claim, space-separated, or
	// `scp` array); a token without them is refused as insufficient_scope.
	RequiredScopes []string
}

// Validate checks c and fills its defaults.
func (c *IssuerConfig) Validate() error {
	if err := CheckURL(c.Issuer, "issuer"); err != nil {
		return err
	}
	if c.JWKSURI != "" {
		if err := CheckURL(c.JWKSURI, "jwks_uri"); err != nil {
			return err
		}
	}
	for i, a := range c.Audiences {
		if a == "" {
			return fmt.Errorf("audiences[%d] is empty", i)
		}
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = slices.Clone(DefaultAlgorithms)
	}
	for _, a := range c.Algorithms {
		if !slices.Contains(asymmetric, jose.SignatureAlgorithm(a)) {
			return fmt.Errorf("algorithm %q is not allowed: want asymmetric ones among %v (HMAC and none are never accepted)", a, asymmetric)
		}
	}
	switch {
	case c.ClockSkew == 0:
		c.ClockSkew = DefaultClockSkew
	case c.ClockSkew < 0 || c.ClockSkew > MaxClockSkew:
		return fmt.Errorf("clock_skew %s: want 0 to %s", c.ClockSkew, MaxClockSkew)
	}
	if c.PrincipalClaim == "" {
		c.PrincipalClaim = "sub"
	}
	if c.PrincipalPrefix != "" && !ident.ValidID(c.PrincipalPrefix) {
		return fmt.Errorf("principal_prefix %q: want [A-Za-z0-9._@-]", c.PrincipalPrefix)
	}
	switch {
	case c.TenantClaim == "" && c.Tenant == "":
		return errors.New("one of tenant_claim and tenant is required: every principal belongs to a tenant")
	case c.TenantClaim != "" && c.Tenant != "":
		return errors.New("tenant_claim and tenant exclude each other")
	case c.Tenant != "" && !ident.ValidID(c.Tenant):
		return fmt.Errorf("tenant %q: want 1 to %d of [A-Za-z0-9._@-]", c.Tenant, ident.MaxIDBytes)
	}
	switch c.Kind {
	case "":
		c.Kind = KindUser
	case KindUser, KindService:
	default:
		return fmt.Errorf("kind %q: want %s or %s", c.Kind, KindUser, KindService)
	}
	for _, t := range c.AllowedTenants {
		if !ident.ValidID(t) {
			return fmt.Errorf("allowed_tenants: %q is not a tenant id", t)
		}
	}
	if len(c.AllowedTenants) > 0 && c.TenantClaim == "" {
		return errors.New("allowed_tenants needs tenant_claim (a fixed tenant needs no list)")
	}
	for _, g := range c.AllowedGroups {
		if !ident.ValidID(g) {
			return fmt.Errorf("allowed_groups: %q is not a group id", g)
		}
	}
	for i, s := range c.RequiredScopes {
		if s == "" || strings.ContainsAny(s, " \"\\") {
			return fmt.Errorf("required_scopes[%d] %q: want a scope token", i, s)
		}
	}
	return nil
}

// CheckURL accepts an absolute https URL, or http on a loopback host (a provider, or a
// gateway, on this machine): keys fetched and tokens sent in the clear elsewhere could be
// anyone's. what names the URL in the error.
func CheckURL(raw, what string) error {
	if raw == "" {
		return fmt.Errorf("%s is required", what)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, raw, err)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%s %q: want an absolute URL without credentials, query or fragment", what, raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopback(u.Hostname()) {
			return fmt.Errorf("%s %q: http is allowed on a loopback host only; use https", what, raw)
		}
	default:
		return fmt.Errorf("%s %q: want https", what, raw)
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
