package ingress_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/ingress"
)

// getJSON fetches a path of the gateway and decodes its JSON body.
func (g *gateway) getJSON(path string) (int, http.Header, map[string]any) {
	g.t.Helper()
	client := &http.Client{Timeout: 20 * time.Second}
	resp, err := client.Get(g.srv.URL + path)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatal(err)
	}
	var doc map[string]any
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &doc); err != nil {
			g.t.Fatalf("GET %s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode, resp.Header, doc
}

// The RFC 9728 documents: the gateway's, and each endpoint's by path insertion, naming the
// authorization servers authsvc accepts tokens of.
func TestResourceMetadata(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	for _, tt := range []struct{ path, resource string }{
		{"/.well-known/oauth-protected-resource", fakeResource},
		{"/.well-known/oauth-protected-resource/servers/echo/mcp", fakeResource + "/servers/echo/mcp"},
		// A server that does not exist is answered alike: the document reveals nothing.
		{"/.well-known/oauth-protected-resource/servers/nosuch/mcp", fakeResource + "/servers/nosuch/mcp"},
	} {
		status, h, doc := g.getJSON(tt.path)
		if status != http.StatusOK {
			t.Fatalf("GET %s: %d", tt.path, status)
		}
		servers, _ := doc["authorization_servers"].([]any)
		if doc["resource"] != tt.resource || len(servers) != 1 || servers[0] != fakeIssuer || h.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("GET %s: %v %v", tt.path, doc, h)
		}
	}
	for _, path := range []string{
		"/.well-known/oauth-protected-resource/servers/Bad Name/mcp",
		"/.well-known/oauth-protected-resource/servers/echo",
		"/.well-known/oauth-protected-resource/other",
	} {
		if status, _, _ := g.getJSON(path); status != http.StatusNotFound {
			t.Fatalf("GET %s: %d, want 404", path, status)
		}
	}
}

// Every 401 names the endpoint's metadata; a refused token says why; a token without a
// required scope is a 403 insufficient_scope naming the scope.
func TestChallenges(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	meta := `resource_metadata="https://gw.test/.well-known/oauth-protected-resource/servers/echo/mcp"`
	for _, tt := range []struct {
		name   string
		token  string
		status int
		want   []string
		absent []string
	}{
		{"no credential", "", http.StatusUnauthorized, []string{`Bearer realm="gatehouse"`, meta}, []string{"error="}},
		{"expired", "Bearer " + tokenExpired, http.StatusUnauthorized, []string{`error="invalid_token"`, `error_description="token expired"`, meta}, nil},
		{"malformed", "Basic abc", http.StatusUnauthorized, []string{`error="invalid_request"`, meta}, nil},
		{"insufficient scope", "Bearer " + tokenNoScope, http.StatusForbidden, []string{`error="insufficient_scope"`, `scope="mcp"`, meta}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := g.do(http.MethodPost, "echo", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`, map[string]string{"Authorization": tt.token})
			c := r.header.Get("WWW-Authenticate")
			if r.status != tt.status {
				t.Fatalf("status %d, want %d (%s)", r.status, tt.status, r.body)
			}
			for _, w := range tt.want {
				if !strings.Contains(c, w) {
					t.Errorf("challenge %q lacks %q", c, w)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(c, a) {
					t.Errorf("challenge %q has %q", c, a)
				}
			}
		})
	}
}

// A flood of unauthenticated requests asks authsvc for the metadata once, not once each.
func TestResourceMetadataAskedOnce(t *testing.T) {
	t.Parallel()
	g := newGateway(t, func(c *ingress.Config) { c.AuthFailRate = 0 })
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := g.do(http.MethodPost, "echo", `{}`, map[string]string{"Authorization": ""})
			if !strings.Contains(r.header.Get("WWW-Authenticate"), "resource_metadata=") {
				t.Errorf("challenge %q names no metadata", r.header.Get("WWW-Authenticate"))
			}
		}()
	}
	wg.Wait()
	if n := g.auth.metaCalls.Load(); n != 1 {
		t.Fatalf("authsvc asked for metadata %d times, want 1", n)
	}
}
