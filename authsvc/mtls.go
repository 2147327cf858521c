package authsvc

import (
	"fmt"
	"net/url"
	"strings"

	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
)

// Client certificates: the ingress verifies the chain against its trust bundle (TLS); authsvc
// maps the verified leaf to a principal. A SPIFFE ID (spiffe://trust-domain/path) is mapped by
// its trust domain: the principal is the path with "/" as "." (spiffe://prod.example/ns/web
// is "ns.web"), behind an optional prefix, in the trust domain's tenant. A certificate without
// a SPIFFE ID is mapped by its subject's common name, one entry each. Anything else is
// refused: a certificate the bundle trusts is not enough, the operator must have said who it
// is.

// maxCertMappings bounds the mappings of the identity file.
const maxCertMappings = 1024

// SPIFFEMapping maps a trust domain's SPIFFE IDs to principals of one tenant.
type SPIFFEMapping struct {
	TrustDomain     string
	Tenant          string
	PrincipalPrefix string
	Groups          []string
	Kind            string // user or service (the default)
}

// SubjectMapping maps one certificate subject common name to a principal.
type SubjectMapping struct {
	CommonName string
	Principal  string
	Tenant     string
	Groups     []string
	Kind       string // user or service (the default)
}

// certMapper holds the mappings by trust domain and common name.
type certMapper struct {
	spiffe   map[string]SPIFFEMapping
	subjects map[string]SubjectMapping
}

func newCertMapper(sp []SPIFFEMapping, subj []SubjectMapping) (*certMapper, error) {
	if len(sp)+len(subj) > maxCertMappings {
		return nil, fmt.Errorf("%d certificate mappings, more than the limit of %d", len(sp)+len(subj), maxCertMappings)
	}
	m := &certMapper{spiffe: map[string]SPIFFEMapping{}, subjects: map[string]SubjectMapping{}}
	for i, s := range sp {
		if s.TrustDomain == "" || strings.ContainsAny(s.TrustDomain, "/:@ ") || strings.ToLower(s.TrustDomain) != s.TrustDomain {
			return nil, fmt.Errorf("mtls.spiffe[%d].trust_domain %q: want a lower-case trust domain name", i, s.TrustDomain)
		}
		if !ident.ValidID(s.Tenant) {
			return nil, fmt.Errorf("mtls.spiffe[%d].tenant %q: want 1 to %d of [A-Za-z0-9._@-]", i, s.Tenant, ident.MaxIDBytes)
		}
		if s.PrincipalPrefix != "" && !ident.ValidID(s.PrincipalPrefix) {
			return nil, fmt.Errorf("mtls.spiffe[%d].principal_prefix %q: want [A-Za-z0-9._@-]", i, s.PrincipalPrefix)
		}
		if err := checkMappedGroupsKind(s.Groups, s.Kind); err != nil {
			return nil, fmt.Errorf("mtls.spiffe[%d]: %w", i, err)
		}
		if _, dup := m.spiffe[s.TrustDomain]; dup {
			return nil, fmt.Errorf("mtls.spiffe[%d]: trust domain %s is listed twice", i, s.TrustDomain)
		}
		m.spiffe[s.TrustDomain] = s
	}
	for i, s := range subj {
		if s.CommonName == "" {
			return nil, fmt.Errorf("mtls.subjects[%d].common_name is required", i)
		}
		if !ident.ValidID(s.Principal) || !ident.ValidID(s.Tenant) {
			return nil, fmt.Errorf("mtls.subjects[%d]: principal and tenant must be 1 to %d of [A-Za-z0-9._@-]", i, ident.MaxIDBytes)
		}
		if err := checkMappedGroupsKind(s.Groups, s.Kind); err != nil {
			return nil, fmt.Errorf("mtls.subjects[%d]: %w", i, err)
		}
		if _, dup := m.subjects[s.CommonName]; dup {
			return nil, fmt.Errorf("mtls.subjects[%d]: common name %q is listed twice", i, s.CommonName)
		}
		m.subjects[s.CommonName] = s
	}
	return m, nil
}

func checkMappedGroupsKind(groups []string, kind string) error {
	if len(groups) > maxGroups {
		return fmt.Errorf("%d groups, more than %d", len(groups), maxGroups)
	}
	for _, g := range groups {
		if !ident.ValidID(g) {
			return fmt.Errorf("group %q: want [A-Za-z0-9._@-]", g)
		}
	}
	if kind != "" && kind != "user" && kind != "service" {
		return fmt.Errorf("kind %q: want user or service", kind)
	}
	return nil
}

func principalKind(kind string) authv1.PrincipalKind {
	if kind == "user" {
		return authv1.PrincipalKind_PRINCIPAL_KIND_USER
	}
	return authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE
}

// principal maps a verified client certificate.
func (m *certMapper) principal(c *authv1.ClientCertificate) (*authv1.Principal, error) {
	if len(c.GetSpiffeIds()) > 1 {
		return nil, unauthenticated("client certificate has more than one SPIFFE ID")
	}
	var p *authv1.Principal
	if len(c.GetSpiffeIds()) == 1 {
		u, err := url.Parse(c.GetSpiffeIds()[0])
		if err != nil || u.Scheme != "spiffe" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() != "" {
			return nil, unauthenticated("client certificate SPIFFE ID is malformed")
		}
		mp, ok := m.spiffe[u.Host]
		if !ok {
			return nil, unauthenticated("client certificate trust domain is not accepted")
		}
		// Segments are joined with ".", so a segment may hold neither "." nor an escape:
		// /ns/web, /ns.web and /ns%2Fweb must not name one principal.
		path := strings.Trim(u.EscapedPath(), "/")
		id := mp.PrincipalPrefix + strings.ReplaceAll(path, "/", ".")
		if path == "" || strings.ContainsAny(path, ".%") || strings.Contains(path, "//") || !ident.ValidID(id) {
			return nil, unauthenticated("client certificate SPIFFE path is not a principal id")
		}
		p = &authv1.Principal{Id: id, Kind: principalKind(mp.Kind), Tenant: mp.Tenant, Groups: mp.Groups,
			Attributes: map[string]string{"auth": "mtls", "spiffe_id": c.GetSpiffeIds()[0]}}
	} else {
		mp, ok := m.subjects[c.GetCommonName()]
		if !ok {
			return nil, unauthenticated("client certificate subject is not mapped to a principal")
		}
		p = &authv1.Principal{Id: mp.Principal, Kind: principalKind(mp.Kind), Tenant: mp.Tenant, Groups: mp.Groups,
			Attributes: map[string]string{"auth": "mtls", "subject": c.GetSubject()}}
	}
	if c.GetNotAfter() != nil {
		p.ExpireTime = c.GetNotAfter()
	}
	return p, nil
}
