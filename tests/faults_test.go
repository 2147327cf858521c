package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestHungUpstream: a server with `timeout: 2s` whose tool never answers: the host gets
// -32005 with the timeout's message and a trace id, the audit log closes the call with
// OUTCOME_TIMED_OUT, and the next call on the same session works; over stdio and over HTTP.
// The hang asks for 15s, so that a gateway that ignores the server's timeout gets an answer
// (and the test fails) well within the client's bound.
func TestHungUpstream(t *testing.T) {
	t.Parallel()
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	addr := gatehousetest.StartServer(t, func(addr string) []string { return []string{echo, "-http", addr} })
	const timeout = "    timeout: 2s\n"
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("echo-stdio", echo) + timeout + httpEntry("echo-http", "http://"+addr+"/mcp") + timeout,
	})
	for _, server := range []string{"echo-stdio", "echo-http"} {
		t.Run(server, func(t *testing.T) {
			t.Parallel()
			c := rawClient{t: t, url: g.Endpoint(server), token: g.Token}
			sess := session(c.initialize("2025-06-18"))
			r := c.post(toolCall("hang", `{"seconds":15}`), sess)
			code, msg, ok := r.rpcError()
			if r.status != http.StatusOK || !ok || code != -32005 || !strings.Contains(msg, "did not answer in time") {
				t.Fatalf("hang: %d %s, want a JSON-RPC error -32005 saying the upstream did not answer in time", r.status, r.body)
			}
			trace := traceID(msg)
			if trace == "" {
				t.Fatalf("the timeout error %q carries no trace id", msg)
			}
			rec := waitAudit(t, g.DataDir, "the hang call's outcome", func(r auditRecord) bool {
				return r.TraceID == trace && r.Phase == "PHASE_OUTCOME"
			})
			if rec.Outcome != "OUTCOME_TIMED_OUT" || rec.Server != server || rec.Tool != "hang" || rec.Error == "" {
				t.Fatalf("outcome record %+v, want OUTCOME_TIMED_OUT with an error for hang on %s", rec, server)
			}
			if r := c.post(echoCall, sess); r.status != http.StatusOK || !bytes.Contains(r.body, []byte("still serving")) {
				t.Fatalf("echo on the session after the timeout: %d %s", r.status, r.body)
			}
		})
	}
}

// TestHostVisibleErrors: what a failing upstream reveals stays in the log. A stdio server
// whose program is missing, an HTTP server whose URL holds a secret and that nobody listens
// on, and an HTTP upstream that answers 500 with a DSN in its body (on initialize, and on
// tools/call only): the host's whole answer (status line, headers, body) holds none of the
// path, the URL, the secret, the port or the body, and it carries a trace id.
func TestHostVisibleErrors(t *testing.T) {
	t.Parallel()
	const (
		missing = "/nonexistent/secret-path-XYZ/server"
		secret  = "SECRET123"
		dsn     = "postgres://gatehouse_admin:hunter2@db.internal.example:5432/prod"
	)
	failBody := "Traceback (most recent call last):\n  File \"/srv/app/db.py\", line 12\npsycopg2.OperationalError: could not connect to " + dsn + "\n"
	fail := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Upstream-Debug", dsn)
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, failBody)
	}
	// broken answers everything with the failure; onCall only tools/call, serving the rest
	// with a real SDK server.
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fail(w) }))
	t.Cleanup(broken.Close)
	server := mcp.NewServer(&mcp.Implementation{Name: "fails-calls", Version: "v1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	onCall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if isToolsCall(body) {
				fail(w)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		sdk.ServeHTTP(w, r)
	}))
	t.Cleanup(onCall.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	closedURL := "http://127.0.0.1:" + closedPort + "/mcp?token=" + secret

	cfg := "servers:\n" + stdioEntry("missing", missing) + httpEntry("closed", fmt.Sprintf("%q", closedURL)) +
		httpEntry("broken", broken.URL+"/mcp") + httpEntry("fails-calls", onCall.URL+"/mcp")
	g := gatehousetest.Start(t, gatehousetest.Options{Config: cfg})
	hostPort := func(u string) string { return strings.TrimPrefix(u, "http://") }

	cases := []struct {
		name      string
		server    string
		call      bool // a tools/call on a session; else the initialize
		forbidden []string
	}{
		{name: "missing stdio binary", server: "missing", forbidden: []string{missing, "/nonexistent", "secret-path-XYZ"}},
		{name: "unreachable URL with a secret", server: "closed", forbidden: []string{closedURL, secret, "token=", "127.0.0.1:" + closedPort, ":" + closedPort}},
		{name: "upstream 500 on initialize", server: "broken", forbidden: []string{dsn, "hunter2", "db.internal", "Traceback", "psycopg2", "/srv/app", hostPort(broken.URL)}},
		{name: "upstream 500 on tools/call", server: "fails-calls", call: true, forbidden: []string{dsn, "hunter2", "db.internal", "Traceback", "psycopg2", "/srv/app", hostPort(onCall.URL)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := rawClient{t: t, url: g.Endpoint(tc.server), token: g.Token}
			var r rawResponse
			if tc.call {
				sess := session(c.initialize("2025-06-18"))
				r = c.post(toolCall("echo", `{}`), sess)
			} else {
				r = c.post(initBody, nil)
				if r.status == http.StatusOK {
					t.Fatalf("initialize on a failing upstream answered 200: %s", r.body)
				}
			}
			whole := wholeResponse(r)
			for _, f := range tc.forbidden {
				if strings.Contains(whole, f) {
					t.Errorf("the host's answer holds %q:\n%s", f, whole)
				}
			}
			_, msg, ok := r.rpcError()
			if !ok || traceID(msg) == "" {
				t.Errorf("the host's answer has no JSON-RPC error with a trace id:\n%s", whole)
			}
		})
	}
	// The details are the operator's: the log has them.
	for _, detail := range []string{"secret-path-XYZ", "127.0.0.1:" + closedPort} {
		if !strings.Contains(g.Logs(), detail) {
			t.Errorf("the gateway's log does not name %q", detail)
		}
	}
}

// wholeResponse is everything the host reads of an answer: status line, headers, body.
func wholeResponse(r rawResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s\n", r.status, http.StatusText(r.status))
	keys := make([]string, 0, len(r.header))
	for k := range r.header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range r.header[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	b.WriteString("\n")
	b.Write(r.body)
	return b.String()
}
