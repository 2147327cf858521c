package tests

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// revocationBound is how long a revocation may take to be in force everywhere (the 2 s the
// gateway promises) plus slack for a loaded test machine.
const revocationBound = 2*time.Second + 3*time.Second

// mustCLI runs the built gatehouse binary (gatehouseCLI) and returns its stdout, failing the
// test if it fails.
func mustCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, stderr, err := gatehouseCLI(t, env, args...)
	if err != nil {
		t.Fatalf("gatehouse %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

var issuedToken = regexp.MustCompile(`(?m)^token_id: ([0-9a-f]+)\ntoken:    (\S+)\n$`)

// issueToken runs `gatehouse token issue` and returns the token's id and value.
func issueToken(t *testing.T, env []string, args ...string) (id, token string) {
	t.Helper()
	out := mustCLI(t, env, append([]string{"token", "issue"}, args...)...)
	m := issuedToken.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("token issue printed %q", out)
	}
	return m[1], m[2]
}

// openGET opens the session's standalone GET stream; the channel is closed when the gateway
// ends the stream.
func openGET(t *testing.T, url, token, sid string) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	resp, err := http.DefaultClient.Do(req) // no timeout: a stream lasts
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET stream: %d %s", resp.StatusCode, b)
	}
	ended := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		close(ended)
	}()
	return ended
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// TestTokenCLIRevocation: an operator issues a token with `gatehouse token issue` against a running
// `gatehouse up`, a host uses it with the official Go SDK client, `token list` shows it and
// `token revoke` revokes it. Within 2 s (plus slack) the token is refused with 401 although
// the gateway had just cached it, the open GET stream of its session has ended and its
// sessions are gone (their stdio children reaped); another principal's session is untouched.
func TestTokenCLIRevocation(t *testing.T) {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{Config: "servers:\n" + stdioEntry("echo", echo)})
	env := []string{"GATEHOUSE_URL=" + g.Base, "GATEHOUSE_ADMIN_TOKEN=" + g.Token}
	id, token := issueToken(t, env, "--principal", "erin", "--tenant", "default", "--groups", "ops", "--ttl", "24h")

	list := mustCLI(t, env, "token", "list", "--tenant", "default")
	if !regexp.MustCompile(id+`\s+erin\s+default\s+user\s+ops\s+\S+Z\s+\S+Z`).MatchString(list) || strings.Contains(list, token) {
		t.Fatalf("token list:\n%s", list)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.Endpoint("echo"),
		HTTPClient: &http.Client{Transport: gatehousetest.BearerTransport{Token: token, Base: http.DefaultTransport}}}, nil)
	if err != nil {
		t.Fatalf("connect with the issued token: %v\n%s", err, g.Logs())
	}
	defer cs.Close()
	call := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "issued by the CLI"}}
	res, err := cs.CallTool(ctx, call)
	if err != nil || res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "issued by the CLI" {
		t.Fatalf("tools/call with the issued token: %v, %v", res, err)
	}

	// A session of the token with its GET stream open, and one of dev's, which must stay.
	rc := rawClient{t: t, url: g.Endpoint("echo"), token: token}
	sid := rc.initialize("2025-06-18")
	sess := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
	stream := openGET(t, g.Endpoint("echo"), token, sid)
	dev := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	devSess := map[string]string{"Mcp-Session-Id": dev.initialize("2025-06-18"), "MCP-Protocol-Version": "2025-06-18"}
	if kids := gatehousetest.ChildrenRunning(g.Pid(), echo); len(kids) != 3 {
		t.Fatalf("%d echo children, want 3: the SDK's session, the raw one and dev's", len(kids))
	}
	// The token is in the gateway's auth cache (for 30 s) when it is revoked.
	if r := rc.post(echoCall, sess); r.status != http.StatusOK {
		t.Fatalf("tools/call: %d %s", r.status, r.body)
	}

	if out := mustCLI(t, env, "token", "revoke", id); out != "revoked "+id+"\n" {
		t.Fatalf("token revoke printed %q", out)
	}
	start := time.Now()
	testsync.WaitFor(t, revocationBound, "the revoked token refused, its stream ended and its sessions gone", func() bool {
		return rc.post(echoCall, sess).status == http.StatusUnauthorized && closed(stream) &&
			len(gatehousetest.ChildrenRunning(g.Pid(), echo)) == 1
	})
	t.Logf("revocation in force after %s", time.Since(start).Round(time.Millisecond))
	r := rc.post(echoCall, sess)
	if !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("the refusal's challenge %q, want invalid_token", r.header.Get("WWW-Authenticate"))
	}
	if _, err := cs.CallTool(ctx, call); err == nil {
		t.Fatal("the Go SDK client's call succeeded with a revoked token")
	}
	if r := dev.post(echoCall, devSess); r.status != http.StatusOK || !strings.Contains(string(r.body), "still serving") {
		t.Fatalf("dev's session after another token's revocation: %d %s", r.status, r.body)
	}
	if list := mustCLI(t, env, "token", "list"); strings.Contains(list, id) {
		t.Fatalf("token list shows the revoked token:\n%s", list)
	}
}

// TestSplitModeRevocation: in split mode with two ingress processes, a token both have just
// cached is refused by both within 2 s (plus slack) of `gatehouse token revoke` (run against
// authsvc), and the GET stream open on the second ingress ends, without restarting it.
func TestSplitModeRevocation(t *testing.T) {
	sp := startSplit(t, 2)
	for _, name := range []string{"ingress", "ingress2"} {
		testsync.WaitFor(t, 30*time.Second, name+" to follow revocations", func() bool {
			return strings.Contains(sp.procs[name].logs.String(), "revocation watch established")
		})
	}
	env := []string{"GATEHOUSE_URL=http://" + sp.addrs["auth"], "GATEHOUSE_ADMIN_TOKEN=" + sp.admin}
	id, token := issueToken(t, env, "--principal", "erin", "--tenant", "default")
	_, devToken := issueToken(t, env, "--principal", "dev", "--tenant", "default")

	a := rawClient{t: t, url: sp.endpoint("ingress", "echo-stdio"), token: token}
	b := rawClient{t: t, url: sp.endpoint("ingress2", "echo-stdio"), token: token}
	sid := a.initialize("2025-06-18") // created on the first ingress, used on both
	sess := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
	for _, c := range []rawClient{a, b} {
		if r := c.post(echoCall, sess); r.status != http.StatusOK || !strings.Contains(string(r.body), "still serving") {
			t.Fatalf("tools/call on %s: %d %s\n%s", c.url, r.status, r.body, sp.allLogs())
		}
	}
	stream := openGET(t, b.url, token, sid)
	second := sp.procs["ingress2"]
	pid := second.cmd.Process.Pid

	mustCLI(t, env, "token", "revoke", id)
	start := time.Now()
	testsync.WaitFor(t, revocationBound, "both ingresses to refuse the revoked token and the second's stream to end", func() bool {
		return a.post(echoCall, sess).status == http.StatusUnauthorized && b.post(echoCall, sess).status == http.StatusUnauthorized && closed(stream)
	})
	t.Logf("revocation in force on both ingresses after %s", time.Since(start).Round(time.Millisecond))

	// The second ingress is the same process, and it serves other tokens.
	select {
	case <-second.done:
		t.Fatalf("the second ingress exited:\n%s", second.logs.String())
	default:
	}
	if second.cmd.Process.Pid != pid {
		t.Fatal("the second ingress was restarted")
	}
	d := rawClient{t: t, url: sp.endpoint("ingress2", "echo-stdio"), token: devToken}
	dsid := d.initialize("2025-06-18")
	if r := d.post(echoCall, map[string]string{"Mcp-Session-Id": dsid, "MCP-Protocol-Version": "2025-06-18"}); r.status != http.StatusOK {
		t.Fatalf("another token on the second ingress: %d %s", r.status, r.body)
	}
	if logs := second.logs.String(); !strings.Contains(logs, `"token_id":"`+id+`"`) {
		t.Fatalf("the second ingress did not log the revocation of %s:\n%s", id, logs)
	}
}

// TestAdminDecidedByPolicy: the admin RPCs are an operator's requests decided by Cedar: the
// internal token alone opens none of them, a principal the policies do not let administer is
// refused, and the dev principal (in gatehouse-admins) is allowed, through the CLI too.
func TestAdminDecidedByPolicy(t *testing.T) {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{Config: "servers:\n" + stdioEntry("echo", echo)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	issue := connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "mallory", Tenant: "default"})
	internalOnly := authv1connect.NewAuthServiceClient(rpcserver.WithToken(&http.Client{Transport: http.DefaultTransport, Timeout: gatehousetest.ClientTimeout}, g.InternalToken), g.Base)
	if _, err := internalOnly.CreateToken(ctx, issue); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("CreateToken with the internal token alone: %v, want PermissionDenied", err)
	}
	bob := g.NewToken(t, "bob", "default") // a user, in no admin group
	asBob := authv1connect.NewAuthServiceClient(&http.Client{Transport: gatehousetest.BearerTransport{Token: bob, Base: http.DefaultTransport}, Timeout: gatehousetest.ClientTimeout}, g.Base)
	if _, err := asBob.CreateToken(ctx, issue); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("CreateToken by a user the policies do not let administer: %v, want PermissionDenied", err)
	}
	if _, _, err := gatehouseCLI(t, []string{"GATEHOUSE_URL=" + g.Base, "GATEHOUSE_ADMIN_TOKEN=" + bob}, "token", "list"); err == nil {
		t.Fatal("token list by bob succeeded")
	}
	if out := mustCLI(t, []string{"GATEHOUSE_URL=" + g.Base, "GATEHOUSE_ADMIN_TOKEN=" + g.Token}, "token", "list", "--tenant", "default"); !strings.Contains(out, "bob") {
		t.Fatalf("token list by the dev principal does not show bob's token:\n%s", out)
	}
}
