package tests

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// countedUpstream is an in-process MCP server (the official Go SDK's Streamable HTTP handler)
// that counts the tools/call messages it is sent, before the SDK sees them: what the upstream
// receives, whatever it then does with it. Its tools are echo {text} and hang, which signals
// hanging when it holds a call and answers only when the call is cancelled (or the test ends).
type countedUpstream struct {
	URL     string
	calls   atomic.Int64
	hanging chan struct{}
	release chan struct{} // closed when the test ends
}

// maxUpstreamHang bounds how long the counted upstream's hang holds a call.
const maxUpstreamHang = time.Minute

func startCountedUpstream(t *testing.T) *countedUpstream {
	t.Helper()
	u := &countedUpstream{hanging: make(chan struct{}, 16), release: make(chan struct{})}
	server := mcp.NewServer(&mcp.Implementation{Name: "counted", Version: "v1"}, nil)
	type echoArgs struct {
		Text string `json:"text"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "Returns its text."},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "hang", Description: "Answers only when cancelled."},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			select {
			case u.hanging <- struct{}{}:
			default:
			}
			select {
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			case <-u.release:
				return nil, nil, errors.New("hang: the test ended")
			case <-time.After(maxUpstreamHang):
				return nil, nil, errors.New("hang: never cancelled")
			}
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, "read body", http.StatusBadRequest)
				return
			}
			if isToolsCall(body) {
				u.calls.Add(1)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	// Runs before srv.Close, which waits for the calls in progress.
	t.Cleanup(func() { close(u.release) })
	u.URL = srv.URL + "/mcp"
	return u
}

// isToolsCall reports whether body holds a tools/call request, alone or in a batch.
func isToolsCall(body []byte) bool {
	var one struct {
		Method string `json:"method"`
	}
	if json.Unmarshal(body, &one) == nil {
		return one.Method == "tools/call"
	}
	var batch []struct {
		Method string `json:"method"`
	}
	if json.Unmarshal(body, &batch) == nil {
		for _, m := range batch {
			if m.Method == "tools/call" {
				return true
			}
		}
	}
	return false
}

// auditRecord is the part of an audit record (protojson with proto names) the tests read.
type auditRecord struct {
	CallID    string `json:"call_id"`
	TraceID   string `json:"trace_id"`
	Phase     string `json:"phase"`
	Outcome   string `json:"outcome"`
	Error     string `json:"error"`
	Server    string `json:"server"`
	Method    string `json:"method"`
	Tool      string `json:"tool"`
	Principal string `json:"principal"`
	Tenant    string `json:"tenant"`
	// How many refusals by quota the record stands for (0: one call).
	Count int `json:"count"`
	// The decision: the bundle that made it and the policies that did.
	BundleVersion string   `json:"bundle_version"`
	PolicyIDs     []string `json:"policy_ids"`
	// The arguments' digest, and what the server's audit setting keeps of them.
	ArgumentsDigest string `json:"arguments_digest"`
	Arguments       string `json:"arguments"`
	ArgumentsForm   string `json:"arguments_form"`
}

func auditPath(dataDir string) string { return filepath.Join(dataDir, "audit", auditsvc.FileName) }

// auditRecords reads the audit log of a gateway's data dir, every segment in order: every
// complete line (a line still being written, without its newline, is left for the next read).
func auditRecords(t *testing.T, dataDir string) []auditRecord {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dataDir, "audit", "audit-*.log"))
	slices.Sort(segs) // zero-padded: name order is segment order
	var out []auditRecord
	for _, path := range append([]string{auditPath(dataDir)}, segs...) {
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatalf("read the audit log: %v", err)
		}
		i := bytes.LastIndexByte(b, '\n')
		if i < 0 {
			continue
		}
		for j, line := range bytes.Split(b[:i], []byte("\n")) {
			var l struct {
				Record auditRecord `json:"record"`
			}
			if err := json.Unmarshal(line, &l); err != nil {
				t.Fatalf("%s line %d: %v: %s", path, j+1, err, line)
			}
			out = append(out, l.Record)
		}
	}
	return out
}

// waitAudit waits until the audit log holds a record that match accepts, and returns it.
func waitAudit(t *testing.T, dataDir, what string, match func(auditRecord) bool) auditRecord {
	t.Helper()
	var found auditRecord
	testsync.WaitFor(t, 30*time.Second, "the audit log to hold "+what, func() bool {
		for _, r := range auditRecords(t, dataDir) {
			if match(r) {
				found = r
				return true
			}
		}
		return false
	})
	return found
}

// verifyAudit checks the chain of a stopped gateway's audit log.
func verifyAudit(t *testing.T, dataDir string) {
	t.Helper()
	var opts auditsvc.VerifyOptions
	if k, err := auditsvc.LoadSigningKey(filepath.Join(dataDir, "keys", "audit-signing.pem")); err == nil {
		opts.PublicKey = k.Public().(ed25519.PublicKey)
	}
	resp, err := auditsvc.VerifyDir(context.Background(), filepath.Join(dataDir, "audit"), opts)
	if err != nil {
		t.Fatalf("verify the audit log: %v", err)
	}
	if len(resp.GetProblems()) > 0 {
		t.Fatalf("verify the audit log: %v", resp.GetProblems())
	}
}

// initBody is an initialize request at revision 2025-06-18.
const initBody = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// postRaw is a POST to an MCP endpoint that may run on any goroutine: it returns its failure
// instead of failing the test.
func postRaw(ctx context.Context, client *http.Client, url, token, body string, header map[string]string) (rawResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return rawResponse{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return rawResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return rawResponse{}, err
	}
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// session is the headers of calls on a 2025-06-18 session.
func session(sid string) map[string]string {
	return map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
}

// toolCall is a tools/call request of tool with the arguments' JSON text.
func toolCall(tool, args string) string {
	return `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"` + tool + `","arguments":` + args + `}}`
}
