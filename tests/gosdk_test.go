package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// upstream is one MCP server the gateway fronts in a test, and what to exercise on it.
type upstream struct {
	name       string
	yaml       string // the server's entry in the config file
	tool       string
	args       map[string]any
	wantText   string // the tool result's text, exactly
	resource   string
	wantRead   string // the resource's text, exactly
	prompt     string
	pArgs      map[string]string
	wantPrompt string // the prompt's first message text, exactly
}

// echoReadme is the text of the example echo server's echo://readme resource.
const echoReadme = `echo is a small MCP server used to test and measure Gatehouse.

Tools:   echo {text} returns text unchanged; add {a, b} returns a+b;
         hang {seconds} answers only when cancelled, or after seconds (default 300).
Prompts: greet {name}.
`

func stdioEntry(name string, argv ...string) string {
	return stdioEntryFor(name, []string{"default"}, argv...)
}

// stdioEntryFor is a stdio server's config entry approved for the given tenants.
func stdioEntryFor(name string, tenants []string, argv ...string) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	return fmt.Sprintf("  - name: %s\n    transport: stdio\n    command: [%s]\n    tenants: [%s]\n", name, strings.Join(quoted, ", "), strings.Join(tenants, ", "))
}

func httpEntry(name, url string) string {
	return fmt.Sprintf("  - name: %s\n    transport: http\n    url: %s\n    tenants: [default]\n", name, url)
}

// goUpstreams are the Go servers: the example echo server over stdio and over Streamable HTTP,
// and the Go SDK's conformance server over stdio.
func goUpstreams(t *testing.T) []upstream {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	everything := gatehousetest.Bin(t, gatehousetest.EverythingGoSDK)
	echoAddr := gatehousetest.StartServer(t, func(addr string) []string { return []string{echo, "-http", addr} })
	echoCase := func(name, entry string) upstream {
		return upstream{name: name, yaml: entry, tool: "echo", args: map[string]any{"text": "hello gatehouse"},
			wantText: "hello gatehouse", resource: "echo://readme", wantRead: echoReadme,
			prompt: "greet", pArgs: map[string]string{"name": "Ada"}, wantPrompt: "Please greet Ada warmly, in one sentence."}
	}
	return []upstream{
		echoCase("echo-stdio", stdioEntry("echo-stdio", echo)),
		echoCase("echo-http", httpEntry("echo-http", "http://"+echoAddr+"/mcp")),
		{name: "everything-stdio", yaml: stdioEntry("everything-stdio", everything), tool: "test_simple_text",
			wantText: "This is a simple text response for testing.",
			resource: "test://static-text", wantRead: "This is the content of the static text resource.",
			prompt: "test_simple_prompt", wantPrompt: "This is a simple prompt for testing."},
	}
}

func configOf(ups ...upstream) string {
	var b strings.Builder
	b.WriteString("servers:\n")
	for _, u := range ups {
		b.WriteString(u.yaml)
	}
	return b.String()
}

// TestGoSDKClient drives the official Go SDK client through the gateway to each upstream:
// initialize, tools/list, tools/call, resources/read and prompts/get.
func TestGoSDKClient(t *testing.T) {
	ups := goUpstreams(t)
	g := gatehousetest.Start(t, gatehousetest.Options{Config: configOf(ups...)})
	for _, u := range ups {
		t.Run(u.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			client := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, nil)
			cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.Endpoint(u.name), HTTPClient: g.AuthClient()}, nil)
			if err != nil {
				t.Fatalf("connect: %v\n%s", err, g.Logs())
			}
			defer cs.Close()
			tools, err := cs.ListTools(ctx, &mcp.ListToolsParams{})
			if err != nil {
				t.Fatalf("tools/list: %v", err)
			}
			found := false
			for _, tool := range tools.Tools {
				found = found || tool.Name == u.tool
			}
			if !found {
				t.Fatalf("tools/list has no %q", u.tool)
			}
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: u.tool, Arguments: u.args})
			if err != nil {
				t.Fatalf("tools/call: %v", err)
			}
			if res.IsError || len(res.Content) == 0 {
				t.Fatalf("tools/call result: isError=%v content=%d", res.IsError, len(res.Content))
			}
			if text, ok := res.Content[0].(*mcp.TextContent); len(res.Content) != 1 || !ok || text.Text != u.wantText {
				t.Fatalf("tools/call content %#v, want one text block %q", res.Content, u.wantText)
			}
			rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: u.resource})
			if err != nil {
				t.Fatalf("resources/read %s: %v", u.resource, err)
			}
			if len(rr.Contents) != 1 || rr.Contents[0].URI != u.resource || rr.Contents[0].Text != u.wantRead {
				t.Fatalf("resources/read %s: %#v, want one content of text %q", u.resource, rr.Contents, u.wantRead)
			}
			pr, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: u.prompt, Arguments: u.pArgs})
			if err != nil || len(pr.Messages) == 0 {
				t.Fatalf("prompts/get %s: %v", u.prompt, err)
			}
			if text, ok := pr.Messages[0].Content.(*mcp.TextContent); !ok || text.Text != u.wantPrompt {
				t.Fatalf("prompts/get %s: first message %#v, want text %q", u.prompt, pr.Messages[0].Content, u.wantPrompt)
			}
		})
	}
}
