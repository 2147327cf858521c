package tests

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/nodepeer"
)

// want is what a tools/call, resources/read and prompts/get must answer.
type want struct{ call, read, prompt string }

// TestTypeScriptSDKClient drives the official TypeScript SDK client through the gateway, with
// the dev token, to stdio servers (server-everything and the example echo server) and to
// Streamable HTTP servers (server-everything and the example echo server):
// initialize, tools/list, tools/call, resources/read, prompts/get, then DELETE.
func TestTypeScriptSDKClient(t *testing.T) {
	nodepeer.Node22(t)
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	echoAddr := gatehousetest.StartServer(t, func(addr string) []string { return []string{echo, "-http", addr} })
	evStdio := nodepeer.StartEverything(t, nodepeer.EverythingStdio)
	evHTTP := nodepeer.StartEverything(t, nodepeer.EverythingStreamableHTTP)

	everythingArgs := []string{"--call", "echo", "--args", `{"message":"hello gatehouse"}`,
		"--read", "demo://resource/static/document/architecture.md",
		"--prompt", "args-prompt", "--prompt-args", `{"city":"Oslo"}`}
	echoArgs := []string{"--call", "echo", "--args", `{"text":"hello gatehouse"}`,
		"--read", "echo://readme", "--prompt", "greet", "--prompt-args", `{"name":"Ada"}`}
	// What each server must answer, exactly.
	everythingWant := want{call: "Echo: hello gatehouse", read: nodepeer.EverythingDoc(t, "architecture.md"), prompt: "What's weather in Oslo?"}
	echoWant := want{call: "hello gatehouse", read: echoReadme, prompt: "Please greet Ada warmly, in one sentence."}
	cases := []struct {
		name  string
		entry string
		args  []string
		want  want
	}{
		{"everything-stdio", stdioEntry("everything-stdio", evStdio.Argv...), everythingArgs, everythingWant},
		{"everything-http", httpEntry("everything-http", evHTTP.URL), everythingArgs, everythingWant},
		{"echo-stdio", stdioEntry("echo-stdio", echo), echoArgs, echoWant},
		{"echo-http", httpEntry("echo-http", "http://"+echoAddr+"/mcp"), echoArgs, echoWant},
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
			if err != nil || tr.IsError || len(tr.Content) != 1 || tr.Text() != c.want.call {
				t.Fatalf("tools/call result %s (%v), want one text block %q", res.Call, err, c.want.call)
			}
			var read struct {
				Contents []struct{ URI, Text string } `json:"contents"`
			}
			if err := json.Unmarshal(res.Read, &read); err != nil || len(read.Contents) != 1 || read.Contents[0].Text != c.want.read {
				t.Fatalf("resources/read %.300s (%v), want one content of text %.80q", res.Read, err, c.want.read)
			}
			var prompt struct {
				Messages []struct{ Content nodepeer.Content } `json:"messages"`
			}
			if err := json.Unmarshal(res.Prompt, &prompt); err != nil || len(prompt.Messages) != 1 || prompt.Messages[0].Content.Text != c.want.prompt {
				t.Fatalf("prompts/get %s (%v), want one message of text %q", res.Prompt, err, c.want.prompt)
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
