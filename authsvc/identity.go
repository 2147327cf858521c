package authsvc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/authsvc/internal/oidc"
	"gopkg.in/yaml.v3"
)

// maxIdentityFileBytes bounds the identity file.
const maxIdentityFileBytes = 1 << 20

// Identity is the parsed identity file (--identity-config): the gateway's resource identifier
// and the OpenID Connect issuers whose tokens authenticate hosts. See docs/identity.md.
type Identity struct {
	// Resource is the gateway's public base URL, its OAuth resource identifier (RFC 8707,
	// RFC 9728): tokens whose audience is it, or a server endpoint's own URL under it, are
	// for this gateway.
	Resource string
	Issuers  []oidc.IssuerConfig
	// SPIFFE and Subjects map verified client certificates to principals (mtls.go).
	SPIFFE   []SPIFFEMapping
	Subjects []SubjectMapping
}

type identityYAML struct {
	Resource string       `yaml:"resource"`
	OIDC     []issuerYAML `yaml:"oidc"`
	MTLS     *mtlsYAML    `yaml:"mtls"`
}

type mtlsYAML struct {
	SPIFFE []struct {
		TrustDomain     string   `yaml:"trust_domain"`
		Tenant          string   `yaml:"tenant"`
		PrincipalPrefix string   `yaml:"principal_prefix"`
		Groups          []string `yaml:"groups"`
		Kind            string   `yaml:"kind"`
	} `yaml:"spiffe"`
	Subjects []struct {
		CommonName string   `yaml:"common_name"`
		Principal  string   `yaml:"principal"`
		Tenant     string   `yaml:"tenant"`
		Groups     []string `yaml:"groups"`
		Kind       string   `yaml:"kind"`
	} `yaml:"subjects"`
}

type issuerYAML struct {
	Issuer          string   `yaml:"issuer"`
	Audiences       []string `yaml:"audiences"`
	Algorithms      []string `yaml:"algorithms"`
	ClockSkew       string   `yaml:"clock_skew"`
	JWKSURI         string   `yaml:"jwks_uri"`
	PrincipalClaim  string   `yaml:"principal_claim"`
	PrincipalPrefix string   `yaml:"principal_prefix"`
	TenantClaim     string   `yaml:"tenant_claim"`
	Tenant          string   `yaml:"tenant"`
	GroupsClaim     string   `yaml:"groups_claim"`
	Kind            string   `yaml:"kind"`
	RequiredScopes  []string `yaml:"required_scopes"`
	AllowedTenants  []string `yaml:"allowed_tenants"`
	AllowedGroups   []string `yaml:"allowed_groups"`
}

// ReadIdentity reads and validates an identity file.
func ReadIdentity(path string) (*Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIdentityFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("identity config %s: %w", path, err)
	}
	id, err := ParseIdentity(data)
	if err != nil {
		return nil, fmt.Errorf("identity config %s: %w", path, err)
	}
	return id, nil
}

// ParseIdentity parses an identity file: YAML, one document, unknown keys refused, every
// issuer validated.
func ParseIdentity(data []byte) (*Identity, error) {
	if len(data) > maxIdentityFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxIdentityFileBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var raw identityYAML
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty")
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	id := &Identity{Resource: strings.TrimSuffix(raw.Resource, "/")}
	if len(raw.OIDC) > 0 {
		if id.Resource == "" {
			return nil, errors.New("resource (the gateway's public URL) is required with oidc issuers: it is the audience their tokens are checked against")
		}
		if err := oidc.CheckURL(id.Resource, "resource"); err != nil {
			return nil, err
		}
	}
	if len(raw.OIDC) > oidc.MaxIssuers {
		return nil, fmt.Errorf("%d oidc issuers, more than the limit of %d", len(raw.OIDC), oidc.MaxIssuers)
	}
	for i, r := range raw.OIDC {
		c := oidc.IssuerConfig{
			Issuer: r.Issuer, Audiences: r.Audiences, Algorithms: r.Algorithms, JWKSURI: r.JWKSURI,
			PrincipalClaim: r.PrincipalClaim, PrincipalPrefix: r.PrincipalPrefix,
			TenantClaim: r.TenantClaim, Tenant: r.Tenant, GroupsClaim: r.GroupsClaim,
			Kind: r.Kind, RequiredScopes: r.RequiredScopes,
			AllowedTenants: r.AllowedTenants, AllowedGroups: r.AllowedGroups,
		}
		if r.ClockSkew != "" {
			d, err := time.ParseDuration(r.ClockSkew)
			if err != nil {
				return nil, fmt.Errorf("oidc[%d].clock_skew: %w", i, err)
			}
			c.ClockSkew = d
		}
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("oidc[%d] (%s): %w", i, r.Issuer, err)
		}
		if slices.ContainsFunc(id.Issuers, func(o oidc.IssuerConfig) bool { return o.Issuer == c.Issuer }) {
			return nil, fmt.Errorf("oidc[%d]: issuer %s is listed twice", i, c.Issuer)
		}
		id.Issuers = append(id.Issuers, c)
	}
	if m := raw.MTLS; m != nil {
		for _, s := range m.SPIFFE {
			id.SPIFFE = append(id.SPIFFE, SPIFFEMapping{TrustDomain: s.TrustDomain, Tenant: s.Tenant, PrincipalPrefix: s.PrincipalPrefix, Groups: s.Groups, Kind: s.Kind})
		}
		for _, s := range m.Subjects {
			id.Subjects = append(id.Subjects, SubjectMapping{CommonName: s.CommonName, Principal: s.Principal, Tenant: s.Tenant, Groups: s.Groups, Kind: s.Kind})
		}
		if _, err := newCertMapper(id.SPIFFE, id.Subjects); err != nil {
			return nil, err
		}
	}
	return id, nil
}

// EndpointResource is the resource identifier of one server's endpoint under the gateway's.
func EndpointResource(resource, server string) string {
	return resource + "/servers/" + server + "/mcp"
}
