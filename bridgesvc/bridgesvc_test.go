package bridgesvc_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc"
)

func TestValidation(t *testing.T) {
	t.Parallel()
	b := newBridge(t, bridgesvc.Config{MaxMessageBytes: 4096}, static(helperServer(t, "fake", "server"),
		&registryv1.Server{Name: "odd", Transport: registryv1.Transport_TRANSPORT_UNSPECIFIED}))
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	tests := []struct {
		name string
		req  *bridgev1.SendRequest
		code connect.Code
		msg  string
	}{
		{name: "no session", req: &bridgev1.SendRequest{Server: "fake", Message: []byte(ping)}, code: connect.CodeInvalidArgument, msg: "session_id"},
		{name: "no server", req: &bridgev1.SendRequest{SessionId: "s", Message: []byte(ping)}, code: connect.CodeInvalidArgument, msg: "server"},
		{name: "unknown server", req: &bridgev1.SendRequest{SessionId: "s", Server: "nope", Message: []byte(ping)}, code: connect.CodeNotFound, msg: "unknown server"},
		{name: "unsupported transport", req: &bridgev1.SendRequest{SessionId: "s", Server: "odd", Message: []byte(ping)}, code: connect.CodeUnimplemented, msg: "transport is not supported"},
		{name: "not JSON", req: &bridgev1.SendRequest{SessionId: "s", Server: "fake", Message: []byte(`{"jsonrpc":`)}, code: connect.CodeInvalidArgument, msg: "invalid JSON-RPC message"},
		{name: "too large", req: &bridgev1.SendRequest{SessionId: "s", Server: "fake", Message: []byte(`{"jsonrpc":"2.0","method":"x","params":{"p":"` + strings.Repeat("x", 5000) + `"}}`)}, code: connect.CodeInvalidArgument, msg: "over the 4096-byte limit"},
		{name: "request id mismatch", req: &bridgev1.SendRequest{SessionId: "s", Server: "fake", Message: []byte(ping), RequestId: []byte(`2`)}, code: connect.CodeInvalidArgument, msg: "request_id"},
		{name: "bad protocol version", req: &bridgev1.SendRequest{SessionId: "s", Server: "fake", Message: []byte(ping), ProtocolVersion: "2025\r\nX: y"}, code: connect.CodeInvalidArgument, msg: "protocol_version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := b.client.Send(context.Background(), connect.NewRequest(tc.req))
			if err == nil {
				for stream.Receive() {
				}
				err = stream.Err()
			}
			wantCode(t, err, tc.code, tc.msg)
		})
	}
}

func TestCatalogNotReady(t *testing.T) {
	t.Parallel()
	b := newBridge(t, bridgesvc.Config{}, catalog.New())
	_, err := b.send(t, "s", "fake", `{"jsonrpc":"2.0","method":"x"}`)
	wantCode(t, err, connect.CodeUnavailable, "not loaded")
}

func TestStdioThroughTheService(t *testing.T) {
	t.Parallel()
	b := newBridge(t, bridgesvc.Config{}, static(helperServer(t, "fake", "server")))
	out, err := b.send(t, "s1", "fake", `{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	if err != nil || len(out) != 1 || out[0].GetProtocolVersion() != "2025-06-18" {
		t.Fatalf("initialize = %v, %v", out, err)
	}
	out, err = b.send(t, "s1", "fake", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"progress","_meta":{"progressToken":7}}}`)
	if err != nil || len(out) != 4 || out[3].GetProtocolVersion() != "" {
		t.Fatalf("progress = %v, %v", out, err)
	}
	// Each session gets its own child.
	p1, p2 := b.pidOf(t, "s1", "fake"), b.pidOf(t, "s2", "fake")
	if p1 == p2 {
		t.Fatalf("sessions share child %d", p1)
	}
	b.endSession(t, "s1")
	assertReaped(t, p1)
	if _, err := b.send(t, "s1", "fake", toolCall(1, "echo", "")); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("Send after CloseSession = %v, want NotFound", err)
	}
	// EndSession (the etcd watch's entry point) does the same.
	b.svc.EndSession("s2")
	assertReaped(t, p2)
}

func TestStdioFaults(t *testing.T) {
	t.Parallel()
	cat := static(
		helperServer(t, "fake", "server"),
		helperServer(t, "stubborn", "stubborn"),
		helperServer(t, "banner", "banner"),
		&registryv1.Server{Name: "missing", Transport: registryv1.Transport_TRANSPORT_STDIO, Command: []string{"gatehouse-no-such-server"}},
	)
	b := newBridge(t, bridgesvc.Config{MaxMessageBytes: 1 << 20}, cat)

	t.Run("crash mid-call, then a new child", func(t *testing.T) {
		t.Parallel()
		before := b.pidOf(t, "crash", "fake")
		_, err := b.send(t, "crash", "fake", toolCall(1, "crash", ""))
		wantCode(t, err, connect.CodeUnavailable, "the upstream exited")
		assertReaped(t, before)
		// A new child would not know the session: until the host initializes again, calls
		// are refused so the ingress can end the session (404) and the host start over.
		_, err = b.send(t, "crash", "fake", toolCall(2, "echo", ""))
		wantCode(t, err, connect.CodeNotFound, "start a new session")
		b.reinitialize(t, "crash", "fake")
		after := b.pidOf(t, "crash", "fake")
		if after == before {
			t.Fatal("no new child after the crash")
		}
	})
	t.Run("non-JSON lines are skipped", func(t *testing.T) {
		t.Parallel()
		out, err := b.send(t, "garbage", "banner", toolCall(1, "garbage", ""))
		if err != nil || len(out) != 1 || resultText(t, out[0].GetMessage()) != "after garbage" {
			t.Fatalf("garbage = %v, %v", out, err)
		}
	})
	t.Run("endless line kills the child", func(t *testing.T) {
		t.Parallel()
		pid := b.pidOf(t, "endless", "fake")
		_, err := b.send(t, "endless", "fake", toolCall(1, "endless", ""))
		wantCode(t, err, connect.CodeFailedPrecondition, "the upstream's message exceeds the size limit")
		assertReaped(t, pid)
	})
	t.Run("result over the limit", func(t *testing.T) {
		t.Parallel()
		_, err := b.send(t, "big", "fake", toolCall(1, "big", `{"size":2000000}`))
		wantCode(t, err, connect.CodeFailedPrecondition, "the upstream's message exceeds the size limit")
	})
	t.Run("ignores stdin close and SIGTERM", func(t *testing.T) {
		t.Parallel()
		pid := b.pidOf(t, "stubborn", "stubborn")
		b.svc.EndSession("stubborn")
		assertReaped(t, pid)
	})
	t.Run("command that does not exist", func(t *testing.T) {
		t.Parallel()
		_, err := b.send(t, "missing", "missing", toolCall(1, "echo", ""))
		wantCode(t, err, connect.CodeFailedPrecondition, "the upstream could not be started")
	})
	t.Run("call ends with its context", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := b.exchange(ctx, "block", "fake", toolCall(1, "block", ""), nil)
		if code := connect.CodeOf(err); code != connect.CodeDeadlineExceeded && code != connect.CodeCanceled {
			t.Fatalf("Send = %v, want DeadlineExceeded", err)
		}
		if out, err := b.send(t, "block", "fake", toolCall(2, "echo", `{"text":"ok"}`)); err != nil || len(out) != 1 {
			t.Fatalf("echo after the timeout = %v, %v", out, err)
		}
	})
}

func TestServerRequestRoundTrip(t *testing.T) {
	t.Parallel()
	b := newBridge(t, bridgesvc.Config{}, static(helperServer(t, "fake", "server")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := b.exchange(ctx, "s", "fake", toolCall(1, "ask", ""), func(r *bridgev1.SendResponse) {
		if !strings.Contains(string(r.GetMessage()), "sampling/createMessage") {
			return
		}
		// The host's answer is a Send of its own that ends at once.
		answer := `{"jsonrpc":"2.0","id":"ask-1","result":{"role":"assistant","content":{"type":"text","text":"hi"},"model":"m"}}`
		if out, err := b.exchange(ctx, "s", "fake", answer, nil); err != nil || len(out) != 0 {
			t.Errorf("answer = %v, %v", out, err)
		}
	})
	if err != nil || len(out) != 2 || !strings.Contains(string(out[1].GetMessage()), "host said") {
		t.Fatalf("ask = %v, %v", out, err)
	}
}

func TestMaxChildren(t *testing.T) {
	t.Parallel()
	b := newBridge(t, bridgesvc.Config{MaxChildren: 1}, static(helperServer(t, "fake", "server")))
	b.pidOf(t, "a", "fake")
	_, err := b.send(t, "b", "fake", toolCall(1, "echo", ""))
	wantCode(t, err, connect.CodeResourceExhausted, "too many")
	b.endSession(t, "a")
	b.pidOf(t, "b", "fake")
}

func TestListenOutlivesTheChild(t *testing.T) {
	t.Parallel()
	b := newBridge(t, bridgesvc.Config{}, static(helperServer(t, "fake", "server")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := b.client.Listen(ctx, connect.NewRequest(&bridgev1.ListenRequest{SessionId: "s", Server: "fake"}))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 64)
	ended := make(chan error, 1)
	go func() {
		for stream.Receive() {
			got <- string(stream.Msg().GetMessage())
		}
		ended <- stream.Err()
	}()
	poke := func() {
		t.Helper()
		// Pokes are dropped until the Listen has attached to the child; poke until one lands.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := b.send(t, "s", "fake", `{"jsonrpc":"2.0","method":"notifications/test/poke"}`); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-got:
				if !strings.Contains(m, "poked") {
					t.Fatalf("Listen got %s", m)
				}
				return
			case <-tick.C:
			case <-ctx.Done():
				t.Fatal("nothing on Listen")
			}
		}
	}
	poke()
	if _, err := b.send(t, "s", "fake", toolCall(1, "crash", "")); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("crash = %v", err)
	}
	b.reinitialize(t, "s", "fake") // a new child, and the Listen follows it
	poke()
	b.endSession(t, "s")
	if err := <-ended; err != nil {
		t.Fatalf("Listen ended with %v, want a normal end", err)
	}
}

func TestCloseReapsEveryChild(t *testing.T) {
	t.Parallel()
	b := newBridge(t, bridgesvc.Config{}, static(helperServer(t, "fake", "server"), helperServer(t, "stubborn", "stubborn")))
	pids := []int{b.pidOf(t, "a", "fake"), b.pidOf(t, "b", "fake"), b.pidOf(t, "c", "stubborn")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.svc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		assertReaped(t, pid)
	}
	_, err := b.send(t, "d", "fake", toolCall(1, "echo", ""))
	wantCode(t, err, connect.CodeUnavailable, "shutting down")
}

// fakeHTTP is a Streamable HTTP upstream with scripted faults, chosen by tool name.
type fakeHTTP struct {
	mu     sync.Mutex
	forgot bool
}

func (f *fakeHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	forgot := f.forgot
	f.mu.Unlock()
	if forgot && r.Header.Get("Mcp-Session-Id") != "" {
		http.Error(w, "unknown session", http.StatusNotFound)
		return
	}
	s := string(body)
	switch {
	case r.Method != http.MethodPost:
		w.WriteHeader(http.StatusMethodNotAllowed)
	case strings.Contains(s, `"initialize"`):
		w.Header().Set("Mcp-Session-Id", "up-1")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{}}}`)
	case !strings.Contains(s, `"id"`):
		w.WriteHeader(http.StatusAccepted)
	case strings.Contains(s, `"hang"`):
		<-r.Context().Done()
	case strings.Contains(s, `"drop"`):
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n")
	case strings.Contains(s, `"forget"`):
		f.mu.Lock()
		f.forgot = true
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	case strings.Contains(s, `"big"`):
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"t\":\"%s\"}}\n\n", strings.Repeat("x", 8192))
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{"ok":true}}`)
	}
}

func TestHTTPFaults(t *testing.T) {
	t.Parallel()
	f := &fakeHTTP{}
	up := httptest.NewServer(f)
	t.Cleanup(up.Close)
	b := newBridge(t, bridgesvc.Config{MaxMessageBytes: 4096}, static(&registryv1.Server{Name: "web", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: up.URL}))
	init := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	start := func(t *testing.T, session string) {
		t.Helper()
		out, err := b.send(t, session, "web", init)
		if err != nil || len(out) != 1 || out[0].GetProtocolVersion() != "2025-11-25" {
			t.Fatalf("initialize = %v, %v", out, err)
		}
	}
	t.Run("hang ends with the call's context", func(t *testing.T) {
		start(t, "hang")
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := b.exchange(ctx, "hang", "web", toolCall(1, "hang", ""), nil)
		if code := connect.CodeOf(err); code != connect.CodeDeadlineExceeded && code != connect.CodeCanceled {
			t.Fatalf("Send = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("stream dropped before the response", func(t *testing.T) {
		start(t, "drop")
		out, err := b.send(t, "drop", "web", toolCall(1, "drop", ""))
		wantCode(t, err, connect.CodeUnavailable, "before the response")
		if len(out) != 1 {
			t.Fatalf("messages before the drop = %v", out)
		}
	})
	t.Run("result over the limit", func(t *testing.T) {
		start(t, "big")
		_, err := b.send(t, "big", "web", toolCall(1, "big", ""))
		wantCode(t, err, connect.CodeFailedPrecondition, "the upstream's message exceeds the size limit")
	})
	t.Run("upstream forgets its session", func(t *testing.T) {
		start(t, "forget")
		if _, err := b.send(t, "forget", "web", toolCall(1, "forget", "")); err != nil {
			t.Fatal(err)
		}
		_, err := b.send(t, "forget", "web", toolCall(1, "ok", ""))
		wantCode(t, err, connect.CodeNotFound, "404") // the gateway session ends with it
		f.mu.Lock()
		f.forgot = false
		f.mu.Unlock()
		// The lost upstream is dropped: initialize starts a fresh one.
		start(t, "forget")
	})
}

// TestEnvNames checks the environment names the binary reads (svcmain applies
// GATEHOUSE_BRIDGE_<FLAG> to every flag): the command line wins, a bad value is refused.
func TestEnvNames(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var cfg bridgesvc.Config
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"-max-children", "3"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"GATEHOUSE_BRIDGE_MAX_CHILDREN":  "9",
		"GATEHOUSE_BRIDGE_STDIO_GRACE":   "5s",
		"GATEHOUSE_BRIDGE_REGISTRY_ADDR": "127.0.0.1:7103",
	}
	if err := svcmain.ApplyEnv(fs, "GATEHOUSE_BRIDGE_", func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxChildren != 3 || cfg.StdioGrace != 5*time.Second || cfg.RegistryAddr != "127.0.0.1:7103" || cfg.Listen != bridgesvc.DefaultListen || cfg.MaxMessageBytes != bridgesvc.DefaultMaxMessageBytes {
		t.Fatalf("config = %+v", cfg)
	}
	env["GATEHOUSE_BRIDGE_MAX_MESSAGE_BYTES"] = "lots"
	if err := svcmain.ApplyEnv(fs, "GATEHOUSE_BRIDGE_", func(k string) string { return env[k] }); err == nil {
		t.Fatal("ApplyEnv accepted a bad value")
	}
}
