package caller_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/floor"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestEchoText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		size    int
		wantErr bool
	}{
		{size: 11},
		{size: 64},
		{size: 16 << 10},
		{size: caller.MaxArgsSize},
		{size: 10, wantErr: true},
		{size: 0, wantErr: true},
		{size: caller.MaxArgsSize + 1, wantErr: true},
	}
	for _, tc := range tests {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			text, err := caller.EchoText(tc.size)
			if (err != nil) != tc.wantErr {
				t.Fatalf("EchoText(%d) error = %v, wantErr %v", tc.size, err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			args, err := json.Marshal(map[string]string{"text": text})
			if err != nil {
				t.Fatal(err)
			}
			if len(args) != tc.size {
				t.Fatalf("arguments are %d bytes, want %d", len(args), tc.size)
			}
		})
	}
}

func TestToolsCallBody(t *testing.T) {
	t.Parallel()
	body, err := caller.ToolsCallBody(7, "hi")
	if err != nil {
		t.Fatal(err)
	}
	var msg struct {
		JSONRPC string `json:"jsonrpc"`
		ID      int    `json:"id"`
		Method  string `json:"method"`
		Params  struct {
			Name      string            `json:"name"`
			Arguments map[string]string `json:"arguments"`
		} `json:"params"`
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		t.Fatal(err)
	}
	if msg.JSONRPC != "2.0" || msg.ID != 7 || msg.Method != "tools/call" || msg.Params.Name != "echo" || msg.Params.Arguments["text"] != "hi" {
		t.Fatalf("body = %s", body)
	}
}

// withAuth records the Authorization header of every request.
func withAuth(seen *atomic.Value, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Authorization"))
		h.ServeHTTP(w, r)
	})
}

func TestRawHTTP(t *testing.T) {
	t.Parallel()
	var auth atomic.Value
	echo := httptest.NewServer(withAuth(&auth, floor.Echo(floor.MaxBody)))
	t.Cleanup(echo.Close)
	truncating := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "{}")
	}))
	t.Cleanup(truncating.Close)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusForbidden)
	}))
	t.Cleanup(failing.Close)

	tests := []struct {
		name    string
		url     string
		wantErr string
	}{
		{name: "echo", url: echo.URL},
		{name: "short answer", url: truncating.URL, wantErr: "echoed"},
		{name: "error status", url: failing.URL, wantErr: "403"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dial, err := caller.RawHTTP(tc.url, caller.Options{Token: "tok", ArgsSize: 64})
			if err != nil {
				t.Fatal(err)
			}
			s, err := dial(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			err = s.Call(t.Context())
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Call: %v", err)
				}
				if got := auth.Load(); got != "Bearer tok" {
					t.Fatalf("Authorization = %v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Call = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

type echoArgs struct {
	Text string `json:"text"`
}

// mcpServer serves an echo tool over Streamable HTTP; when mangle is set the
// tool answers with the wrong text.
func mcpServer(t *testing.T, auth *atomic.Value, mangle bool) string {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "test", Version: "v0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, any, error) {
		text := in.Text
		if mangle {
			text = text[1:]
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil, nil
	})
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	srv := httptest.NewServer(withAuth(auth, handler))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

func TestMCP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		mangle   bool
		protocol string
		size     int
		wantErr  string
	}{
		{name: "64 B", protocol: "2025-11-25", size: 64},
		{name: "16 KiB", protocol: "2025-11-25", size: 16 << 10},
		{name: "SDK default protocol", protocol: "", size: 64},
		{name: "wrong answer", mangle: true, protocol: "2025-11-25", size: 64, wantErr: "echo returned"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var auth atomic.Value
			url := mcpServer(t, &auth, tc.mangle)
			dial, err := caller.MCP(url, tc.protocol, caller.Options{Token: "tok", ArgsSize: tc.size})
			if err != nil {
				t.Fatal(err)
			}
			s, err := dial(t.Context())
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			for range 3 {
				err = s.Call(t.Context())
				if tc.wantErr == "" && err != nil {
					t.Fatalf("Call: %v", err)
				}
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Call = %v, want an error containing %q", err, tc.wantErr)
			}
			if got := auth.Load(); got != "Bearer tok" {
				t.Fatalf("Authorization = %v", got)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func TestMCPDialFails(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	dial, err := caller.MCP(srv.URL+"/mcp", "2025-11-25", caller.Options{Token: "bad", ArgsSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := dial(t.Context()); err == nil {
		s.Close()
		t.Fatal("dial succeeded against a server that refuses everything")
	}
}
