package nodepeer_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/nodepeer"
)

// TestRunConformanceGoSDK runs the official suite directly against the Go SDK conformance
// server: the baseline a gateway in front of that server must reproduce.
func TestRunConformanceGoSDK(t *testing.T) {
	url := startGoConformanceServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	res, err := nodepeer.RunConformance(t, ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range res.Checks {
		ids = append(ids, c.ID)
		if c.Status != nodepeer.StatusSuccess {
			t.Errorf("%s/%s: %s %s", c.Scenario, c.ID, c.Status, c.ErrorMessage)
		}
	}
	if !slices.Equal(ids, nodepeer.ActiveServerChecks) {
		t.Errorf("checks run:\n%v\nwant:\n%v", ids, nodepeer.ActiveServerChecks)
	}
	if t.Failed() {
		t.Logf("suite output:\n%s", res.Output)
	}
}

// TestRunClientEverything drives server-everything (Streamable HTTP) with the TypeScript SDK
// client under Node 22 and under the system Node.
func TestRunClientEverything(t *testing.T) {
	ev := nodepeer.StartEverything(t, nodepeer.EverythingStreamableHTTP)
	if !strings.HasPrefix(ev.URL, "http://127.0.0.1:") {
		t.Fatalf("URL = %q, want a loopback URL", ev.URL)
	}
	nodes := []struct {
		name string
		path func(t *testing.T) string
	}{
		{"node22", func(t *testing.T) string { return nodepeer.Node22(t) }},
		{"system node", func(t *testing.T) string {
			path, err := exec.LookPath("node")
			if err != nil {
				t.Skip("no node on PATH")
			}
			return path
		}},
	}
	for _, n := range nodes {
		t.Run(n.name, func(t *testing.T) {
			node := n.path(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			res, err := nodepeer.RunClientWith(t, ctx, node,
				"--url", ev.URL, "--token", "not-checked-by-everything",
				"--call", "echo", "--args", `{"message":"hello gatehouse"}`,
				"--read", "demo://resource/static/document/architecture.md",
				"--prompt", "args-prompt", "--prompt-args", `{"city":"Oslo"}`)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Tools) == 0 || !slices.Contains(res.Tools, "echo") {
				t.Errorf("tools = %v, want a list with echo", res.Tools)
			}
			if res.SessionID == "" || res.ProtocolVersion == "" {
				t.Errorf("session %q, protocol %q: want both set", res.SessionID, res.ProtocolVersion)
			}
			tr, err := res.ToolResult()
			if err != nil {
				t.Fatal(err)
			}
			if tr.IsError || !strings.Contains(tr.Text(), "hello gatehouse") {
				t.Errorf("echo result = %+v, want the message back", tr)
			}
			if !slices.Contains(res.Resources, "demo://resource/static/document/architecture.md") {
				t.Errorf("resources = %v", res.Resources)
			}
			if !strings.Contains(string(res.Read), "architecture.md") || !strings.Contains(string(res.Prompt), "Oslo") {
				t.Errorf("read = %.200s, prompt = %.200s", res.Read, res.Prompt)
			}
		})
	}

	t.Run("unknown tool is an isError result", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := nodepeer.RunClient(t, ctx, "--url", ev.URL, "--call", "no-such-tool")
		if err != nil {
			t.Fatal(err)
		}
		if tr, err := res.ToolResult(); err != nil || !tr.IsError || !strings.Contains(tr.Text(), "no-such-tool") {
			t.Fatalf("result = %+v, %v: want isError naming the tool", tr, err)
		}
	})

	t.Run("JSON-RPC error is an error", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := nodepeer.RunClient(t, ctx, "--url", ev.URL, "--prompt", "no-such-prompt")
		if err == nil || !strings.Contains(err.Error(), "-32602") {
			t.Fatalf("err = %v, want the JSON-RPC error", err)
		}
	})
}

func TestEverythingStdioArgv(t *testing.T) {
	ev := nodepeer.StartEverything(t, nodepeer.EverythingStdio)
	if len(ev.Argv) != 3 || ev.Argv[0] != nodepeer.Node22(t) || ev.Argv[2] != "stdio" || ev.URL != "" {
		t.Fatalf("stdio = %+v", ev)
	}
	if _, err := os.Stat(ev.Argv[1]); err != nil || !filepath.IsAbs(ev.Argv[1]) {
		t.Fatalf("entry %q: %v", ev.Argv[1], err)
	}
}

// startGoConformanceServer builds and starts the Go SDK conformance server in session mode on
// a free loopback port and returns its MCP URL.
func startGoConformanceServer(t *testing.T) string {
	t.Helper()
	dir, err := nodepeer.Dir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "everything-server")
	build := exec.Command("go", "build", "-o", bin, "github.com/modelcontextprotocol/go-sdk/conformance/everything-server")
	build.Dir = filepath.Dir(dir) // the tests module
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the Go SDK conformance server: %v\n%s", err, out)
	}

	addr := gatehousetest.StartServer(t, func(addr string) []string { return []string{bin, "-http=" + addr, "-stateless=false"} })
	return "http://" + addr + "/mcp"
}

// TestProblems: a run passes only when every listed check ran and passed and nothing failed,
// an unlisted check included.
func TestProblems(t *testing.T) {
	want := []string{"a", "b"}
	check := func(id string, st nodepeer.Status) nodepeer.Check {
		return nodepeer.Check{Scenario: "s", ID: id, Status: st}
	}
	cases := []struct {
		name   string
		checks []nodepeer.Check
		pass   bool
	}{
		{"all passed", []nodepeer.Check{check("a", nodepeer.StatusSuccess), check("b", nodepeer.StatusSuccess)}, true},
		{"an unlisted check failed", []nodepeer.Check{check("a", nodepeer.StatusSuccess), check("b", nodepeer.StatusSuccess), check("c", nodepeer.StatusFailure)}, false},
		{"a listed check failed", []nodepeer.Check{check("a", nodepeer.StatusSuccess), check("b", nodepeer.StatusFailure)}, false},
		{"a listed check did not run", []nodepeer.Check{check("a", nodepeer.StatusSuccess)}, false},
		{"a listed check only warned", []nodepeer.Check{check("a", nodepeer.StatusSuccess), check("b", nodepeer.StatusWarning)}, false},
		{"an extra check passed", []nodepeer.Check{check("a", nodepeer.StatusSuccess), check("b", nodepeer.StatusSuccess), check("c", nodepeer.StatusSuccess)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			problems := nodepeer.Result{Checks: tc.checks}.Problems(want)
			if (len(problems) == 0) != tc.pass {
				t.Fatalf("problems %q, want a pass: %v", problems, tc.pass)
			}
		})
	}
}
