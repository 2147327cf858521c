package ingress

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
)

// The gateway as an OAuth 2.0 protected resource (RFC 9728, as the MCP authorization spec
// uses it): its metadata documents name the authorization servers whose tokens authsvc
// accepts, and every 401 points at the document of the endpoint that refused, so a host can
// find where to get a token. What to publish is authsvc's (ResourceMetadata): the ingress
// asks for it at most once a minute.

const (
	wellKnownResource = "/.well-known/oauth-protected-resource"
	// resourceMetaTTL is how long the ingress publishes what authsvc said before asking
	// again; resourceMetaRetry how long it waits after a failed ask.
	resourceMetaTTL   = time.Minute
	resourceMetaRetry = 5 * time.Second
	resourceMetaAsk   = 5 * time.Second
)

// resourceMeta caches authsvc's ResourceMetadata. The first request waits for the first
// answer; later ones use the last answer while a new one is asked for, so neither an
// unauthenticated flood nor a slow authsvc turns into one RPC per request.
type resourceMeta struct {
	client Auth
	now    func() time.Time
	onFail func(error)

	mu     sync.Mutex
	doc    *authv1.ResourceMetadataResponse // last answer; nil before the first
	next   time.Time                        // when to ask again
	flight chan struct{}                    // closed when the ask under way ends
}

func (m *resourceMeta) get(ctx context.Context) *authv1.ResourceMetadataResponse {
	m.mu.Lock()
	if m.now().Before(m.next) {
		d := m.doc
		m.mu.Unlock()
		return d
	}
	if m.flight == nil {
		m.flight = make(chan struct{})
		go m.ask(m.flight)
	}
	f, d := m.flight, m.doc
	m.mu.Unlock()
	if d != nil {
		return d
	}
	select {
	case <-f:
	case <-ctx.Done():
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.doc
}

func (m *resourceMeta) ask(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), resourceMetaAsk)
	resp, err := m.client.ResourceMetadata(ctx, connect.NewRequest(&authv1.ResourceMetadataRequest{}))
	cancel()
	m.mu.Lock()
	if err == nil {
		m.doc, m.next = resp.Msg, m.now().Add(resourceMetaTTL)
	} else {
		m.next = m.now().Add(resourceMetaRetry)
	}
	m.flight = nil
	m.mu.Unlock()
	close(done)
	if err != nil && m.onFail != nil {
		m.onFail(err)
	}
}

// metadataURL is where the metadata of a resource identifier is published: the well-known
// path inserted between its host and its path (RFC 9728 section 3.1).
func metadataURL(resource string) string {
	u, err := url.Parse(resource)
	if err != nil {
		return ""
	}
	u.Path = wellKnownResource + strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u.String()
}

// endpointResource is the resource identifier of a server's endpoint (authsvc accepts it as
// a token audience).
func endpointResource(resource, server string) string {
	return strings.TrimSuffix(resource, "/") + "/servers/" + server + "/mcp"
}

// serveResourceMetadata answers GET /.well-known/oauth-protected-resource[/<base path>]
// [/servers/<name>/mcp]: the document of the gateway or of one endpoint. Any syntactically
// valid server name is answered alike, so the document tells nobody which servers exist.
func (s *Service) serveResourceMetadata(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*") // public metadata, fetched by browser hosts too
	doc := s.meta.get(r.Context())
	if doc == nil || doc.GetResource() == "" {
		http.Error(w, "Not Found: no authorization server is configured", http.StatusNotFound)
		return
	}
	base := doc.GetResource()
	basePath := ""
	if u, err := url.Parse(base); err == nil {
		basePath = strings.TrimSuffix(u.Path, "/")
	}
	rest, ok := strings.CutPrefix(r.URL.Path, wellKnownResource)
	if !ok {
		http.NotFound(w, r)
		return
	}
	resource := ""
	switch rest {
	case "", "/", basePath:
		resource = base
	default:
		rest = strings.TrimPrefix(rest, basePath)
		name, found := strings.CutPrefix(rest, "/servers/")
		name, found2 := strings.CutSuffix(name, "/mcp")
		if !found || !found2 || !ident.ValidServerName(name) {
			http.NotFound(w, r)
			return
		}
		resource = endpointResource(base, name)
	}
	body := map[string]any{
		"resource":                 resource,
		"authorization_servers":    doc.GetAuthorizationServers(),
		"bearer_methods_supported": []string{"header"},
		"resource_name":            "Gatehouse MCP gateway",
	}
	if sc := doc.GetScopesSupported(); len(sc) > 0 {
		body["scopes_supported"] = sc
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "max-age=60")
	_ = json.NewEncoder(w).Encode(body)
}

// challenge is the WWW-Authenticate value of a refusal on server's endpoint: the realm, the
// RFC 6750 error and its description (when set), the scope a token needs (insufficient
// scope) and, when an authorization server is configured, where the endpoint's metadata is.
func (s *Service) challenge(ctx context.Context, server, errCode, description string) string {
	var b strings.Builder
	b.WriteString(`Bearer realm="gatehouse"`)
	if errCode != "" {
		b.WriteString(`, error="` + errCode + `"`)
	}
	if d := quotable(description); d != "" {
		b.WriteString(`, error_description="` + d + `"`)
	}
	doc := s.meta.get(ctx)
	if errCode == "insufficient_scope" && doc != nil && len(doc.GetScopesSupported()) > 0 {
		b.WriteString(`, scope="` + quotable(strings.Join(doc.GetScopesSupported(), " ")) + `"`)
	}
	if doc != nil && doc.GetResource() != "" && ident.ValidServerName(server) {
		b.WriteString(`, resource_metadata="` + metadataURL(endpointResource(doc.GetResource(), server)) + `"`)
	}
	return b.String()
}

// quotable keeps what may stand in a quoted-string of a challenge: printable ASCII without
// quotes and backslashes, at most 200 bytes.
func quotable(s string) string {
	out := make([]byte, 0, min(len(s), 200))
	for i := 0; i < len(s) && len(out) < 200; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			out = append(out, c)
		}
	}
	return string(out)
}
