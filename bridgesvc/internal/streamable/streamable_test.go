package streamable_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/streamable"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// fake is a scripted Streamable HTTP server. tools/call params.name picks the behaviour.
type fake struct {
	t        *testing.T
	mu       sync.Mutex
	requests []*http.Request
	forgot   bool
	deletes  int
	listen   chan string // messages for the standalone stream; nil answers GET with 405
}

const sessionID = "upstream-session-1"

var allowedHeaders = map[string]bool{
	"Content-Type": true, "Accept": true, "Mcp-Session-Id": true, "Mcp-Protocol-Version": true,
	"Last-Event-Id": true, "User-Agent": true, "Accept-Encoding": true, "Content-Length": true,
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r)
	forgot := f.forgot
	f.mu.Unlock()
	for k := range r.Header {
		if !allowedHeaders[k] {
			f.t.Errorf("upstream received header %s", k)
		}
	}
	if forgot && r.Header.Get("Mcp-Session-Id") != "" {
		http.Error(w, "session not found", http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodDelete:
		f.mu.Lock()
		f.deletes++
		f.mu.Unlock()
		return
	case http.MethodGet:
		f.get(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	m, err := jsonrpc.Peek(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if m.Kind != upstream.KindRequest {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	id := string(m.ID)
	result := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[]}}`, id)
	if m.Method == "initialize" {
		w.Header().Set("Mcp-Session-Id", sessionID)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{}}}`, id)
		return
	}
	name := toolName(body)
	switch name {
	case "json":
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprint(w, result)
	case "sse":
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": keep-alive\n\n")
		fmt.Fprint(w, "event: other\ndata: ignored\n\n")
		fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\n")
		fmt.Fprint(w, "data: \"params\":{\"level\":\"info\",\"data\":\"x\"}}\n\n")
		fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"id\":\"srv\",\"method\":\"sampling/createMessage\",\"params\":{}}\n\n")
		fmt.Fprintf(w, "data: %s\n\n", result)
		fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/after\"}\n\n")
	case "hang":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	case "linger":
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: %s\n\n", result)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	case "hang-headers":
		<-r.Context().Done()
	case "drop":
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n")
	case "resume":
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: ev-1\nretry: 1\ndata: \n\n")
		fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n")
	case "big":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"text":"%s"}}`, id, strings.Repeat("b", 4096))
	case "bigsse":
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"text\":\"%s\"}}\n\n", id, strings.Repeat("b", 4096))
	case "forget":
		f.mu.Lock()
		f.forgot = true
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, result)
	case "fail":
		http.Error(w, "database on fire\x1b[31m", http.StatusBadGateway)
	case "unauthorized":
		http.Error(w, "who are you", http.StatusUnauthorized)
	case "redirect":
		http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusTemporaryRedirect)
	case "accepted":
		w.WriteHeader(http.StatusAccepted)
	case "text":
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, result)
	case "wrong-id":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":424242,"result":{}}`)
	default:
		http.Error(w, "unknown tool "+name, http.StatusBadRequest)
	}
}

func (f *fake) get(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Last-Event-Id") == "ev-1" {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: ev-2\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"resumed\":true}}\n\n")
		return
	}
	if f.listen == nil {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	for {
		select {
		case msg := <-f.listen:
			fmt.Fprintf(w, "data: %s\n\n", msg)
			w.(http.Flusher).Flush()
			if msg == `{"jsonrpc":"2.0","method":"notifications/last"}` {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

func toolName(body []byte) string {
	s := string(body)
	i := strings.Index(s, `"name":"`)
	if i < 0 {
		return ""
	}
	s = s[i+len(`"name":"`):]
	return s[:strings.IndexByte(s, '"')]
}

func (f *fake) headers(i int) http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[i].Header
}

func (f *fake) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func newConn(t *testing.T, f *fake) (*streamable.Conn, *streamable.Client) {
	t.Helper()
	f.t = t
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	client := streamable.NewClient(streamable.Options{MaxMessage: 1024, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(client.CloseIdleConnections)
	conn, err := client.Dial(srv.URL+"/mcp", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn, client
}

func send(t *testing.T, ctx context.Context, c *streamable.Conn, raw string) ([]upstream.Message, error) {
	t.Helper()
	m, err := jsonrpc.Peek([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	var got []upstream.Message
	err = c.Send(ctx, m, func(m upstream.Message) error {
		got = append(got, m)
		return nil
	})
	return got, err
}

const initialize = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

func tool(name string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":%q}}`, name)
}

func initialized(t *testing.T, f *fake) *streamable.Conn {
	t.Helper()
	c, _ := newConn(t, f)
	got, err := send(t, context.Background(), c, initialize)
	if err != nil || len(got) != 1 || got[0].ProtocolVersion != "2025-06-18" {
		t.Fatalf("initialize = %v, %v", got, err)
	}
	if _, err := send(t, context.Background(), c, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSessionAndHeaders(t *testing.T) {
	t.Parallel()
	f := &fake{}
	c := initialized(t, f)
	if c.SessionID() != sessionID {
		t.Fatalf("SessionID = %q", c.SessionID())
	}
	h := f.headers(0)
	if h.Get("Mcp-Session-Id") != "" || h.Get("Mcp-Protocol-Version") != "" {
		t.Errorf("initialize carried session headers: %v", h)
	}
	if h.Get("Content-Type") != "application/json" || h.Get("Accept") != "application/json, text/event-stream" {
		t.Errorf("initialize headers = %v", h)
	}
	h = f.headers(1)
	if h.Get("Mcp-Session-Id") != sessionID || h.Get("Mcp-Protocol-Version") != "2025-06-18" {
		t.Errorf("later request headers = %v", h)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.deletes != 1 {
		t.Fatalf("DELETE sent %d times", f.deletes)
	}
	if _, err := send(t, context.Background(), c, tool("json")); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Send after Close = %v, want ErrClosed", err)
	}
}

func TestResponses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		tool    string
		methods []string // what the call emits, in order ("" for the response)
		wantErr error
		wantMsg string
		reason  string // the reason the host may be told, when the error carries one
	}{
		{name: "json", tool: "json", methods: []string{""}},
		{name: "event stream until the response", tool: "sse", methods: []string{"notifications/message", "sampling/createMessage", ""}},
		{name: "stream dropped before the response", tool: "drop", methods: []string{"notifications/message"}, wantErr: upstream.ErrUnavailable, wantMsg: "before the response", reason: "the upstream ended the response stream before the response"},
		{name: "stream kept open after the response", tool: "linger", methods: []string{""}},
		{name: "stream resumed with Last-Event-ID", tool: "resume", methods: []string{"notifications/message", ""}},
		{name: "json over the limit", tool: "big", wantErr: upstream.ErrTooLarge},
		{name: "event over the limit", tool: "bigsse", wantErr: upstream.ErrTooLarge},
		{name: "server error", tool: "fail", wantErr: upstream.ErrUnavailable, wantMsg: "502 Bad Gateway: database on fire [31m", reason: "the upstream answered HTTP 502"},
		{name: "unauthorized", tool: "unauthorized", wantErr: upstream.ErrRejected, wantMsg: "401", reason: "the upstream answered HTTP 401"},
		{name: "redirect is not followed", tool: "redirect", wantErr: upstream.ErrUnavailable, wantMsg: "307", reason: "the upstream answered HTTP 307"},
		{name: "202 to a request", tool: "accepted", wantErr: upstream.ErrProtocol},
		{name: "wrong content type", tool: "text", wantErr: upstream.ErrProtocol, wantMsg: "text/plain", reason: "the upstream answered with an unexpected content type"},
		{name: "response to another id", tool: "wrong-id", wantErr: upstream.ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := initialized(t, &fake{})
			got, err := send(t, context.Background(), c, tool(tc.tool))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("Send = %v, want %v containing %q", err, tc.wantErr, tc.wantMsg)
				}
				var hr interface{ HostReason() string }
				if tc.reason != "" && (!errors.As(err, &hr) || hr.HostReason() != tc.reason) {
					t.Fatalf("Send = %v, want the host reason %q", err, tc.reason)
				}
			} else if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if tc.methods != nil {
				var methods []string
				for _, m := range got {
					methods = append(methods, m.Method)
				}
				if strings.Join(methods, ",") != strings.Join(tc.methods, ",") {
					t.Fatalf("emitted %q, want %q", methods, tc.methods)
				}
			}
		})
	}
}

func TestHangEndsWithTheCallersContext(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"hang", "hang-headers"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := initialized(t, &fake{})
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if _, err := send(t, ctx, c, tool(name)); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Send = %v, want DeadlineExceeded", err)
			}
		})
	}
}

func TestCloseEndsCallsInFlight(t *testing.T) {
	t.Parallel()
	c := initialized(t, &fake{})
	errc := make(chan error, 1)
	go func() { _, err := send(t, context.Background(), c, tool("hang")); errc <- err }()
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Send = %v, want ErrClosed", err)
	}
}

func TestForgottenSession(t *testing.T) {
	t.Parallel()
	f := &fake{}
	c := initialized(t, f)
	if _, err := send(t, context.Background(), c, tool("forget")); err != nil {
		t.Fatal(err)
	}
	_, err := send(t, context.Background(), c, tool("json"))
	if !errors.Is(err, upstream.ErrSessionGone) || !strings.Contains(err.Error(), "initialized again") {
		t.Fatalf("Send = %v, want ErrSessionGone", err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Conn not done after its session was lost")
	}
	if !errors.Is(c.Err(), upstream.ErrSessionGone) {
		t.Fatalf("Err = %v", c.Err())
	}
}

func TestListen(t *testing.T) {
	t.Parallel()
	f := &fake{listen: make(chan string)}
	c := initialized(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan upstream.Message)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Listen(ctx, func(m upstream.Message) error { got <- m; return nil })
	}()
	f.listen <- `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`
	if m := <-got; m.Method != "notifications/tools/list_changed" {
		t.Fatalf("Listen got %s", m.Raw)
	}
	// The stream ends; Listen reconnects and keeps going.
	f.listen <- `{"jsonrpc":"2.0","method":"notifications/last"}`
	<-got
	f.listen <- `{"jsonrpc":"2.0","id":"s1","method":"roots/list"}`
	if m := <-got; m.Method != "roots/list" {
		t.Fatalf("Listen got %s", m.Raw)
	}
	if h := f.headers(f.count() - 1); h.Get("Accept") != "text/event-stream" || h.Get("Mcp-Session-Id") != sessionID {
		t.Fatalf("GET headers = %v", h)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Listen = %v", err)
	}
}

func TestListenWithout405BlocksUntilClose(t *testing.T) {
	t.Parallel()
	c := initialized(t, &fake{})
	errc := make(chan error, 1)
	go func() {
		errc <- c.Listen(context.Background(), func(upstream.Message) error { return nil })
	}()
	select {
	case err := <-errc:
		t.Fatalf("Listen returned early: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	_ = c.Close(context.Background())
	if err := <-errc; !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Listen = %v, want ErrClosed", err)
	}
}

func TestDialRejects(t *testing.T) {
	t.Parallel()
	client := streamable.NewClient(streamable.Options{})
	for _, u := range []string{"ftp://x/", "/relative", "http://user:pass@127.0.0.1/", "::bad"} {
		if _, err := client.Dial(u, nil, nil); !errors.Is(err, upstream.ErrSpawn) {
			t.Errorf("Dial(%q) = %v, want ErrSpawn", u, err)
		}
	}
}
