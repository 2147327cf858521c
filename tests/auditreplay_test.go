package tests

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// replayed is one call of `gatehouse audit replay --json`, and of shadow replay's report.
type replayed struct {
	Kind          string   `json:"kind"`
	CallID        string   `json:"call_id"`
	Method        string   `json:"method"`
	Server        string   `json:"server"`
	Tool          string   `json:"tool"`
	Decision      string   `json:"decision"`
	PolicyIDs     []string `json:"policy_ids"`
	BundleVersion string   `json:"bundle_version"`
	Outcome       string   `json:"outcome"`
	NewDecision   string   `json:"new_decision"`
	NewPolicyIDs  []string `json:"new_policy_ids"`
	Reason        string   `json:"reason"`
	// The candidate reads arguments (the shipped guardrails do), which the log does not keep.
	WithoutArguments bool `json:"without_arguments"`
}

func parseReplayed(t *testing.T, out string) []replayed {
	t.Helper()
	var calls []replayed
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var c replayed
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("replay line %q: %v", line, err)
		}
		calls = append(calls, c)
	}
	return calls
}

// TestAuditReplay drives one session with the official Go SDK client through `gatehouse up`,
// then replays it with `gatehouse audit replay`, online (auditsvc's Query at the gateway, the
// operator's credential) and offline (the data dir's files): the timeline is the calls the
// host made, in order, each allowed by the default policy and its outcome recorded. Shadow
// replay with a candidate bundle that forbids the echo tool lists exactly the recorded echo
// calls, allowed then and denied by no-echo now, online and offline.
func TestAuditReplay(t *testing.T) {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	config := "servers:\n" + stdioEntry("echo", echo)
	g := gatehousetest.Start(t, gatehousetest.Options{Config: config})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.Endpoint("echo"), HTTPClient: g.AuthClient()}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, g.Logs())
	}
	defer cs.Close()
	sid := cs.ID()
	if sid == "" {
		t.Fatal("no session id")
	}

	// The host's calls, in order; a second session's call must not show in this one's replay.
	type made struct{ method, tool string }
	var want []made
	call := func(tool string, args map[string]any) {
		t.Helper()
		if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args}); err != nil || res.IsError {
			t.Fatalf("%s: %v %v", tool, res, err)
		}
		want = append(want, made{"tools/call", tool})
	}
	if _, err := cs.ListTools(ctx, &mcp.ListToolsParams{}); err != nil {
		t.Fatal(err)
	}
	want = append(want, made{"tools/list", ""})
	call("echo", map[string]any{"text": "one"})
	call("add", map[string]any{"a": 1, "b": 2})
	call("echo", map[string]any{"text": "two"})
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "echo://readme"}); err != nil {
		t.Fatal(err)
	}
	want = append(want, made{"resources/read", "echo://readme"})
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet", Arguments: map[string]string{"name": "Ada"}}); err != nil {
		t.Fatal(err)
	}
	want = append(want, made{"prompts/get", "greet"})
	call("echo", map[string]any{"text": "three"})
	other, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.Endpoint("echo"), HTTPClient: g.AuthClient()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "elsewhere"}}); err != nil {
		t.Fatal(err)
	}
	other.Close()

	admin := []string{"GATEHOUSE_ADMIN_TOKEN=" + g.Token, "GATEHOUSE_URL=" + g.Base}
	// The host's calls as the replay lists them: methods the host sent of its own (the SDK's
	// initialized notification and pings are calls too, but not the ones compared here).
	hostCalls := func(calls []replayed) []made {
		var out []made
		for _, c := range calls {
			if c.Method == "tools/list" || c.Method == "tools/call" || c.Method == "resources/read" || c.Method == "prompts/get" {
				out = append(out, made{c.Method, c.Tool})
			}
		}
		return out
	}
	modes := map[string][]string{"online": nil, "offline": {"--data-dir", g.DataDir}}
	for _, mode := range []string{"online", "offline"} {
		var calls []replayed
		// Outcome records are committed within the commit lag after the host's answer.
		testsync.WaitFor(t, 20*time.Second, mode+" replay with every outcome", func() bool {
			args := append(append([]string{"audit", "replay", "--json"}, modes[mode]...), sid)
			env := admin
			if mode == "offline" {
				env = nil // no gateway needed: the files alone
			}
			stdout, stderr, err := gatehouseCLI(t, env, args...)
			if err != nil {
				t.Fatalf("%s replay: %v\n%s", mode, err, stderr)
			}
			calls = parseReplayed(t, stdout)
			return len(calls) > 0 && !slices.ContainsFunc(calls, func(c replayed) bool { return c.Outcome == "pending" })
		})
		if got := hostCalls(calls); !slices.Equal(got, want) {
			t.Fatalf("%s replay of session %s:\n got %v\nwant %v", mode, sid, got, want)
		}
		for _, c := range calls {
			if c.Method == "tools/call" && (c.Decision != "allow" || c.Outcome != "allowed" || len(c.PolicyIDs) == 0 || !strings.HasPrefix(c.BundleVersion, "sha256:")) {
				t.Fatalf("%s replay: call %+v, want allowed by a policy of a bundle", mode, c)
			}
		}
		// The table names the same calls.
		args := append(append([]string{"audit", "replay"}, modes[mode]...), sid)
		stdout, stderr, err := gatehouseCLI(t, admin, args...)
		if err != nil || strings.Count(stdout, "tools/call") != 4 || !strings.Contains(stdout, "DECISION") {
			t.Fatalf("%s replay table: %v\n%s%s", mode, err, stdout, stderr)
		}
	}

	// The records themselves: the decision and outcome record of each echo call of the
	// session, online and offline alike.
	for mode, where := range modes {
		env := admin
		if mode == "offline" {
			env = nil
		}
		stdout, stderr, err := gatehouseCLI(t, env, append([]string{"audit", "query", "--json", "--session", sid, "--tool", "echo"}, where...)...)
		if n := strings.Count(stdout, "\n"); err != nil || n != 6 || strings.Count(stdout, `"phase":"PHASE_DECISION"`) != 3 {
			t.Fatalf("%s query: %v, %d records\n%s%s", mode, err, n, stdout, stderr)
		}
	}

	// Shadow replay of the session with a bundle that retires the echo tool.
	var echoCalls []string
	stdout, _, err := gatehouseCLI(t, admin, "audit", "replay", "--json", sid)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range parseReplayed(t, stdout) {
		if c.Method == "tools/call" && c.Tool == "echo" {
			echoCalls = append(echoCalls, c.CallID)
		}
	}
	if len(echoCalls) != 3 {
		t.Fatalf("%d echo calls recorded, want 3", len(echoCalls))
	}
	candidate := policyDir(t, map[string]string{"retired.cedar": noEcho})
	cfgFile := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	shadowModes := map[string][]string{"online": {sid}, "offline": {"--data-dir", g.DataDir, "--config", cfgFile, sid}}
	for _, mode := range []string{"online", "offline"} {
		args := append([]string{"audit", "replay", "--json", "--policy", candidate}, shadowModes[mode]...)
		stdout, stderr, err := gatehouseCLI(t, admin, args...)
		if err != nil {
			t.Fatalf("%s shadow replay: %v\n%s", mode, err, stderr)
		}
		var changed []string
		for _, r := range parseReplayed(t, stdout) {
			if r.Kind != "changed" {
				t.Fatalf("%s shadow replay: %+v, want only changed calls (every record keeps its input)", mode, r)
			}
			if r.Decision != "allow" || r.NewDecision != "deny" || !slices.Equal(r.NewPolicyIDs, []string{"no-echo"}) || len(r.PolicyIDs) == 0 || !r.WithoutArguments {
				t.Fatalf("%s shadow replay: %+v, want allowed then, denied by no-echo now", mode, r)
			}
			changed = append(changed, r.CallID)
		}
		if !slices.Equal(changed, echoCalls) {
			t.Fatalf("%s shadow replay changed %v, want exactly the echo calls %v", mode, changed, echoCalls)
		}
	}
	// Over a time range, the other session's echo call is among them too.
	stdout, stderr, err := gatehouseCLI(t, admin, "audit", "replay", "--json", "--policy", candidate, "--since", "1h")
	if err != nil {
		t.Fatalf("shadow replay --since: %v\n%s", err, stderr)
	}
	if n := len(parseReplayed(t, stdout)); n != 4 {
		t.Fatalf("shadow replay --since 1h: %d changed calls, want 4 (3 in the session, 1 in the other)\n%s", n, stdout)
	}
	// And the human report says so.
	stdout, _, err = gatehouseCLI(t, admin, "audit", "replay", "--policy", candidate, sid)
	if err != nil || !strings.Contains(stdout, "3 decided differently, 0 not replayable") || !strings.Contains(stdout, "no-echo") {
		t.Fatalf("shadow replay report: %v\n%s", err, stdout)
	}
}
