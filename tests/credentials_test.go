package tests

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestHostCredentialNeverReachesUpstream: the MCP spec forbids token passthrough. A Streamable
// HTTP upstream records every header it receives; neither the host's Authorization header nor
// its token may be among them.
func TestHostCredentialNeverReachesUpstream(t *testing.T) {
	server := mcp.NewServer(&mcp.Implementation{Name: "recorder", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo"}, func(ctx context.Context, req *mcp.CallToolRequest, in struct {
		Text string `json:"text"`
	}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	var mu sync.Mutex
	var seen []http.Header
	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		mcpHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(upstream.Close)

	g := gatehousetest.Start(t, gatehousetest.Options{Config: "servers:\n" + httpEntry("recorder", upstream.URL)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "host", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.Endpoint("recorder"), HTTPClient: g.AuthClient()}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, g.Logs())
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
	if err != nil || res.IsError {
		t.Fatalf("tools/call: %v %v", res, err)
	}
	_ = cs.Close()

	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 {
		t.Fatalf("upstream saw %d requests, want at least initialize and tools/call", len(seen))
	}
	for i, h := range seen {
		if v := h.Get("Authorization"); v != "" {
			t.Errorf("request %d carried Authorization %q upstream", i, v)
		}
		for name, values := range h {
			for _, v := range values {
				if strings.Contains(v, g.Token) {
					t.Errorf("request %d carried the host's token upstream in %s", i, name)
				}
			}
		}
	}
}
