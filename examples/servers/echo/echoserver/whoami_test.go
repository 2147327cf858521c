package echoserver

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// bearer adds an Authorization header to every request.
type bearer struct{ value string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", b.value)
	return http.DefaultTransport.RoundTrip(r)
}

func whoami(t *testing.T, cs *mcp.ClientSession) WhoamiResult {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "whoami"})
	if err != nil || res.IsError {
		t.Fatalf("whoami: %v %v", res, err)
	}
	var out WhoamiResult
	raw, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("whoami output %s: %v", raw, err)
	}
	return out
}

// TestWhoami: the whoami tool reports the Authorization header each call arrived with over
// HTTP, and the named environment variables over stdio; it exists only when asked for.
func TestWhoami(t *testing.T) {
	t.Parallel()
	url, _ := startHTTP(t, "-whoami")
	cs, err := newClient().Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: bearer{"Bearer upstream-token"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	if got := whoami(t, cs); got.Authorization != "Bearer upstream-token" || got.Env != nil {
		t.Fatalf("whoami over HTTP = %+v", got)
	}

	cmd := exec.Command(binary, "-whoami", "-whoami-env", "ECHO_WHOAMI_SET,ECHO_WHOAMI_UNSET")
	cmd.Env = append(os.Environ(), "ECHO_WHOAMI_SET=child-secret")
	stdio, err := newClient().Connect(t.Context(), &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdio.Close() })
	if got := whoami(t, stdio); got.Authorization != "" || len(got.Env) != 1 || got.Env["ECHO_WHOAMI_SET"] != "child-secret" {
		t.Fatalf("whoami over stdio = %+v", got)
	}

	plain, _ := startHTTP(t)
	cs, err = newClient().Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: plain, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	tools, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(tools.Tools, func(tool *mcp.Tool) bool { return tool.Name == "whoami" }) {
		t.Fatal("whoami is offered without -whoami")
	}
}
