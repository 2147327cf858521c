package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/nodepeer"
)

// TestTypeScriptSDKClient drives the official TypeScript SDK client through the gateway, with
// the dev token, to stdio servers (server-everything and the example echo server) and to
// Streamable HTTP servers (server-everything and the example echo server):
// initialize, tools/list, tools/call, resources/read, prompts/get, then DELETE.
func TestTypeScriptSDKClient(t *testing.T) {
	nodepeer.Node22(t)
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	echoAddr := freeAddr(t)
	startHTTPServer(t, echoAddr, echo, "-http", echoAddr)
	evStdio := nodepeer.StartEverything(t, nodepeer.EverythingStdio)
	evHTTP := nodepeer.StartEverything(t, nodepeer.EverythingStreamableHTTP)

	everythingArgs := []string{"--call", "echo", "--args", `{"message":"hello gatehouse"}`,
		"--read", "demo://resource/static/document/architecture.md",
		"--prompt", "args-prompt", "--prompt-args", `{"city":"Oslo"}`}
	echoArgs := []string{"--call", "echo", "--args", `{"text":"hello gatehouse"}`,
		"--read", "echo://readme", "--prompt", "greet", "--prompt-args", `{"name":"Ada"}`}
	cases := []struct {
		name  string
		entry string
		args  []string
	}{
		{"everything-stdio", stdioEntry("everything-stdio", evStdio.Argv...), everythingArgs},
		{"everything-http", httpEntry("everything-http", evHTTP.URL), everythingArgs},
		{"echo-stdio", stdioEntry("echo-stdio", echo), echoArgs},
		{"echo-http", httpEntry("echo-http", "http://"+echoAddr+"/mcp"), echoArgs},
	}
	var cfg strings.Builder
	cfg.WriteString("servers:\n")
	for _, c := range cases {
		cfg.WriteString(c.entry)
	}
	g := gatehousetest.Start(t, gatehousetest.Options{Config: cfg.String()})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			res, err := nodepeer.RunClient(t, ctx, append([]string{"--url", g.Endpoint(c.name), "--token", g.Token}, c.args...)...)
			if err != nil {
				t.Fatalf("TypeScript client: %v\ngateway log:\n%s", err, g.Logs())
			}
			if res.SessionID == "" || res.ProtocolVersion == "" {
				t.Fatalf("no session or revision: %+v", res)
			}
			hasEcho := false
			for _, tool := range res.Tools {
				hasEcho = hasEcho || tool == "echo"
			}
			if !hasEcho {
				t.Fatalf("tools/list %v has no echo", res.Tools)
			}
			tr, err := res.ToolResult()
			if err != nil || tr.IsError || !strings.Contains(tr.Text(), "hello gatehouse") {
				t.Fatalf("tools/call result %s (%v)", res.Call, err)
			}
			if len(res.Read) == 0 || len(res.Prompt) == 0 {
				t.Fatalf("resources/read %s, prompts/get %s", res.Read, res.Prompt)
			}
		})
	}
	t.Run("without a token", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if _, err := nodepeer.RunClient(t, ctx, append([]string{"--url", g.Endpoint("echo-stdio")}, echoArgs...)...); err == nil {
			t.Fatal("the TypeScript client got through without a token")
		}
	})
}
