package bridgesvc_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc"
)

// everythingServer is the Go SDK's conformance server.
func everythingServer(t *testing.T) string {
	return built(t, "everything-server", "github.com/modelcontextprotocol/go-sdk/conformance/everything-server")
}

// startEverythingHTTP runs the conformance server over Streamable HTTP on a free loopback
// port and returns its URL once it accepts connections.
func startEverythingHTTP(t *testing.T, stateful bool) string {
	t.Helper()
	bin := everythingServer(t)
	for attempt := 0; attempt < 3; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		cmd := exec.Command(bin, "-http="+addr, "-stateless="+strconv.FormatBool(!stateful))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		deadline := time.Now().Add(20 * time.Second)
		for {
			select {
			case err := <-exited:
				exited <- err
				t.Logf("everything-server exited (%v); retrying on another port", err)
			default:
				if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
					_ = c.Close()
					return "http://" + addr + "/"
				}
				if time.Now().After(deadline) {
					t.Fatal("everything-server does not accept connections")
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			break
		}
	}
	t.Fatal("cannot start everything-server")
	return ""
}

// decode checks a message with the official SDK's JSON-RPC decoder.
func decode(t *testing.T, raw []byte) jsonrpc.Message {
	t.Helper()
	m, err := jsonrpc.DecodeMessage(raw)
	if err != nil {
		t.Fatalf("the SDK cannot decode %s: %v", raw, err)
	}
	return m
}

const initializeReq = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"sampling":{},"elicitation":{},"roots":{"listChanged":true}},"clientInfo":{"name":"bridgesvc-test","version":"1"}}}`

// drive runs a host's conversation with the server through the bridge: initialize,
// notifications/initialized, tools/list, tools/call (plain, with progress and, when the
// transport can carry it, with a server→host sampling request).
func drive(t *testing.T, b *bridge, session, server string, sampling bool) {
	t.Helper()
	out, err := b.send(t, session, server, initializeReq)
	if err != nil || len(out) != 1 {
		t.Fatalf("initialize = %v, %v", out, err)
	}
	if got := out[0].GetProtocolVersion(); got != "2025-11-25" {
		t.Fatalf("initialize response protocol_version = %q", got)
	}
	if r, ok := decode(t, out[0].GetMessage()).(*jsonrpc.Response); !ok || r.Error != nil {
		t.Fatalf("initialize answered %s", out[0].GetMessage())
	}
	if out, err := b.send(t, session, server, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil || len(out) != 0 {
		t.Fatalf("notifications/initialized = %v, %v", out, err)
	}

	out, err = b.send(t, session, server, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	if err != nil || len(out) == 0 || !strings.Contains(string(out[len(out)-1].GetMessage()), `"test_simple_text"`) {
		t.Fatalf("tools/list = %v, %v", out, err)
	}

	out, err = b.send(t, session, server, toolCall(3, "test_simple_text", ""))
	if err != nil || len(out) == 0 || resultText(t, out[len(out)-1].GetMessage()) != "This is a simple text response for testing." {
		t.Fatalf("tools/call = %v, %v", out, err)
	}

	out, err = b.send(t, session, server, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"test_tool_with_progress","arguments":{},"_meta":{"progressToken":"tok-4"}}}`)
	if err != nil {
		t.Fatalf("progress tool: %v", err)
	}
	progress := 0
	for _, r := range out {
		decode(t, r.GetMessage())
		if strings.Contains(string(r.GetMessage()), `"notifications/progress"`) && strings.Contains(string(r.GetMessage()), `"tok-4"`) {
			progress++
		}
	}
	if progress != 3 || resultText(t, out[len(out)-1].GetMessage()) != "tok-4" {
		t.Fatalf("progress tool streamed %d progress notifications: %v", progress, out)
	}

	if !sampling {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err = b.exchange(ctx, session, server, toolCall(5, "test_sampling", `{"prompt":"hello"}`), func(r *bridgev1.SendResponse) {
		req, ok := decode(t, r.GetMessage()).(*jsonrpc.Request)
		if !ok || req.Method != "sampling/createMessage" {
			return
		}
		id := string(r.GetMessage()[strings.Index(string(r.GetMessage()), `"id":`)+5:])
		id = id[:strings.IndexAny(id, ",}")]
		answer := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"role":"assistant","content":{"type":"text","text":"bridged"},"model":"test-model"}}`, id)
		if out, err := b.exchange(ctx, session, server, answer, nil); err != nil || len(out) != 0 {
			t.Errorf("sampling answer = %v, %v", out, err)
		}
	})
	if err != nil || len(out) < 2 || resultText(t, out[len(out)-1].GetMessage()) != "LLM response: bridged" {
		t.Fatalf("sampling = %v, %v", out, err)
	}
}

func TestEverythingServerStdio(t *testing.T) {
	t.Parallel()
	marker := "GATEHOUSE_TEST_MARK=" + strconv.FormatInt(time.Now().UnixNano(), 36)
	name, value, _ := strings.Cut(marker, "=")
	srv := &registryv1.Server{Name: "everything", Transport: registryv1.Transport_TRANSPORT_STDIO, Command: []string{everythingServer(t)}, Env: map[string]string{name: value}}
	b := newBridge(t, bridgesvc.Config{}, static(srv))

	drive(t, b, "session-1", "everything", true)
	pids := childrenWith(t, marker)
	if len(pids) != 1 {
		t.Fatalf("children running the server: %v, want one", pids)
	}
	b.svc.EndSession("session-1")
	assertReaped(t, pids[0])
	if left := childrenWith(t, marker); len(left) != 0 {
		t.Fatalf("children left after EndSession: %v", left)
	}

	// Two sessions, two children; Close reaps both.
	drive(t, b, "session-2", "everything", false)
	drive(t, b, "session-3", "everything", false)
	pids = childrenWith(t, marker)
	if len(pids) != 2 {
		t.Fatalf("children: %v, want two", pids)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.svc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		assertReaped(t, pid)
	}
}

func TestEverythingServerHTTP(t *testing.T) {
	t.Parallel()
	for _, stateful := range []bool{false, true} {
		t.Run(map[bool]string{false: "stateless", true: "stateful"}[stateful], func(t *testing.T) {
			t.Parallel()
			url := startEverythingHTTP(t, stateful)
			b := newBridge(t, bridgesvc.Config{}, static(&registryv1.Server{Name: "everything", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: url}))
			drive(t, b, "s1", "everything", stateful)
			b.endSession(t, "s1")
			_, err := b.send(t, "s1", "everything", toolCall(9, "test_simple_text", ""))
			wantCode(t, err, connect.CodeNotFound, "session ended")
		})
	}
}

// listenFor opens a Listen stream and triggers list changes until a
// notifications/tools/list_changed arrives on it.
func listenFor(t *testing.T, b *bridge, session, server string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := b.client.Listen(ctx, connect.NewRequest(&bridgev1.ListenRequest{SessionId: session, Server: server, ProtocolVersion: "2025-11-25"}))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 64)
	go func() {
		for stream.Receive() {
			got <- string(stream.Msg().GetMessage())
		}
		close(got)
	}()
	for id := 100; ; id++ {
		if _, err := b.send(t, session, server, toolCall(id, "test_trigger_tool_change", "")); err != nil {
			t.Fatal(err)
		}
		select {
		case m, ok := <-got:
			if !ok {
				t.Fatalf("Listen ended: %v", stream.Err())
			}
			if strings.Contains(m, "notifications/tools/list_changed") {
				decode(t, []byte(m))
				return
			}
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no list_changed notification on Listen")
		}
	}
}

func TestEverythingServerListen(t *testing.T) {
	t.Parallel()
	t.Run("stdio", func(t *testing.T) {
		t.Parallel()
		b := newBridge(t, bridgesvc.Config{}, static(&registryv1.Server{Name: "everything", Transport: registryv1.Transport_TRANSPORT_STDIO, Command: []string{everythingServer(t)}}))
		drive(t, b, "s", "everything", false)
		listenFor(t, b, "s", "everything")
	})
	t.Run("http stateful", func(t *testing.T) {
		t.Parallel()
		url := startEverythingHTTP(t, true)
		b := newBridge(t, bridgesvc.Config{}, static(&registryv1.Server{Name: "everything", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: url}))
		drive(t, b, "s", "everything", false)
		listenFor(t, b, "s", "everything")
	})
	t.Run("http stateless answers GET with 405: Listen waits for the session's end", func(t *testing.T) {
		t.Parallel()
		url := startEverythingHTTP(t, false)
		b := newBridge(t, bridgesvc.Config{}, static(&registryv1.Server{Name: "everything", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: url}))
		drive(t, b, "s", "everything", false)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stream, err := b.client.Listen(ctx, connect.NewRequest(&bridgev1.ListenRequest{SessionId: "s", Server: "everything"}))
		if err != nil {
			t.Fatal(err)
		}
		b.endSession(t, "s")
		for stream.Receive() {
			t.Errorf("Listen got %s", stream.Msg().GetMessage())
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("Listen = %v, want a normal end", err)
		}
	})
}

// TestSDKServerJSONResponses drives an in-process Go SDK server that answers with
// application/json instead of event streams.
func TestSDKServerJSONResponses(t *testing.T) {
	t.Parallel()
	server := mcp.NewServer(&mcp.Implementation{Name: "json-server", Version: "1"}, nil)
	type args struct {
		Text string `json:"text"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "echoes"}, func(_ context.Context, _ *mcp.CallToolRequest, in args) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	var mu sync.Mutex
	var seen []http.Header
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{JSONResponse: true})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)
	b := newBridge(t, bridgesvc.Config{}, static(&registryv1.Server{Name: "json", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: up.URL}))

	out, err := b.send(t, "s", "json", initializeReq)
	if err != nil || len(out) != 1 || out[0].GetProtocolVersion() != "2025-11-25" {
		t.Fatalf("initialize = %v, %v", out, err)
	}
	if _, err := b.send(t, "s", "json", `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil {
		t.Fatal(err)
	}
	out, err = b.send(t, "s", "json", toolCall(2, "echo", `{"text":"over json"}`))
	if err != nil || len(out) != 1 || resultText(t, out[0].GetMessage()) != "over json" {
		t.Fatalf("tools/call = %v, %v", out, err)
	}
	b.endSession(t, "s")

	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 4 {
		t.Fatalf("upstream saw %d requests", len(seen))
	}
	sid := seen[1].Get("Mcp-Session-Id")
	if sid == "" || seen[2].Get("Mcp-Session-Id") != sid || seen[2].Get("Mcp-Protocol-Version") != "2025-11-25" {
		t.Fatalf("session headers: %v", seen)
	}
	if last := seen[len(seen)-1]; last.Get("Mcp-Session-Id") != sid {
		t.Fatalf("DELETE carried %v", last)
	}
	for _, h := range seen {
		for k := range h {
			switch k {
			case "Content-Type", "Accept", "Mcp-Session-Id", "Mcp-Protocol-Version", "User-Agent", "Accept-Encoding", "Content-Length",
				"Traceparent": // the bridge's own span, the upstream's parent
			default:
				t.Errorf("upstream received header %s", k)
			}
		}
	}
}
