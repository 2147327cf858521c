package echoserver

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// maxExtraTools bounds -extra-tools: enough for any list benchmark, few enough that a typo
// cannot make the server build a list of millions.
const maxExtraTools = 10_000

// SyntheticArgs are the arguments of every synthetic tool.
type SyntheticArgs struct {
	Query string `json:"query"`
	Limit int    `json:"limit,omitempty"`
	Order string `json:"order,omitempty"`
}

// syntheticSchema is the input schema of every synthetic tool: small, of the shape real
// servers' tools have (a required string, an optional bounded integer, an optional enum). The
// SDK validates calls against it.
const syntheticSchema = `{"type":"object","properties":{` +
	`"query":{"type":"string","description":"what to look up, in plain words"},` +
	`"limit":{"type":"integer","minimum":1,"maximum":100,"description":"most records to return (default 10)"},` +
	`"order":{"type":"string","enum":["newest","oldest"],"description":"which records come first (default newest)"}},` +
	`"required":["query"],"additionalProperties":false}`

// syntheticDomains vary the synthetic tools' names and descriptions a little, so that the
// list is not one string repeated (which would flatter any compression on the way).
var syntheticDomains = []string{"issues", "invoices", "tickets", "documents", "builds", "alerts", "contacts", "orders"}

// SyntheticToolName is the name of the i-th synthetic tool (1-based): tool_0001, tool_0002, …
func SyntheticToolName(i int) string { return fmt.Sprintf("tool_%04d", i) }

// addSyntheticTools registers n synthetic tools. Each answers with a line naming itself and
// the query; they exist for their entries in tools/list.
func addSyntheticTools(server *mcp.Server, n int) {
	for i := 1; i <= n; i++ {
		name := SyntheticToolName(i)
		domain := syntheticDomains[i%len(syntheticDomains)]
		mcp.AddTool(server, &mcp.Tool{
			Name:        name,
			Title:       fmt.Sprintf("Search %s (%d)", domain, i),
			Description: fmt.Sprintf("Searches the %s of collection %d for records matching a query and returns up to limit of them, newest first unless asked otherwise. A synthetic tool for measuring large lists.", domain, i),
			InputSchema: json.RawMessage(syntheticSchema),
			Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)},
		}, func(_ context.Context, _ *mcp.CallToolRequest, in SyntheticArgs) (*mcp.CallToolResult, any, error) {
			if len(in.Query) > maxTextBytes {
				return nil, nil, fmt.Errorf("query is %d bytes, more than the %d allowed", len(in.Query), maxTextBytes)
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("%s: no %s match %q", name, domain, in.Query)}}}, nil, nil
		})
	}
}
