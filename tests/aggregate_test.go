package tests

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/nodepeer"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// aggregatedGateway fronts three servers: server-everything (Node) over stdio, the example
// echo server over Streamable HTTP and the Go SDK's conformance server over stdio, with small
// aggregated pages so that every list of /mcp spans several.
func aggregatedGateway(t *testing.T) (*gatehousetest.Gateway, map[string][]string) {
	nodepeer.Node22(t)
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	conformance := gatehousetest.Bin(t, gatehousetest.EverythingGoSDK)
	echoAddr := gatehousetest.StartServer(t, func(addr string) []string { return []string{echo, "-http", addr} })
	ev := nodepeer.StartEverything(t, nodepeer.EverythingStdio)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("everything", ev.Argv...) + httpEntry("echo", "http://"+echoAddr+"/mcp") + stdioEntry("conformance", conformance),
		Args:   []string{"--list-page-size", "7"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Each server's own tools, read straight from it: what /mcp must list, prefixed.
	own := map[string][]string{
		"echo":        upstreamToolsAt(t, ctx, &mcp.StreamableClientTransport{Endpoint: "http://" + echoAddr + "/mcp"}),
		"conformance": upstreamToolsAt(t, ctx, &mcp.CommandTransport{Command: exec.Command(conformance)}),
		"everything":  upstreamToolsAt(t, ctx, &mcp.CommandTransport{Command: exec.Command(ev.Argv[0], ev.Argv[1:]...)}),
	}
	return g, own
}

// TestAggregatedGoSDK: the official Go SDK client on /mcp in front of three servers:
// initialize, tools/list across all three over several pages, tools/call on each by its
// prefixed name, resources/read, prompts/get, and a list_changed notification from one
// upstream arriving on the host's stream.
func TestAggregatedGoSDK(t *testing.T) {
	g, own := aggregatedGateway(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	changed := make(chan struct{}, 8)
	client := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.Base + "/mcp", HTTPClient: g.AuthClient()}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, g.Logs())
	}
	defer cs.Close()
	if info := cs.InitializeResult().ServerInfo; info == nil || info.Name != "gatehouse" {
		t.Fatalf("serverInfo %+v, want the gateway's", info)
	}

	// Every page by hand, to see that there are several and that they hold every tool once.
	var listed []string
	pages := 0
	params := &mcp.ListToolsParams{}
	for {
		res, err := cs.ListTools(ctx, params)
		if err != nil {
			t.Fatalf("tools/list page %d: %v", pages+1, err)
		}
		pages++
		if len(res.Tools) > 7 {
			t.Fatalf("page %d holds %d tools, over the page size 7", pages, len(res.Tools))
		}
		for _, tool := range res.Tools {
			listed = append(listed, tool.Name)
		}
		if res.NextCursor == "" {
			break
		}
		if pages > 50 {
			t.Fatal("more than 50 pages")
		}
		params = &mcp.ListToolsParams{Cursor: res.NextCursor}
	}
	var want []string
	for server, tools := range own {
		for _, name := range tools {
			want = append(want, server+"__"+name)
		}
	}
	slices.Sort(want)
	got := slices.Clone(listed)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("aggregated tools (%d over %d pages):\n%v\nwant (%d):\n%v", len(got), pages, got, len(want), want)
	}
	if pages < 3 {
		t.Fatalf("%d tools over %d pages, want several pages of 7", len(got), pages)
	}

	// A cursor from another session, or altered, is refused.
	first, err := cs.ListTools(ctx, &mcp.ListToolsParams{})
	if err != nil || first.NextCursor == "" {
		t.Fatalf("tools/list: %v, cursor %q", err, first.NextCursor)
	}
	forged := first.NextCursor[:len(first.NextCursor)-1] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", first.NextCursor[len(first.NextCursor)-1])+1)%16])
	if _, err := cs.ListTools(ctx, &mcp.ListToolsParams{Cursor: forged}); err == nil || !strings.Contains(err.Error(), "invalid cursor") {
		t.Fatalf("an altered cursor: %v, want invalid cursor", err)
	}
	other, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.Base + "/mcp", HTTPClient: g.AuthClient()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.ListTools(ctx, &mcp.ListToolsParams{Cursor: first.NextCursor}); err == nil || !strings.Contains(err.Error(), "invalid cursor") {
		t.Fatalf("another session's cursor: %v, want invalid cursor", err)
	}
	_ = other.Close()

	calls := []struct {
		name string
		args map[string]any
		want string
	}{
		{"everything__echo", map[string]any{"message": "hi"}, "Echo: hi"},
		{"echo__echo", map[string]any{"text": "hello gatehouse"}, "hello gatehouse"},
		{"conformance__test_simple_text", nil, "This is a simple text response for testing."},
	}
	for _, c := range calls {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: c.name, Arguments: c.args})
		if err != nil {
			t.Fatalf("tools/call %s: %v", c.name, err)
		}
		if text, ok := res.Content[0].(*mcp.TextContent); res.IsError || !ok || text.Text != c.want {
			t.Fatalf("tools/call %s: %#v, want text %q", c.name, res.Content, c.want)
		}
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "nosuch__echo"}); err == nil || !strings.Contains(err.Error(), "unknown tool") {
		t.Fatalf("tools/call of an unknown server's tool: %v, want unknown tool", err)
	}

	reads := map[string]string{
		"echo://readme":      echoReadme,
		"test://static-text": "This is the content of the static text resource.",
		"demo://resource/static/document/architecture.md": nodepeer.EverythingDoc(t, "architecture.md"),
	}
	for uri, text := range reads {
		rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		if err != nil {
			t.Fatalf("resources/read %s: %v", uri, err)
		}
		if len(rr.Contents) != 1 || rr.Contents[0].Text != text {
			t.Fatalf("resources/read %s: %#v, want text %.60q", uri, rr.Contents, text)
		}
	}

	prompts := []struct {
		name string
		args map[string]string
		want string
	}{
		{"echo__greet", map[string]string{"name": "Ada"}, "Please greet Ada warmly, in one sentence."},
		{"conformance__test_simple_prompt", nil, "This is a simple prompt for testing."},
		{"everything__args-prompt", map[string]string{"city": "Oslo"}, "What's weather in Oslo?"},
	}
	for _, p := range prompts {
		pr, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: p.name, Arguments: p.args})
		if err != nil || len(pr.Messages) == 0 {
			t.Fatalf("prompts/get %s: %v", p.name, err)
		}
		if text, ok := pr.Messages[0].Content.(*mcp.TextContent); !ok || text.Text != p.want {
			t.Fatalf("prompts/get %s: %#v, want %q", p.name, pr.Messages[0].Content, p.want)
		}
	}

	// One upstream changes its tools: the host hears of it.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "conformance__test_trigger_tool_change"}); err != nil {
		t.Fatalf("tools/call test_trigger_tool_change: %v", err)
	}
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatalf("no notifications/tools/list_changed reached the host\n%s", g.Logs())
	}
}

// TestAggregatedTypeScriptSDK: the official TypeScript SDK client on /mcp: every page of
// tools/list, and a call, a read and a prompt, each on another server.
func TestAggregatedTypeScriptSDK(t *testing.T) {
	g, own := aggregatedGateway(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	res, err := nodepeer.RunClient(t, ctx, "--url", g.Base+"/mcp", "--token", g.Token,
		"--call", "everything__echo", "--args", `{"message":"hello gatehouse"}`,
		"--read", "echo://readme", "--prompt", "conformance__test_simple_prompt")
	if err != nil {
		t.Fatalf("TypeScript client: %v\ngateway log:\n%s", err, g.Logs())
	}
	// server-everything offers some tools only to clients with capabilities this one lacks,
	// so its part is checked against its own list for being a part of it; the Go servers'
	// lists are whole.
	if res.ToolPages < 3 {
		t.Fatalf("tools/list: %d tools over %d pages, want several pages", len(res.Tools), res.ToolPages)
	}
	seen := map[string]bool{}
	for _, name := range res.Tools {
		server, tool, _ := strings.Cut(name, "__")
		if seen[name] || !slices.Contains(own[server], tool) {
			t.Fatalf("tools/list: %q listed twice or not a tool of its server: %v", name, res.Tools)
		}
		seen[name] = true
	}
	for _, server := range []string{"echo", "conformance"} {
		for _, tool := range own[server] {
			if !seen[server+"__"+tool] {
				t.Fatalf("tools/list has no %s__%s: %v", server, tool, res.Tools)
			}
		}
	}
	if !seen["everything__echo"] {
		t.Fatalf("tools/list has no everything__echo: %v", res.Tools)
	}
	tr, err := res.ToolResult()
	if err != nil || tr.IsError || tr.Text() != "Echo: hello gatehouse" {
		t.Fatalf("tools/call %s (%v)", res.Call, err)
	}
	var read struct {
		Contents []struct{ Text string } `json:"contents"`
	}
	if err := json.Unmarshal(res.Read, &read); err != nil || len(read.Contents) != 1 || read.Contents[0].Text != echoReadme {
		t.Fatalf("resources/read %.200s (%v)", res.Read, err)
	}
	var prompt struct {
		Messages []struct{ Content nodepeer.Content } `json:"messages"`
	}
	if err := json.Unmarshal(res.Prompt, &prompt); err != nil || len(prompt.Messages) != 1 || prompt.Messages[0].Content.Text != "This is a simple prompt for testing." {
		t.Fatalf("prompts/get %s (%v)", res.Prompt, err)
	}
}

// TestAggregatedCollisions: a server without a prefix keeps its names, another's are
// prefixed; a resource URI both serve is listed once, from the earlier server in config
// order, and read from it; a server that cannot answer is left out of the lists (and
// logged), which still answer.
func TestAggregatedCollisions(t *testing.T) {
	t.Parallel()
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("a", echo) + "    prefix: \"\"\n    instructions: Echo things back.\n    capabilities: {tools: {}, resources: {}}\n" +
			stdioEntry("b", echo) + "    capabilities: {tools: {listChanged: true}, prompts: {}}\n" +
			stdioEntry("mute", "sleep", "600") + "    timeout: 1s\n    capabilities: {prompts: {}}\n",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: g.Base + "/mcp", HTTPClient: g.AuthClient()}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, g.Logs())
	}
	defer cs.Close()
	// The merged initialize: the declared capabilities' union, the instructions under their
	// server's name.
	init := cs.InitializeResult()
	if c := init.Capabilities; c.Tools == nil || !c.Tools.ListChanged || c.Prompts == nil || c.Prompts.ListChanged || c.Resources == nil || c.Resources.Subscribe || c.Logging != nil {
		t.Errorf("capabilities %+v, want tools (listChanged), prompts, resources, no logging", c)
	}
	if init.Instructions != "## a\nEcho things back." {
		t.Errorf("instructions %q", init.Instructions)
	}
	tools, err := cs.ListTools(ctx, &mcp.ListToolsParams{})
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	if want := []string{"add", "b__add", "b__echo", "b__hang", "echo", "hang"}; !slices.Equal(names, want) {
		t.Fatalf("tools %v, want %v", names, want)
	}
	// The gateway's log reaches the test through a pipe: wait for the line, never assume it.
	testsync.WaitFor(t, 30*time.Second, "the mute server's absence in the log", func() bool {
		return logged(g.Logs(), "aggregated list: server left out", "server", "mute")
	})
	res, err := cs.ListResources(ctx, &mcp.ListResourcesParams{})
	if err != nil {
		t.Fatalf("resources/list: %v", err)
	}
	if len(res.Resources) != 1 || res.Resources[0].URI != "echo://readme" {
		t.Fatalf("resources %+v, want echo://readme once", res.Resources)
	}
	testsync.WaitFor(t, 30*time.Second, "the hidden duplicate URI in the log", func() bool {
		return logged(g.Logs(), "aggregated list: a URI two servers serve; the later one is hidden", "hidden", "b")
	})
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "echo://readme"}); err != nil {
		t.Fatalf("resources/read: %v", err)
	}
	rec := waitAudit(t, g.DataDir, "the read's outcome", func(r auditRecord) bool {
		return r.Method == "resources/read" && r.Phase == "PHASE_OUTCOME"
	})
	if rec.Server != "a" || rec.Tool != "echo://readme" || rec.Outcome != "OUTCOME_ALLOWED" {
		t.Fatalf("the read went to %+v, want server a", rec)
	}
	for _, name := range []string{"echo", "b__echo"} {
		r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{"text": name}})
		if err != nil || r.IsError {
			t.Fatalf("tools/call %s: %v", name, err)
		}
		if text := r.Content[0].(*mcp.TextContent).Text; text != name {
			t.Fatalf("tools/call %s: %q", name, text)
		}
	}
}

// logged reports whether logs (JSON lines) hold a line with message msg whose key is value.
func logged(logs, msg, key, value string) bool {
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(strings.TrimSpace(line)), &m) != nil {
			continue
		}
		if m["msg"] == msg && m[key] == value {
			return true
		}
	}
	return false
}
