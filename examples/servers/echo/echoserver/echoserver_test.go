package echoserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// binary is the echo server built once by TestMain for the tests that run it
// as a real process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "echo-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "echo")
	build := exec.Command("go", "build", "-o", binary, "..")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build echo:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// connectInMemory returns a client session wired to a fresh server in memory.
func connectInMemory(t *testing.T) *mcp.ClientSession {
	t.Helper()
	ctx := t.Context()
	serverT, clientT := mcp.NewInMemoryTransports()
	ss, err := newServer(slog.New(slog.DiscardHandler), options{}).Connect(ctx, serverT, nil)
	if err != nil {
		t.Fatalf("server connect: %v", err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := newClient().Connect(ctx, clientT, nil)
	if err != nil {
		t.Fatalf("client connect: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func newClient() *mcp.Client {
	return mcp.NewClient(&mcp.Implementation{Name: "echo-test", Version: "v0"}, nil)
}

func TestCallTool(t *testing.T) {
	t.Parallel()
	cs := connectInMemory(t)
	big := strings.Repeat("x", maxTextBytes+1)
	tests := []struct {
		name       string
		tool       string
		args       map[string]any
		wantText   string
		wantSum    *float64
		wantErrSub string // tool error (IsError) containing this
	}{
		{name: "echo", tool: "echo", args: map[string]any{"text": "hello, world"}, wantText: "hello, world"},
		{name: "echo empty", tool: "echo", args: map[string]any{"text": ""}, wantText: ""},
		{name: "echo unicode", tool: "echo", args: map[string]any{"text": "héllo ✓ \u0000 end"}, wantText: "héllo ✓ \u0000 end"},
		{name: "echo too long", tool: "echo", args: map[string]any{"text": big}, wantErrSub: "more than"},
		{name: "echo missing text", tool: "echo", args: map[string]any{}, wantErrSub: "text"},
		{name: "echo wrong type", tool: "echo", args: map[string]any{"text": 42}, wantErrSub: "text"},
		{name: "add", tool: "add", args: map[string]any{"a": 2, "b": 40.5}, wantSum: new(42.5)},
		{name: "add negative", tool: "add", args: map[string]any{"a": -1, "b": 1}, wantSum: new(0.0)},
		{name: "add overflow", tool: "add", args: map[string]any{"a": 1.7e308, "b": 1.7e308}, wantErrSub: "finite"},
		{name: "add missing b", tool: "add", args: map[string]any{"a": 1}, wantErrSub: "b"},
		{name: "hang answers after its delay", tool: "hang", args: map[string]any{"seconds": 0.001}, wantText: "hung for 1ms"},
		{name: "hang negative delay", tool: "hang", args: map[string]any{"seconds": -1}, wantErrSub: "at most 3600"},
		{name: "hang delay over an hour", tool: "hang", args: map[string]any{"seconds": 3601}, wantErrSub: "at most 3600"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: tc.tool, Arguments: tc.args})
			if err != nil {
				// Argument validation may surface as a protocol error; accept it
				// when an error was expected.
				if tc.wantErrSub != "" && strings.Contains(err.Error(), tc.wantErrSub) {
					return
				}
				t.Fatalf("CallTool: %v", err)
			}
			text := resultText(t, res)
			if tc.wantErrSub != "" {
				if !res.IsError || !strings.Contains(text, tc.wantErrSub) {
					t.Fatalf("got IsError=%v %q, want a tool error containing %q", res.IsError, text, tc.wantErrSub)
				}
				return
			}
			if res.IsError {
				t.Fatalf("unexpected tool error: %s", text)
			}
			if tc.wantSum != nil {
				var out AddResult
				raw, err := json.Marshal(res.StructuredContent)
				if err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(raw, &out); err != nil {
					t.Fatalf("structured content %s: %v", raw, err)
				}
				if out.Sum != *tc.wantSum {
					t.Fatalf("sum = %v, want %v", out.Sum, *tc.wantSum)
				}
				return
			}
			if text != tc.wantText {
				t.Fatalf("text = %q, want %q", text, tc.wantText)
			}
		})
	}
}

func TestListTools(t *testing.T) {
	t.Parallel()
	cs := connectInMemory(t)
	res, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	if got := strings.Join(names, ","); got != "add,echo,hang" {
		t.Fatalf("tools = %s, want add,echo,hang", got)
	}
}

// TestHangEndsWhenCancelled: a hang call whose client gives up is cancelled at the server
// (the SDK client sends notifications/cancelled), which logs it, and the session goes on.
func TestHangEndsWhenCancelled(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	serverT, clientT := mcp.NewInMemoryTransports()
	ss, err := newServer(slog.New(slog.NewTextHandler(&logs, nil)), options{}).Connect(t.Context(), serverT, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := newClient().Connect(t.Context(), clientT, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "hang", Arguments: map[string]any{}}); err == nil {
		t.Fatal("hang answered before it was cancelled")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "hang cancelled") {
		if time.Now().After(deadline) {
			t.Fatalf("the server never saw the cancellation; its log: %s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "still here"}})
	if err != nil || resultText(t, res) != "still here" {
		t.Fatalf("echo after the cancellation = %v, %v", res, err)
	}
}

func TestResources(t *testing.T) {
	t.Parallel()
	cs := connectInMemory(t)
	list, err := cs.ListResources(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Resources) != 1 || list.Resources[0].URI != readmeURI {
		t.Fatalf("resources = %+v, want just %s", list.Resources, readmeURI)
	}
	tests := []struct {
		name    string
		uri     string
		wantErr bool
	}{
		{name: "readme", uri: readmeURI},
		{name: "unknown", uri: "echo://nothing", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := cs.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: tc.uri})
			if tc.wantErr {
				if err == nil {
					t.Fatalf("read %s: no error", tc.uri)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Contents) != 1 || res.Contents[0].Text != readme || res.Contents[0].MIMEType != "text/plain" {
				t.Fatalf("contents = %+v", res.Contents)
			}
		})
	}
}

func TestPrompt(t *testing.T) {
	t.Parallel()
	cs := connectInMemory(t)
	tests := []struct {
		name     string
		args     map[string]string
		wantText string
		wantErr  bool
	}{
		{name: "greet", args: map[string]string{"name": "Ada"}, wantText: "Please greet Ada warmly, in one sentence."},
		{name: "missing name", args: map[string]string{}, wantErr: true},
		{name: "name too long", args: map[string]string{"name": strings.Repeat("n", maxTextBytes+1)}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := cs.GetPrompt(t.Context(), &mcp.GetPromptParams{Name: "greet", Arguments: tc.args})
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, got %+v", res)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Messages) != 1 {
				t.Fatalf("messages = %+v", res.Messages)
			}
			text, ok := res.Messages[0].Content.(*mcp.TextContent)
			if !ok || text.Text != tc.wantText || res.Messages[0].Role != "user" {
				t.Fatalf("message = %+v, want user text %q", res.Messages[0], tc.wantText)
			}
		})
	}
}

func TestCheckBind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr        string
		allowRemote bool
		wantErr     bool
	}{
		{addr: "127.0.0.1:0"},
		{addr: "127.0.0.2:8080"},
		{addr: "[::1]:8080"},
		{addr: "localhost:8080"},
		{addr: "0.0.0.0:8080", wantErr: true},
		{addr: ":8080", wantErr: true},
		{addr: "[::]:8080", wantErr: true},
		{addr: "192.0.2.1:8080", wantErr: true},
		{addr: "example.com:8080", wantErr: true},
		{addr: "no-port", wantErr: true},
		{addr: "0.0.0.0:8080", allowRemote: true},
		{addr: ":8080", allowRemote: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s allow=%v", tc.addr, tc.allowRemote), func(t *testing.T) {
			err := checkBind(tc.addr, tc.allowRemote)
			if (err != nil) != tc.wantErr {
				t.Fatalf("checkBind(%q, %v) = %v, wantErr %v", tc.addr, tc.allowRemote, err, tc.wantErr)
			}
		})
	}
}

func TestRunRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantSub string
	}{
		{name: "non-loopback", args: []string{"-http", "0.0.0.0:0"}, wantSub: "not a loopback"},
		{name: "extra argument", args: []string{"stray"}, wantSub: "unexpected arguments"},
		{name: "bad log level", args: []string{"-log-level", "loud"}, wantSub: "log level"},
		{name: "whoami-env without whoami", args: []string{"-whoami-env", "HOME"}, wantSub: "needs -whoami"},
		{name: "negative extra tools", args: []string{"-extra-tools", "-1"}, wantSub: "want 0 to"},
		{name: "too many extra tools", args: []string{"-extra-tools", "10001"}, wantSub: "want 0 to"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(t.Context(), tc.args, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.wantSub) {
				t.Fatalf("run(%q) = %v, want an error containing %q", tc.args, err, tc.wantSub)
			}
		})
	}
}

// exercise makes the calls every transport test expects to succeed.
func exercise(t *testing.T, cs *mcp.ClientSession) {
	t.Helper()
	ctx := t.Context()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "over the wire"}})
	if err != nil {
		t.Fatalf("echo: %v", err)
	}
	if got := resultText(t, res); res.IsError || got != "over the wire" {
		t.Fatalf("echo = %q (IsError=%v)", got, res.IsError)
	}
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 1, "b": 2}})
	if err != nil {
		t.Fatalf("add: %v", err)
	}
	if got := resultText(t, res); res.IsError || got != `{"sum":3}` {
		t.Fatalf("add = %q (IsError=%v)", got, res.IsError)
	}
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: readmeURI}); err != nil {
		t.Fatalf("read readme: %v", err)
	}
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet", Arguments: map[string]string{"name": "Ada"}}); err != nil {
		t.Fatalf("greet: %v", err)
	}
}

func TestStdio(t *testing.T) {
	t.Parallel()
	var stderr syncBuffer
	cmd := exec.Command(binary)
	cmd.Stderr = &stderr
	cs, err := newClient().Connect(t.Context(), &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect: %v (stderr: %s)", err, stderr.String())
	}
	exercise(t, cs)
	if err := cs.Close(); err != nil {
		t.Fatalf("close: %v (stderr: %s)", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "serving MCP over stdio") {
		t.Fatalf("stderr does not carry the logs: %q", stderr.String())
	}
}

func TestStreamableHTTP(t *testing.T) {
	t.Parallel()
	url, stdout := startHTTP(t)
	for _, version := range []string{"", "2025-11-25", "2025-03-26"} {
		t.Run("protocol "+version, func(t *testing.T) {
			transport := &mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1}
			cs, err := newClient().Connect(t.Context(), transport, &mcp.ClientSessionOptions{ProtocolVersion: version})
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			t.Cleanup(func() { cs.Close() })
			exercise(t, cs)
		})
	}
	health, err := http.Get(strings.TrimSuffix(url, "/mcp") + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	health.Body.Close()
	if health.StatusCode != http.StatusOK {
		t.Fatalf("healthz = %d", health.StatusCode)
	}
	if stdout.Len() != 0 {
		t.Fatalf("stdout is not empty in HTTP mode: %q", stdout.String())
	}
}

var urlPattern = regexp.MustCompile(`url=(http://\S+/mcp)`)

// startHTTP runs the binary on an ephemeral loopback port and returns the MCP
// URL it logged, plus its stdout; args are more flags. The process is stopped by t.Cleanup.
func startHTTP(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	var stdout syncBuffer
	cmd := exec.Command(binary, append([]string{"-http", "127.0.0.1:0"}, args...)...)
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})

	urls := make(chan string, 1)
	go func() {
		defer close(done)
		defer cmd.Wait()
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			if m := urlPattern.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pipe)
	}()
	select {
	case url := <-urls:
		return url, &stdout
	case <-done:
		t.Fatal("echo exited before serving")
	case <-time.After(30 * time.Second):
		t.Fatal("echo did not report its URL within 30s")
	}
	return "", nil
}

func resultText(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	var b strings.Builder
	for _, c := range res.Content {
		text, ok := c.(*mcp.TextContent)
		if !ok {
			t.Fatalf("content %T, want text", c)
		}
		b.WriteString(text.Text)
	}
	return b.String()
}

// syncBuffer is a bytes.Buffer safe for a process writer and a test reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}
