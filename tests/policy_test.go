package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// noEcho forbids the echo tool of the server named echo, which the default policy permits.
const noEcho = `// The echo tool is retired.
@id("no-echo")
forbid (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.server == Gatehouse::Server::"echo" && resource.name == "echo" };
`

// ownerAttribute uses an attribute the schema does not declare; its policy starts on line 3.
const ownerAttribute = "// Servers belong to an owner.\n\n@id(\"owner-only\")\npermit (principal, action == Gatehouse::Action::\"initialize\", resource is Gatehouse::Server)\nwhen { resource.owner == principal.tenant };\n"

// gatehouseCLI runs the gatehouse binary with args and env, and PATH and HOME only of the
// test's own environment, so that no GATEHOUSE_ variable of it leaks in.
func gatehouseCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatehousetest.Bin(t, gatehousetest.Gatehouse), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

var appliedLine = regexp.MustCompile(`^applied (sha256:[0-9a-f]{64})`)

// TestPolicyApply rolls a bundle out to a running gateway with `gatehouse policy apply`: a
// call the Go SDK client made a moment before is denied after, in the same session, without
// a restart; the denial's error names the new bundle and the deciding policy (and never its
// text), and so does the call's audit record; `gatehouse policy explain` names the same
// policy; and a bundle that does not validate is refused while the applied one decides on.
func TestPolicyApply(t *testing.T) {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{Config: "servers:\n" + stdioEntry("echo", echo)})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.Endpoint("echo"), HTTPClient: g.AuthClient()}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, g.Logs())
	}
	defer cs.Close()
	callEcho := func(text string) (*mcp.CallToolResult, error) {
		return cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}})
	}
	if res, err := callEcho("before"); err != nil || res.IsError {
		t.Fatalf("echo before the apply: %v %v\n%s", res, err, g.Logs())
	}

	admin := []string{"GATEHOUSE_ADMIN_TOKEN=" + g.Token, "GATEHOUSE_URL=" + g.Base}
	dir := policyDir(t, map[string]string{"retired.cedar": noEcho})
	stdout, stderr, err := gatehouseCLI(t, admin, "policy", "apply", dir)
	if err != nil {
		t.Fatalf("apply: %v\n%s%s", err, stdout, stderr)
	}
	m := appliedLine.FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("apply printed %q, want the applied version", stdout)
	}
	version := m[1]

	// Denied after, in the same session: the error says which bundle and which policy.
	deniedBy := func(what string) {
		t.Helper()
		_, err := callEcho(what)
		var werr *jsonrpc.Error
		if !errors.As(err, &werr) || werr.Code != -32001 {
			t.Fatalf("echo %s: err = %v, want the gateway's denial (-32001)", what, err)
		}
		var data struct {
			Bundle   string   `json:"bundle"`
			Policies []string `json:"policies"`
		}
		if err := json.Unmarshal(werr.Data, &data); err != nil {
			t.Fatalf("denial data %s: %v", werr.Data, err)
		}
		if data.Bundle != version || !slices.Equal(data.Policies, []string{"no-echo"}) {
			t.Fatalf("denial data %s, want bundle %s and policies [no-echo]", werr.Data, version)
		}
		if strings.Contains(string(werr.Data), "forbid") || strings.Contains(werr.Message, "forbid") {
			t.Fatalf("the host sees policy text: %q %s", werr.Message, werr.Data)
		}
	}
	deniedBy("after")
	// The rest of the default policy still holds: another tool of the server is permitted.
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 1, "b": 2}}); err != nil || res.IsError {
		t.Fatalf("add after the apply: %v %v", res, err)
	}
	rec := waitAudit(t, g.DataDir, "the denied echo", func(r auditRecord) bool {
		return r.Tool == "echo" && r.Outcome == "OUTCOME_DENIED"
	})
	if rec.BundleVersion != version || !slices.Equal(rec.PolicyIDs, []string{"no-echo"}) || rec.Principal != "dev" {
		t.Fatalf("audit record %+v, want bundle %s decided by [no-echo] for dev", rec, version)
	}

	// explain reproduces the decision from the directory and names the deciding policy.
	stdout, stderr, err = gatehouseCLI(t, nil, "policy", "explain", "--dir", dir, "--principal", "dev", "--tenant", "default",
		"--action", "tools/call", "--resource", "echo/echo")
	if err != nil || !strings.Contains(stdout, "decision: deny") || !strings.Contains(stdout, "policies: no-echo") || !strings.Contains(stdout, version) {
		t.Fatalf("explain: %v\n%s%s", err, stdout, stderr)
	}

	// A bundle that does not validate is refused, with the problem at its file and line, and
	// the applied bundle keeps deciding.
	bad := policyDir(t, map[string]string{"owner.cedar": ownerAttribute})
	stdout, stderr, err = gatehouseCLI(t, admin, "policy", "apply", bad)
	if err == nil || !strings.Contains(stderr, filepath.Join(bad, "owner.cedar")+":3:1:") || !strings.Contains(stderr, "owner") {
		t.Fatalf("apply of an invalid bundle: %v\nstdout %s\nstderr %s", err, stdout, stderr)
	}
	deniedBy("after the refused apply")

	// Applying the example policies again permits the call again, still without a restart.
	stdout, stderr, err = gatehouseCLI(t, admin, "policy", "apply", "--url", g.Base, filepath.Join(gatehousetest.RepoRoot(t), "examples", "policies"))
	if err != nil || !strings.Contains(stdout, "replacing "+version) {
		t.Fatalf("apply of the examples: %v\n%s%s", err, stdout, stderr)
	}
	if res, err := callEcho("again"); err != nil || res.IsError {
		t.Fatalf("echo after the examples were applied again: %v %v", res, err)
	}
}
