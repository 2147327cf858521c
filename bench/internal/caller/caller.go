// Package caller opens the client sessions the load generator drives: raw
// HTTP POSTs of a tools/call body (floor 0), and the official Go MCP SDK
// client over Streamable HTTP (every other path). Each session has its own
// connection pool, as separate hosts would, and every request carries the
// same bearer token whatever the path, so the client does the same work
// everywhere.
package caller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Options are shared by both kinds of session.
type Options struct {
	// Token is sent as "Authorization: Bearer <Token>" on every request.
	Token string
	// ArgsSize is the size in bytes of the echo tool's JSON arguments object.
	ArgsSize int
}

// emptyArgs is the JSON of the echo arguments with an empty text.
const emptyArgs = `{"text":""}`

// MaxArgsSize bounds the arguments a workload may ask for (the echo server
// accepts up to 1 MiB of text).
const MaxArgsSize = 1 << 20

// EchoText returns a text whose echo arguments, {"text":"..."}, are exactly
// size bytes of JSON. The text is printable ASCII that JSON does not escape.
func EchoText(size int) (string, error) {
	if size < len(emptyArgs) || size > MaxArgsSize {
		return "", fmt.Errorf("arguments size %d: want %d to %d bytes", size, len(emptyArgs), MaxArgsSize)
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var b strings.Builder
	n := size - len(emptyArgs)
	b.Grow(n)
	for i := range n {
		b.WriteByte(alphabet[i%len(alphabet)])
	}
	return b.String(), nil
}

// ToolsCallBody is the JSON-RPC request an MCP client sends to call the echo
// tool with text: what floor 0 posts.
func ToolsCallBody(id int, text string) ([]byte, error) {
	return json.Marshal(map[string]any{
		"jsonrpc": "2.0",
		"id":      id,
		"method":  "tools/call",
		"params":  map[string]any{"name": "echo", "arguments": map[string]string{"text": text}},
	})
}

// newTransport returns a per-session connection pool.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 8
	t.DisableCompression = true
	return t
}

// bearer adds the Authorization header to every request.
type bearer struct {
	base  http.RoundTripper
	value string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", b.value)
	return b.base.RoundTrip(r)
}

// RawHTTP returns a Dialer whose sessions POST the bytes of a tools/call of
// echo to url and expect them back (floor 0).
func RawHTTP(url string, opts Options) (loadgen.Dialer, error) {
	text, err := EchoText(opts.ArgsSize)
	if err != nil {
		return nil, err
	}
	body, err := ToolsCallBody(1, text)
	if err != nil {
		return nil, err
	}
	return func(context.Context) (loadgen.Session, error) {
		transport := newTransport()
		return &rawSession{
			url:       url,
			body:      body,
			transport: transport,
			client:    &http.Client{Transport: bearer{base: transport, value: "Bearer " + opts.Token}},
		}, nil
	}, nil
}

type rawSession struct {
	url       string
	body      []byte
	transport *http.Transport
	client    *http.Client
}

func (s *rawSession) Call(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(s.body))
	if err != nil {
		return err
	}
	// The headers a Streamable HTTP client sends on a POST.
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	req.Header.Set("Mcp-Session-Id", "floor0")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", s.url, resp.Status)
	}
	if n != int64(len(s.body)) {
		return fmt.Errorf("echoed %d bytes, sent %d", n, len(s.body))
	}
	return nil
}

func (s *rawSession) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// MCP returns a Dialer whose sessions connect the Go SDK client to the
// Streamable HTTP endpoint, initialize with protocol (the SDK's default when
// empty), and call the echo tool.
func MCP(endpoint, protocol string, opts Options) (loadgen.Dialer, error) {
	text, err := EchoText(opts.ArgsSize)
	if err != nil {
		return nil, err
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "gatebench", Version: "v0.1.0"}, nil)
	return func(ctx context.Context) (loadgen.Session, error) {
		transport := newTransport()
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
			Endpoint:   endpoint,
			HTTPClient: &http.Client{Transport: bearer{base: transport, value: "Bearer " + opts.Token}},
		}, &mcp.ClientSessionOptions{ProtocolVersion: protocol})
		if err != nil {
			transport.CloseIdleConnections()
			return nil, fmt.Errorf("connect %s: %w", endpoint, err)
		}
		return &mcpSession{cs: cs, transport: transport, text: text}, nil
	}, nil
}

type mcpSession struct {
	cs        *mcp.ClientSession
	transport *http.Transport
	text      string
}

func (s *mcpSession) Call(ctx context.Context) error {
	res, err := s.cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": s.text}})
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("echo returned a tool error: %s", firstText(res))
	}
	if got := firstText(res); got != s.text {
		return fmt.Errorf("echo returned %d bytes, want %d", len(got), len(s.text))
	}
	return nil
}

// closeTimeout bounds a session's DELETE on close, so that a misbehaving
// path cannot stall the benchmark between runs.
const closeTimeout = 5 * time.Second

func (s *mcpSession) Close() error {
	done := make(chan error, 1)
	go func() { done <- s.cs.Close() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(closeTimeout):
		err = errors.New("session close timed out")
	}
	s.transport.CloseIdleConnections()
	return err
}

func firstText(res *mcp.CallToolResult) string {
	if len(res.Content) == 0 {
		return ""
	}
	if t, ok := res.Content[0].(*mcp.TextContent); ok {
		return t.Text
	}
	return ""
}
