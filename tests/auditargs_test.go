package tests

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestAuditArguments: through `gatehouse up`, a server configured to keep redacted arguments
// has its tools/call recorded with the configured path masked (and one tool of it, in full),
// while a server without the setting keeps the digest only; the outcome record does not
// repeat what the decision record keeps.
func TestAuditArguments(t *testing.T) {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	config := "servers:\n" + stdioEntry("vault", echo) +
		"    audit: {arguments: redacted, redact: [\"$.password\"], tools: {add: {arguments: full}}}\n" +
		stdioEntry("plain", echo)
	g := gatehousetest.Start(t, gatehousetest.Options{Config: config})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, nil)
	call := func(server, tool string, args map[string]any) {
		t.Helper()
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.Endpoint(server), HTTPClient: g.AuthClient()}, nil)
		if err != nil {
			t.Fatalf("connect to %s: %v\n%s", server, err, g.Logs())
		}
		defer cs.Close()
		// The echo tool refuses members it does not know: what matters here is the record,
		// written before the upstream answers, whatever it answers.
		_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	}
	login := map[string]any{"user": "a", "password": "p"}
	call("vault", "echo", login)
	forced := map[string]any{"a": 1, "b": 2, "force": true}
	call("vault", "add", forced)
	call("plain", "echo", login)
	call("plain", "add", forced)

	// The record policy decided on: the decision record of an allowed call, the only one of
	// a refused call.
	decided := func(server, tool string) auditRecord {
		return waitAudit(t, g.DataDir, server+" "+tool+"'s decision", func(r auditRecord) bool {
			return r.Server == server && r.Method == "tools/call" && r.Tool == tool && r.Phase != "PHASE_OUTCOME"
		})
	}
	sameJSON := func(what, got, want string) {
		t.Helper()
		var g, w any
		if err := json.Unmarshal([]byte(got), &g); err != nil {
			t.Fatalf("%s: arguments %q are not JSON: %v", what, got, err)
		}
		_ = json.Unmarshal([]byte(want), &w)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("%s: arguments %s, want %s", what, got, want)
		}
	}

	r := decided("vault", "echo")
	if r.ArgumentsForm != "redacted" || r.ArgumentsDigest == "" {
		t.Fatalf("vault echo: form %q digest %q, want redacted and a digest", r.ArgumentsForm, r.ArgumentsDigest)
	}
	sameJSON("vault echo", r.Arguments, `{"user":"a","password":"[redacted]"}`)

	r = decided("vault", "add")
	if r.ArgumentsForm != "full" {
		t.Fatalf("vault add: form %q, want full (the tool's setting)", r.ArgumentsForm)
	}
	sameJSON("vault add", r.Arguments, `{"a":1,"b":2,"force":true}`)
	fullCall := r.CallID

	for _, tool := range []string{"echo", "add"} {
		r = decided("plain", tool)
		if r.Arguments != "" || r.ArgumentsForm != "" || r.ArgumentsDigest == "" {
			t.Fatalf("plain %s: arguments %q form %q digest %q, want the digest only", tool, r.Arguments, r.ArgumentsForm, r.ArgumentsDigest)
		}
	}
	// Every outcome record keeps the digest only, and no record keeps the password.
	for _, rec := range auditRecords(t, g.DataDir) {
		if rec.Phase == "PHASE_OUTCOME" && (rec.Arguments != "" || rec.ArgumentsForm != "") {
			t.Fatalf("outcome record of %s %s keeps arguments %q (%s)", rec.Server, rec.Tool, rec.Arguments, rec.ArgumentsForm)
		}
		if strings.Contains(rec.Arguments, `"p"`) {
			t.Fatalf("record of %s %s keeps the password: %s", rec.Server, rec.Tool, rec.Arguments)
		}
	}

	// Shadow replay decides the call kept in full with its arguments: a candidate that
	// forbids forced adds changes it, and says it was decided with them. The same call on
	// the server that keeps the digest only is decided without them: allowed, as it was.
	candidate := policyDir(t, map[string]string{"forced.cedar": noForcedAdd})
	admin := []string{"GATEHOUSE_ADMIN_TOKEN=" + g.Token, "GATEHOUSE_URL=" + g.Base}
	for mode, where := range map[string][]string{"online": nil, "offline": {"--data-dir", g.DataDir, "--config", writeConfig(t, config)}} {
		env := admin
		if mode == "offline" {
			env = nil
		}
		stdout, stderr, err := gatehouseCLI(t, env, append([]string{"audit", "replay", "--json", "--policy", candidate, "--since", "1h"}, where...)...)
		if err != nil {
			t.Fatalf("%s shadow replay: %v\n%s", mode, err, stderr)
		}
		got := parseReplayed(t, stdout)
		if len(got) != 1 || got[0].CallID != fullCall || got[0].Kind != "changed" || got[0].NewDecision != "deny" || got[0].WithoutArguments {
			t.Fatalf("%s shadow replay: %+v, want only vault's add (%s), denied now, decided with its arguments", mode, got, fullCall)
		}
	}
}

// noForcedAdd forbids the add tool when its arguments say force.
const noForcedAdd = `@id("no-forced-add")
forbid (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.name == "add" && context has arguments && context.arguments has force && context.arguments.force };
`

func writeConfig(t *testing.T, config string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
