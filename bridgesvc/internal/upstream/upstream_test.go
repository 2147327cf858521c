package upstream_test

import (
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

func TestValidProtocolVersion(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{"2025-11-25": true, "": false, "2025-11-25\r\nX: y": false, strings.Repeat("1", 33): false} {
		if got := upstream.ValidProtocolVersion(v); got != want {
			t.Errorf("ValidProtocolVersion(%q) = %v", v, got)
		}
	}
}

func TestInitializeResult(t *testing.T) {
	t.Parallel()
	peek := func(s string) *upstream.Message {
		m, err := jsonrpc.Peek([]byte(s))
		if err != nil {
			t.Fatalf("Peek(%s): %v", s, err)
		}
		return &m
	}
	initialize := peek(`{"jsonrpc":"2.0","id":"i\u0031","method":"initialize","params":{"protocolVersion":"2025-11-25"}}`)
	ping := peek(`{"jsonrpc":"2.0","id":"i1","method":"ping"}`)
	cases := []struct {
		name string
		req  *upstream.Message
		out  string
		want string
	}{
		{name: "initialize result", req: initialize, out: `{"jsonrpc":"2.0","id":"i1","result":{"protocolVersion":"2025-06-18"}}`, want: "2025-06-18"},
		{name: "another request's result", req: initialize, out: `{"jsonrpc":"2.0","id":"i2","result":{"protocolVersion":"2025-06-18"}}`},
		{name: "not an initialize", req: ping, out: `{"jsonrpc":"2.0","id":"i1","result":{"protocolVersion":"2025-06-18"}}`},
		{name: "unsafe revision", req: initialize, out: `{"jsonrpc":"2.0","id":"i1","result":{"protocolVersion":"2025\r\n"}}`},
		{name: "error response", req: initialize, out: `{"jsonrpc":"2.0","id":"i1","error":{"code":1,"message":"no"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := upstream.InitializeResult(tc.req, peek(tc.out))
			if got != tc.want || ok != (tc.want != "") {
				t.Fatalf("InitializeResult = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}
