package caller_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// listServer serves n tools named prefix_0001 … over Streamable HTTP, pageSize per page.
func listServer(t *testing.T, auth *atomic.Value, prefix string, n, pageSize int) string {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "test", Version: "v0"}, &mcp.ServerOptions{PageSize: pageSize})
	for i := 1; i <= n; i++ {
		mcp.AddTool(server, &mcp.Tool{Name: fmt.Sprintf("%s_%04d", prefix, i), Description: "a tool"}, func(context.Context, *mcp.CallToolRequest, echoArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{}, nil, nil
		})
	}
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	srv := httptest.NewServer(withAuth(auth, handler))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s_%04d", prefix, i+1)
	}
	return out
}

// TestToolsList: a list session lists every page of every target, counts what it read from
// the wire, and fails a list that does not hold exactly the wanted names.
func TestToolsList(t *testing.T) {
	t.Parallel()
	var auth atomic.Value
	a := listServer(t, &auth, "a", 30, 0)
	b := listServer(t, &auth, "b", 25, 10) // three pages
	tests := []struct {
		name      string
		targets   []caller.ListTarget
		wantTools int
		wantPages int
		wantErr   string
	}{
		{name: "one server", targets: []caller.ListTarget{{Endpoint: a, Want: names("a", 30)}}, wantTools: 30, wantPages: 1},
		{name: "paged", targets: []caller.ListTarget{{Endpoint: b, Want: names("b", 25)}}, wantTools: 25, wantPages: 3},
		{name: "two servers one after the other", targets: []caller.ListTarget{{Endpoint: a, Want: names("a", 30)}, {Endpoint: b, Want: names("b", 25)}}, wantTools: 55, wantPages: 4},
		{name: "unchecked", targets: []caller.ListTarget{{Endpoint: a}}, wantTools: 30, wantPages: 1},
		{name: "a tool missing", targets: []caller.ListTarget{{Endpoint: a, Want: names("a", 31)}}, wantErr: `lacks "a_0031"`},
		{name: "a tool too many", targets: []caller.ListTarget{{Endpoint: a, Want: names("a", 29)}}, wantErr: `holds "a_0030"`},
		{name: "names of another server", targets: []caller.ListTarget{{Endpoint: b, Want: names("a", 25)}}, wantErr: `holds "b_0001"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := &caller.ListRecorder{}
			dial, err := caller.ToolsList(tc.targets, "2025-11-25", caller.Options{Token: "tok"}, rec)
			if err != nil {
				t.Fatal(err)
			}
			s, err := dial(t.Context())
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer s.Close()
			for range 2 {
				err = s.Call(t.Context())
				if tc.wantErr == "" && err != nil {
					t.Fatalf("Call: %v", err)
				}
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Call = %v, want an error containing %q", err, tc.wantErr)
				}
				if got := rec.Last(); got != (caller.ListAnswer{}) {
					t.Fatalf("a wrong list was recorded: %+v", got)
				}
				return
			}
			got := rec.Last()
			// Each tool's JSON is at least its name and description: a lower bound on the bytes.
			if got.Tools != tc.wantTools || got.Pages != tc.wantPages || got.Bytes < int64(tc.wantTools*len(`{"name":"a_0001","description":"a tool"}`)) {
				t.Fatalf("answer = %+v, want %d tools in %d pages and their bytes", got, tc.wantTools, tc.wantPages)
			}
			if auth.Load() != "Bearer tok" {
				t.Fatalf("Authorization = %v", auth.Load())
			}
		})
	}
}

func TestToolsListRejects(t *testing.T) {
	t.Parallel()
	if _, err := caller.ToolsList(nil, "", caller.Options{}, nil); err == nil {
		t.Fatal("no targets accepted")
	}
	if _, err := caller.ToolsList([]caller.ListTarget{{Endpoint: "http://x/mcp", Want: []string{"a", "a"}}}, "", caller.Options{}, nil); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("a name wanted twice = %v", err)
	}
}
