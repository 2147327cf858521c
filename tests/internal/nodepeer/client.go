package nodepeer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Output limits for one client run: the JSON line may carry whole tool results and resources.
const (
	maxClientStdout = 16 << 20
	maxClientStderr = 64 << 10
)

// ClientResult is the JSON line client.mjs prints after a successful exchange.
type ClientResult struct {
	// ProtocolVersion is the revision the server (or gateway) negotiated.
	ProtocolVersion string `json:"protocolVersion"`
	// SessionID is the Mcp-Session-Id the server assigned; empty for a stateless server. The
	// session was ended with DELETE before the client exited.
	SessionID string `json:"sessionId"`
	// Tools are the tool names from tools/list, in the order listed.
	Tools []string `json:"tools"`
	// ToolPages is how many tools/list pages the client read (it follows nextCursor).
	ToolPages int `json:"toolPages"`
	// Resources are the URIs from resources/list; nil unless --read was given.
	Resources []string `json:"resources"`
	// Call, Read and Prompt are the raw results of tools/call (--call), resources/read
	// (--read) and prompts/get (--prompt); JSON null when not requested.
	Call   json.RawMessage `json:"call"`
	Read   json.RawMessage `json:"read"`
	Prompt json.RawMessage `json:"prompt"`
	// AuthServers are the authorization servers the SDK found in the gateway's protected
	// resource metadata; set when the client got its token itself (--client-id).
	AuthServers []string `json:"authServers"`
}

// ToolResult is the part of a tools/call result the tests assert on.
type ToolResult struct {
	Content           []Content       `json:"content"`
	StructuredContent json.RawMessage `json:"structuredContent,omitempty"`
	IsError           bool            `json:"isError,omitempty"`
}

// Content is one content block of a tool result or prompt message.
type Content struct {
	Type     string          `json:"type"`
	Text     string          `json:"text,omitempty"`
	MimeType string          `json:"mimeType,omitempty"`
	Data     string          `json:"data,omitempty"`
	URI      string          `json:"uri,omitempty"`
	Resource json.RawMessage `json:"resource,omitempty"`
}

// ToolResult decodes Call.
func (r ClientResult) ToolResult() (ToolResult, error) {
	var tr ToolResult
	if len(r.Call) == 0 || string(r.Call) == "null" {
		return tr, errors.New("no tools/call result: run the client with --call")
	}
	if err := json.Unmarshal(r.Call, &tr); err != nil {
		return tr, fmt.Errorf("decode tools/call result: %w", err)
	}
	return tr, nil
}

// Text joins the text content blocks of a tool result with newlines.
func (tr ToolResult) Text() string {
	var parts []string
	for _, c := range tr.Content {
		if c.Type == "text" {
			parts = append(parts, c.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// RunClient runs tests/node/client.mjs with Node 22 and returns its decoded JSON line. args are
// client.mjs flags: --url URL [--token TOKEN] [--call NAME [--args JSON]] [--read URI]
// [--prompt NAME [--prompt-args JSON]] [--timeout-ms N].
//
// A non-zero exit (a refused connection, an HTTP error, a JSON-RPC error such as a policy
// denial) is returned as an error carrying the client's stderr; the test decides whether that
// was expected. The run is bounded by ctx.
func RunClient(t testing.TB, ctx context.Context, args ...string) (ClientResult, error) {
	t.Helper()
	return RunClientWith(t, ctx, Node22(t), args...)
}

// RunClientWith is RunClient with another Node binary, e.g. the system `node` (v20), to prove
// the client works on both.
func RunClientWith(t testing.TB, ctx context.Context, node string, args ...string) (ClientResult, error) {
	t.Helper()
	dir := PeerDir(t)
	cmd := exec.CommandContext(ctx, node, append([]string{filepath.Join(dir, "client.mjs")}, args...)...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	stdout := NewCappedBuffer(maxClientStdout)
	stderr := NewCappedBuffer(maxClientStderr)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ClientResult{}, fmt.Errorf("client.mjs: %w (stderr: %s)", ctxErr, strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		return ClientResult{}, fmt.Errorf("client.mjs: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if stdout.Overflowed() {
		return ClientResult{}, fmt.Errorf("client.mjs: output larger than %d bytes", maxClientStdout)
	}
	return decodeClientLine(stdout.Bytes())
}

// decodeClientLine decodes the single JSON line client.mjs prints.
func decodeClientLine(out []byte) (ClientResult, error) {
	var res ClientResult
	line := bytes.TrimRight(out, "\n")
	if len(line) == 0 {
		return res, errors.New("client.mjs: no output")
	}
	if bytes.Contains(line, []byte("\n")) {
		return res, fmt.Errorf("client.mjs: want one JSON line, got %d lines", bytes.Count(line, []byte("\n"))+1)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		return res, fmt.Errorf("client.mjs: decode output: %w", err)
	}
	return res, nil
}
