package echoserver

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestSyntheticTools: -extra-tools N lists N more tools after the server's own, each with a
// description and a small schema the SDK enforces, and each callable.
func TestSyntheticTools(t *testing.T) {
	t.Parallel()
	serverT, clientT := mcp.NewInMemoryTransports()
	ss, err := newServer(slog.New(slog.DiscardHandler), options{ExtraTools: 100}).Connect(t.Context(), serverT, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := newClient().Connect(t.Context(), clientT, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })

	var tools []*mcp.Tool
	for tool, err := range cs.Tools(t.Context(), nil) {
		if err != nil {
			t.Fatal(err)
		}
		tools = append(tools, tool)
	}
	if len(tools) != 103 {
		t.Fatalf("%d tools, want 103 (3 own and 100 synthetic)", len(tools))
	}
	synthetic := map[string]bool{}
	descriptions := map[string]bool{}
	for _, tool := range tools {
		if !strings.HasPrefix(tool.Name, "tool_") {
			continue
		}
		synthetic[tool.Name] = true
		descriptions[tool.Description] = true
		schema, err := json.Marshal(tool.InputSchema)
		if err != nil {
			t.Fatal(err)
		}
		if tool.Description == "" || !strings.Contains(string(schema), `"required":["query"]`) {
			t.Fatalf("%s: description %q, schema %s: want both, query required", tool.Name, tool.Description, schema)
		}
	}
	if len(synthetic) != 100 || !synthetic[SyntheticToolName(1)] || !synthetic[SyntheticToolName(100)] {
		t.Fatalf("synthetic tools %v: want tool_0001 to tool_0100", synthetic)
	}
	if len(descriptions) != 100 {
		t.Fatalf("%d distinct descriptions of 100 tools", len(descriptions))
	}

	tests := []struct {
		name    string
		args    map[string]any
		want    string // in the text of a successful answer
		wantErr bool
	}{
		{name: "query", args: map[string]any{"query": "late payments"}, want: `tool_0042: no tickets match "late payments"`},
		{name: "all arguments", args: map[string]any{"query": "x", "limit": 5, "order": "oldest"}, want: "tool_0042"},
		{name: "no query", args: map[string]any{"limit": 5}, wantErr: true},
		{name: "limit over 100", args: map[string]any{"query": "x", "limit": 101}, wantErr: true},
		{name: "unknown order", args: map[string]any{"query": "x", "order": "random"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: SyntheticToolName(42), Arguments: tc.args})
			if err != nil {
				t.Fatal(err)
			}
			text := resultText(t, res)
			if res.IsError != tc.wantErr || (!tc.wantErr && !strings.Contains(text, tc.want)) {
				t.Fatalf("IsError=%v %q; want IsError=%v and %q", res.IsError, text, tc.wantErr, tc.want)
			}
		})
	}
}
