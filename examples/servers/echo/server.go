package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Version is reported in the initialize result.
const Version = "v0.1.0"

// maxTextBytes bounds what echo and greet accept, well below the transport's
// own body limit, so that a caller gets a clear tool error instead of a
// truncated or oversized answer.
const maxTextBytes = 1 << 20

// readmeURI names the server's single resource.
const readmeURI = "echo://readme"

const readme = `echo is a small MCP server used to test and measure Gatehouse.

Tools:   echo {text} returns text unchanged; add {a, b} returns a+b.
Prompts: greet {name}.
`

// EchoArgs are the arguments of the echo tool.
type EchoArgs struct {
	Text string `json:"text" jsonschema:"the text to return unchanged"`
}

// AddArgs are the arguments of the add tool.
type AddArgs struct {
	A float64 `json:"a" jsonschema:"the first addend"`
	B float64 `json:"b" jsonschema:"the second addend"`
}

// AddResult is the structured output of the add tool.
type AddResult struct {
	Sum float64 `json:"sum" jsonschema:"a+b"`
}

// newServer builds the MCP server with every tool, resource and prompt; it is
// transport-agnostic so tests can drive it in memory.
func newServer(logger *slog.Logger) *mcp.Server {
	server := mcp.NewServer(&mcp.Implementation{Name: "echo", Title: "Gatehouse echo server", Version: Version},
		&mcp.ServerOptions{Logger: logger, Instructions: "Call echo to get your text back, add to sum two numbers."})

	mcp.AddTool(server, &mcp.Tool{
		Name:        "echo",
		Description: "Returns its text argument unchanged.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)},
	}, echo)
	mcp.AddTool(server, &mcp.Tool{
		Name:        "add",
		Description: "Adds two numbers.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)},
	}, add)

	server.AddResource(&mcp.Resource{
		URI:         readmeURI,
		Name:        "readme",
		Description: "What this server offers.",
		MIMEType:    "text/plain",
		Size:        int64(len(readme)),
	}, readReadme)

	server.AddPrompt(&mcp.Prompt{
		Name:        "greet",
		Description: "Asks the model to greet someone by name.",
		Arguments:   []*mcp.PromptArgument{{Name: "name", Description: "who to greet", Required: true}},
	}, greet)
	return server
}

func echo(_ context.Context, _ *mcp.CallToolRequest, in EchoArgs) (*mcp.CallToolResult, any, error) {
	if len(in.Text) > maxTextBytes {
		return nil, nil, fmt.Errorf("text is %d bytes, more than the %d allowed", len(in.Text), maxTextBytes)
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
}

func add(_ context.Context, _ *mcp.CallToolRequest, in AddArgs) (*mcp.CallToolResult, AddResult, error) {
	sum := in.A + in.B
	if math.IsInf(sum, 0) || math.IsNaN(sum) {
		return nil, AddResult{}, fmt.Errorf("%g + %g is not a finite number", in.A, in.B)
	}
	// Content is left empty so the SDK fills it with the JSON of the output,
	// keeping the text and structured forms identical.
	return nil, AddResult{Sum: sum}, nil
}

func readReadme(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	if req.Params.URI != readmeURI {
		return nil, mcp.ResourceNotFoundError(req.Params.URI)
	}
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{
		{URI: readmeURI, MIMEType: "text/plain", Text: readme},
	}}, nil
}

func greet(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	name := req.Params.Arguments["name"]
	switch {
	case name == "":
		return nil, fmt.Errorf("argument name is required")
	case len(name) > maxTextBytes:
		return nil, fmt.Errorf("argument name is %d bytes, more than the %d allowed", len(name), maxTextBytes)
	}
	return &mcp.GetPromptResult{
		Description: "Greeting for " + name,
		Messages: []*mcp.PromptMessage{{
			Role:    "user",
			Content: &mcp.TextContent{Text: "Please greet " + name + " warmly, in one sentence."},
		}},
	}, nil
}
