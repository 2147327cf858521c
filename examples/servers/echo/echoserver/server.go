package echoserver

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"time"

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

Tools:   echo {text} returns text unchanged; add {a, b} returns a+b;
         hang {seconds} answers only when cancelled, or after seconds (default 300).
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

// HangArgs are the arguments of the hang tool.
type HangArgs struct {
	Seconds float64 `json:"seconds,omitempty" jsonschema:"how long to wait before answering anyway (default 300, at most 3600)"`
}

// Bounds of the hang tool: it never holds a call forever.
const (
	defaultHang = 300 * time.Second
	maxHang     = time.Hour
)

// options are the server's optional parts, off by default so that the default server (the
// one the benchmarks measure) stays what it is.
type options struct {
	// Whoami adds the whoami tool, which tells the caller how it was identified to this
	// server: the Authorization header of the HTTP request that carried the call ("" over
	// stdio) and the environment variables named in WhoamiEnv, and which span called it
	// (the traceparent header and params._meta.traceparent). It exists to test what a
	// gateway sends upstream, and reveals credentials to whoever may call it.
	Whoami    bool
	WhoamiEnv []string
	// ExtraTools is how many synthetic tools (synthetic.go) to add, so that a benchmark can
	// measure a large tools/list against a server whose other costs stay tiny.
	ExtraTools int
}

// WhoamiResult is the structured output of the whoami tool.
type WhoamiResult struct {
	Authorization string            `json:"authorization" jsonschema:"the Authorization header of the request that carried the call"`
	Env           map[string]string `json:"env,omitempty" jsonschema:"the environment variables the server was told to report, when set"`
	// Traceparent is the W3C traceparent header of the request that carried the call, and
	// MetaTraceparent the call's params._meta.traceparent: which span called this server.
	Traceparent     string `json:"traceparent,omitempty" jsonschema:"the traceparent header of the request that carried the call"`
	MetaTraceparent string `json:"meta_traceparent,omitempty" jsonschema:"the call's params._meta.traceparent"`
}

// newServer builds the MCP server with every tool, resource and prompt; it is
// transport-agnostic so tests can drive it in memory.
func newServer(logger *slog.Logger, opts options) *mcp.Server {
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
	mcp.AddTool(server, &mcp.Tool{
		Name:        "hang",
		Description: "Answers only when the call is cancelled (it then ends with an error), or after seconds; for testing timeouts.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)},
	}, hangTool(logger))
	if opts.Whoami {
		mcp.AddTool(server, &mcp.Tool{
			Name:        "whoami",
			Description: "Reports the Authorization header this call arrived with and the configured environment variables (a test tool).",
			Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)},
		}, whoamiTool(opts.WhoamiEnv))
	}
	addSyntheticTools(server, opts.ExtraTools)

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

func whoamiTool(envNames []string) mcp.ToolHandlerFor[struct{}, WhoamiResult] {
	return func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, WhoamiResult, error) {
		var out WhoamiResult
		if req.Extra != nil && req.Extra.Header != nil {
			out.Authorization = req.Extra.Header.Get("Authorization")
			out.Traceparent = req.Extra.Header.Get("Traceparent")
		}
		if req.Params != nil {
			out.MetaTraceparent, _ = req.Params.GetMeta()["traceparent"].(string)
		}
		for _, name := range envNames {
			if v, ok := os.LookupEnv(name); ok {
				if out.Env == nil {
					out.Env = map[string]string{}
				}
				out.Env[name] = v
			}
		}
		// Content is left empty so the SDK fills it with the JSON of the output.
		return nil, out, nil
	}
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

// hangTool returns the hang tool: it waits for the call's cancellation (notifications/cancelled,
// or the session's end) or for its bounded delay, whichever comes first. A cancellation is
// logged (on stderr), so that a test driving the server as a process can see it arrive.
func hangTool(logger *slog.Logger) mcp.ToolHandlerFor[HangArgs, any] {
	return func(ctx context.Context, req *mcp.CallToolRequest, in HangArgs) (*mcp.CallToolResult, any, error) {
		return hang(ctx, logger, in)
	}
}

func hang(ctx context.Context, logger *slog.Logger, in HangArgs) (*mcp.CallToolResult, any, error) {
	d := defaultHang
	if in.Seconds != 0 {
		if in.Seconds < 0 || in.Seconds > maxHang.Seconds() || math.IsNaN(in.Seconds) {
			return nil, nil, fmt.Errorf("seconds %g: want more than 0 and at most %g", in.Seconds, maxHang.Seconds())
		}
		d = time.Duration(in.Seconds * float64(time.Second))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		logger.Info("hang cancelled", "cause", context.Cause(ctx))
		return nil, nil, fmt.Errorf("hang cancelled: %w", context.Cause(ctx))
	case <-t.C:
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "hung for " + d.String()}}}, nil, nil
	}
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
