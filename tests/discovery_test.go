package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestListEqualsAuthorization walks every tool of every server under several principals:
// tools/list through the gateway shows a tool exactly when policy's Check allows tools/call
// on it. The policy forbids one tool to one group, and one server is approved for another
// tenant only (its tools are nobody's here but that tenant's). The reference list of each
// server is the upstream's own, read with the Go SDK client straight from the server.
func TestListEqualsAuthorization(t *testing.T) {
	everything := gatehousetest.Bin(t, gatehousetest.EverythingGoSDK)
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	policies := policyDir(t, map[string]string{"restricted.cedar": `@id("restricted-no-simple-text")
forbid (principal in Gatehouse::Group::"restricted", action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.name == "test_simple_text" };
`})
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("everything", everything) + stdioEntry("echo", echo) + stdioEntryFor("research-echo", []string{"research"}, echo),
		Args:   []string{"--policy-dir", policies},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	upstream := map[string][]string{"everything": upstreamTools(t, ctx, everything), "echo": upstreamTools(t, ctx, echo), "research-echo": upstreamTools(t, ctx, echo)}
	if !slices.Contains(upstream["everything"], "test_simple_text") {
		t.Fatalf("the conformance server has no test_simple_text: %v", upstream["everything"])
	}

	admin := authv1connect.NewAuthServiceClient(g.AdminClient(), g.Base)
	type principal struct {
		id, tenant string
		groups     []string
		token      string
	}
	principals := []*principal{
		{id: "alice", tenant: "default", groups: []string{"restricted"}},
		{id: "bob", tenant: "default"},
		{id: "carol", tenant: "research"},
	}
	for _, p := range principals {
		resp, err := admin.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: p.id, Tenant: p.tenant, Groups: p.groups, Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER}))
		if err != nil {
			t.Fatal(err)
		}
		p.token = resp.Msg.GetToken()
	}
	policy := policyv1connect.NewPolicyServiceClient(rpcserver.WithToken(&http.Client{Transport: http.DefaultTransport, Timeout: gatehousetest.ClientTimeout}, g.InternalToken), g.Base)
	allowed := func(p *principal, server, tool string) bool {
		resp, err := policy.Check(ctx, connect.NewRequest(&policyv1.CheckRequest{
			Subject: &policyv1.Subject{Id: p.id, Tenant: p.tenant, Groups: p.groups, Kind: "user"}, Action: "tools/call",
			Resource: &policyv1.Resource{Server: server, Name: tool},
		}))
		if err != nil {
			t.Fatalf("Check %s %s %s: %v", p.id, server, tool, err)
		}
		return resp.Msg.GetDecision() == policyv1.Decision_DECISION_ALLOW
	}

	sawForbidden, sawUnapproved := false, false
	for _, p := range principals {
		for _, server := range []string{"everything", "echo", "research-echo"} {
			c := rawClient{t: t, url: g.Endpoint(server), token: p.token}
			init := c.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, nil)
			if init.status == http.StatusNotFound {
				// A server the tenant is not approved for does not exist for it; no tool of
				// it may be called either.
				sawUnapproved = true
				for _, tool := range upstream[server] {
					if allowed(p, server, tool) {
						t.Errorf("%s may call %s on %s, which does not open for it", p.id, tool, server)
					}
				}
				continue
			}
			sid := c.initialize("2025-11-25")
			listed := listTools(t, c, sid)
			for _, tool := range upstream[server] {
				in, ok := slices.Contains(listed, tool), allowed(p, server, tool)
				if in != ok {
					t.Errorf("%s on %s: %s listed %v, Check allows %v", p.id, server, tool, in, ok)
				}
				sawForbidden = sawForbidden || (!ok && server == "everything")
			}
			for _, tool := range listed {
				if !slices.Contains(upstream[server], tool) {
					t.Errorf("%s on %s: %s listed but not the upstream's", p.id, server, tool)
				}
			}
		}
	}
	if !sawForbidden || !sawUnapproved {
		t.Fatalf("the walk met no forbidden tool (%v) or no unapproved server (%v): it proves nothing", sawForbidden, sawUnapproved)
	}

	// The aggregated endpoint: one list of every server's tools, prefixed, holding exactly
	// what Check allows; a tool of a server the tenant is not approved for is answered as an
	// unknown tool is, word for word.
	for _, p := range principals {
		c := rawClient{t: t, url: g.Base + "/mcp", token: p.token}
		sid := c.initialize("2025-11-25")
		listed := listTools(t, c, sid)
		for _, server := range []string{"everything", "echo", "research-echo"} {
			for _, tool := range upstream[server] {
				in, ok := slices.Contains(listed, server+"__"+tool), allowed(p, server, tool)
				if in != ok {
					t.Errorf("%s on /mcp: %s__%s listed %v, Check allows %v", p.id, server, tool, in, ok)
				}
			}
		}
		for _, name := range listed {
			server, tool, _ := strings.Cut(name, "__")
			if !slices.Contains(upstream[server], tool) {
				t.Errorf("%s on /mcp: %s listed but no upstream's", p.id, name)
			}
		}
		unknown := c.post(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"nosuch__echo","arguments":{"text":"x"}}}`, map[string]string{"Mcp-Session-Id": sid})
		unapproved := c.post(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"research-echo__echo","arguments":{"text":"x"}}}`, map[string]string{"Mcp-Session-Id": sid})
		if p.tenant == "default" && (unknown.status != unapproved.status || errorOf(t, unknown.body) != errorOf(t, unapproved.body)) {
			t.Errorf("%s on /mcp: an unapproved server's tool answered %d %s, an unknown one %d %s", p.id, unapproved.status, unapproved.body, unknown.status, unknown.body)
		}
	}
}

// errorOf is a JSON-RPC answer's error code and message without the trace id, which differs
// between any two calls.
func errorOf(t *testing.T, body []byte) string {
	t.Helper()
	if i := bytes.Index(body, []byte("data: ")); i >= 0 {
		body = bytes.TrimSpace(body[i+len("data: "):])
	}
	var m struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &m); err != nil || m.Error == nil {
		t.Fatalf("not a JSON-RPC error: %s", body)
	}
	msg, _, _ := strings.Cut(m.Error.Message, " (trace")
	return fmt.Sprintf("%d %s", m.Error.Code, msg)
}

// upstreamTools lists a stdio server's tools straight from it, with the official Go SDK.
func upstreamTools(t *testing.T, ctx context.Context, bin string) []string {
	t.Helper()
	return upstreamToolsAt(t, ctx, &mcp.CommandTransport{Command: exec.Command(bin)})
}

// upstreamToolsAt lists a server's tools straight from it, every page.
func upstreamToolsAt(t *testing.T, ctx context.Context, transport mcp.Transport) []string {
	t.Helper()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "reference", Version: "1"}, nil).Connect(ctx, transport, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tool.Name)
	}
	return names
}

// listTools pages through tools/list on a session of the gateway.
func listTools(t *testing.T, c rawClient, sid string) []string {
	t.Helper()
	var names []string
	cursor := ""
	for page := 0; page < 100; page++ {
		params := `{}`
		if cursor != "" {
			b, _ := json.Marshal(map[string]string{"cursor": cursor})
			params = string(b)
		}
		r := c.post(`{"jsonrpc":"2.0","id":`+itoa(10+page)+`,"method":"tools/list","params":`+params+`}`, map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
		var msg struct {
			Result *struct {
				Tools []struct {
					Name string `json:"name"`
				} `json:"tools"`
				NextCursor string `json:"nextCursor"`
			} `json:"result"`
		}
		msgs := r.messages()
		if len(msgs) == 0 || json.Unmarshal(msgs[len(msgs)-1], &msg) != nil || msg.Result == nil {
			t.Fatalf("tools/list: %d %s", r.status, r.body)
		}
		for _, tool := range msg.Result.Tools {
			names = append(names, tool.Name)
		}
		if cursor = msg.Result.NextCursor; cursor == "" {
			return names
		}
	}
	t.Fatal("tools/list did not end in 100 pages")
	return nil
}
