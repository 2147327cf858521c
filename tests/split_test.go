package tests

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/nodepeer"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/procnet"
)

// splitProc is one service binary of a split-mode run.
type splitProc struct {
	name string
	addr string
	cmd  *exec.Cmd
	logs *testsync.Buffer
	done chan struct{}
}

// split is a split-mode run: the six service binaries (and more ingress processes when
// asked for) on loopback against an etcd that requires TLS client certificates.
type split struct {
	addrs    map[string]string // by service: auth, policy, registry, bridge, audit, ingress, ingress2...
	procs    map[string]*splitProc
	order    []string // the processes in start order
	internal string   // the internal token
	admin    string   // the first operator's token (authsvc's bootstrap admin token)
	echo     string   // the echo server's binary
	echoURL  string   // the echo server over Streamable HTTP, with its whoami tool
	state    string   // the run's directory (audit log, config)
}

// allLogs is every process's log, for a failure message.
func (sp *split) allLogs() string {
	var b strings.Builder
	for _, name := range sp.order {
		fmt.Fprintf(&b, "--- %s\n%s", name, sp.procs[name].logs.String())
	}
	return b.String()
}

// endpoint is a server's MCP endpoint on the named ingress process.
func (sp *split) endpoint(ingress, server string) string {
	return "http://" + sp.addrs[ingress] + "/servers/" + server + "/mcp"
}

// startSplit builds and starts the six service binaries, with ingresses ingress processes
// (named "ingress", "ingress2", ...; each with its own address) sharing the other services
// and etcd. The servers are echo-stdio and echo-http. The internal token is given as a 0600
// file. It returns once every process serves; t.Cleanup kills what is left.
func startSplit(t *testing.T, ingresses int) *split {
	t.Helper()
	return startSplitWith(t, ingresses, nil, nil)
}

// startSplitWith is startSplit with more environment for every process (NAME=value) and
// more servers: extra returns config entries given the echo server's binary and the URL of
// the one it serves over Streamable HTTP (with its whoami tool).
func startSplitWith(t *testing.T, ingresses int, moreEnv []string, extra func(echo, echoURL string) string) *split {
	t.Helper()
	etcd, err := etcdtest.StartTLS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)

	bins := t.TempDir()
	build := exec.Command("go", "build", "-o", bins+"/",
		"./authsvc/cmd/authsvc", "./policysvc/cmd/policysvc", "./registrysvc/cmd/registrysvc",
		"./bridgesvc/cmd/bridgesvc", "./auditsvc/cmd/auditsvc", "./ingress/cmd/ingress")
	build.Dir = gatehousetest.RepoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built the six binaries")
	sp := &split{addrs: map[string]string{}, procs: map[string]*splitProc{}, internal: "split-internal-token-0123456789", admin: "split-operator-token-0123456789", state: t.TempDir()}
	sp.echo = gatehousetest.Bin(t, gatehousetest.EchoServer)
	echoAddr := gatehousetest.StartServer(t, func(addr string) []string { return []string{sp.echo, "-http", addr, "-whoami"} })
	sp.echoURL = "http://" + echoAddr + "/mcp"

	tokenFile := filepath.Join(sp.state, "internal-token")
	if err := os.WriteFile(tokenFile, []byte(sp.internal+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	servers := filepath.Join(sp.state, "servers.yaml")
	// Two more upstreams tell who calls: a secret in the bridge's environment, and a token
	// the bridge has authsvc mint.
	identities := httpEntry("echo-static", sp.echoURL) + "    identity:\n      mode: static\n      secret_env: SPLIT_UPSTREAM_SECRET\n" +
		httpEntry("echo-jwt", sp.echoURL) + "    identity:\n      mode: gateway-jwt\n"
	if extra != nil {
		identities += extra(sp.echo, sp.echoURL)
	}
	if err := os.WriteFile(servers, []byte("servers:\n"+stdioEntry("echo-stdio", sp.echo)+httpEntry("echo-http", sp.echoURL)+identities), 0o600); err != nil {
		t.Fatal(err)
	}
	ingressNames := []string{"ingress"}
	for i := 2; i <= ingresses; i++ {
		ingressNames = append(ingressNames, fmt.Sprintf("ingress%d", i))
	}
	for _, s := range append([]string{"auth", "policy", "registry", "bridge", "audit"}, ingressNames...) {
		sp.addrs[s] = freeAddr(t)
	}
	c := etcd.Certs
	etcdFlags := []string{"-etcd-endpoints", etcd.Endpoint, "-etcd-ca-file", c.CA, "-etcd-cert-file", c.ClientCert, "-etcd-key-file", c.ClientKey}
	env := append(append(os.Environ(), "GATEHOUSE_INTERNAL_TOKEN_FILE="+tokenFile), moreEnv...)
	// Each process gets its address and peers from the environment, the rest from flags.
	type spec struct {
		name, bin string
		env       []string
		args      []string
	}
	specs := []spec{
		{"registrysvc", "registrysvc", []string{"GATEHOUSE_REGISTRY_LISTEN=" + sp.addrs["registry"]}, append([]string{"-servers", servers}, etcdFlags...)},
		{"authsvc", "authsvc", []string{"GATEHOUSE_AUTH_LISTEN=" + sp.addrs["auth"], "GATEHOUSE_AUTH_POLICY_ADDR=" + sp.addrs["policy"], "GATEHOUSE_BOOTSTRAP_ADMIN_TOKEN=" + sp.admin}, etcdFlags},
		{"policysvc", "policysvc", []string{"GATEHOUSE_POLICY_LISTEN=" + sp.addrs["policy"], "GATEHOUSE_POLICY_REGISTRY_ADDR=" + sp.addrs["registry"], "GATEHOUSE_POLICY_AUTH_ADDR=" + sp.addrs["auth"]},
			append([]string{"-policy-dir", filepath.Join(gatehousetest.RepoRoot(t), "examples", "policies")}, etcdFlags...)},
		{"bridgesvc", "bridgesvc", []string{"GATEHOUSE_BRIDGE_LISTEN=" + sp.addrs["bridge"], "GATEHOUSE_BRIDGE_REGISTRY_ADDR=" + sp.addrs["registry"],
			"GATEHOUSE_BRIDGE_AUTH_ADDR=" + sp.addrs["auth"], "GATEHOUSE_BRIDGE_AUDIT_ADDR=" + sp.addrs["audit"], "SPLIT_UPSTREAM_SECRET=split-secret-7f3a"}, append([]string{"-stdio-grace", "500ms"}, etcdFlags...)},
		// The audit log's checkpoints are signed with a key outside its directory and
		// anchored in etcd.
		{"auditsvc", "auditsvc", []string{"GATEHOUSE_AUDIT_LISTEN=" + sp.addrs["audit"], "GATEHOUSE_AUDIT_SIGNING_KEY_FILE=" + sp.auditKey(t)},
			append([]string{"-dir", filepath.Join(sp.state, "audit"), "-checkpoint-records", "20"}, etcdFlags...)},
	}
	for _, name := range ingressNames {
		specs = append(specs, spec{name, "ingress", []string{"GATEHOUSE_INGRESS_LISTEN=" + sp.addrs[name], "GATEHOUSE_INGRESS_AUTH_ADDR=" + sp.addrs["auth"],
			"GATEHOUSE_INGRESS_POLICY_ADDR=" + sp.addrs["policy"], "GATEHOUSE_INGRESS_REGISTRY_ADDR=" + sp.addrs["registry"],
			"GATEHOUSE_INGRESS_BRIDGE_ADDR=" + sp.addrs["bridge"], "GATEHOUSE_INGRESS_AUDIT_ADDR=" + sp.addrs["audit"]}, etcdFlags})
	}
	for _, s := range specs {
		cmd := exec.Command(filepath.Join(bins, s.bin), s.args...)
		cmd.Env = append(append([]string(nil), env...), s.env...)
		sp.procs[s.name] = sp.run(t, s.name, cmd)
		sp.order = append(sp.order, s.name)
	}
	// Every service serves once its "serving" line is out; one that exits (a port taken
	// between freeAddr and its bind, a refused etcd) fails the test with its log.
	for _, name := range sp.order {
		p := sp.procs[name]
		testsync.WaitFor(t, 60*time.Second, name+" to serve", func() bool {
			select {
			case <-p.done:
				t.Fatalf("%s exited before serving:\n%s", name, sp.allLogs())
			default:
			}
			return strings.Contains(p.logs.String(), `"msg":"serving"`)
		})
		if strings.Contains(p.logs.String(), "DEVELOPMENT MODE") {
			t.Errorf("%s started in development mode:\n%s", name, p.logs.String())
		}
	}
	// policysvc serves before its first registry snapshot, answering Unavailable until it
	// has one: the gateway is ready for hosts once a decision can be made.
	policy := policyv1connect.NewPolicyServiceClient(rpcserver.WithToken(rpcserver.NewClient(), sp.internal), rpcserver.BaseURL(sp.addrs["policy"]))
	testsync.WaitFor(t, 60*time.Second, "policysvc to have the registry", func() bool {
		_, err := policy.Check(context.Background(), connect.NewRequest(&policyv1.CheckRequest{
			Subject: &policyv1.Subject{Id: "probe", Tenant: "default", Kind: "user"}, Action: "initialize",
			Resource: &policyv1.Resource{Server: "echo-http"},
		}))
		return connect.CodeOf(err) != connect.CodeUnavailable
	})
	t.Logf("every service serving")
	return sp
}

// run starts cmd as the process name, logging into a buffer of its own; t.Cleanup kills it.
func (sp *split) run(t *testing.T, name string, cmd *exec.Cmd) *splitProc {
	t.Helper()
	p := &splitProc{name: name, logs: &testsync.Buffer{}, done: make(chan struct{}), cmd: cmd}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// restart starts the process name again, as it was started, once it has exited, and waits
// until it serves.
func (sp *split) restart(t *testing.T, name string) {
	t.Helper()
	old := sp.procs[name]
	<-old.done
	cmd := exec.Command(old.cmd.Path, old.cmd.Args[1:]...)
	cmd.Env = old.cmd.Env
	p := sp.run(t, name, cmd)
	sp.procs[name] = p
	testsync.WaitFor(t, 60*time.Second, name+" to serve again", func() bool {
		select {
		case <-p.done:
			t.Fatalf("%s exited before serving again:\n%s", name, p.logs.String())
		default:
		}
		return strings.Contains(p.logs.String(), `"msg":"serving"`)
	})
}

// auditKey mints the key that signs the audit log's checkpoints, outside the log's directory.
func (sp *split) auditKey(t *testing.T) string {
	t.Helper()
	path := filepath.Join(sp.state, "keys", "audit-signing.pem")
	if _, err := auditsvc.EnsureSigningKey(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSplitMode runs the six service binaries as separate processes on loopback against an
// etcd that requires TLS client certificates, the internal token given as a 0600 file: the
// official TypeScript SDK client calls a stdio and a Streamable HTTP upstream through the
// ingress binary, a session's DELETE reaps its stdio child, every call leaves an audit
// record, and SIGTERM stops every process with nothing left behind (bridgesvc reaps the child
// of a session still open before it exits).
func TestSplitMode(t *testing.T) {
	nodepeer.Node22(t)
	sp := startSplit(t, 1)
	procs, addrs, echo, state, allLogs := sp.procs, sp.addrs, sp.echo, sp.state, sp.allLogs
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	auth := authv1connect.NewAuthServiceClient(&http.Client{Transport: gatehousetest.BearerTransport{Token: sp.admin, Base: rpcserver.NewClient().Transport}}, rpcserver.BaseURL(addrs["auth"]))
	created, err := auth.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "dev", Tenant: "default", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER}))
	if err != nil {
		t.Fatalf("CreateToken: %v\n%s", err, allLogs())
	}
	token := created.Msg.GetToken()
	endpoint := func(server string) string { return sp.endpoint("ingress", server) }

	for _, server := range []string{"echo-stdio", "echo-http"} {
		t.Run("TypeScript SDK "+server, func(t *testing.T) {
			res, err := nodepeer.RunClient(t, ctx, "--url", endpoint(server), "--token", token, "--call", "echo", "--args", `{"text":"split mode"}`)
			if err != nil {
				t.Fatalf("TypeScript client: %v\n%s", err, allLogs())
			}
			tr, err := res.ToolResult()
			if err != nil || tr.IsError || tr.Text() != "split mode" {
				t.Fatalf("tools/call result %s (%v)", res.Call, err)
			}
		})
	}

	// A bundle applied to policysvc (through etcd) decides the calls that follow.
	t.Run("policy apply", func(t *testing.T) {
		stdout, stderr, err := gatehouseCLI(t, []string{"GATEHOUSE_ADMIN_TOKEN=" + sp.admin}, "policy", "apply",
			"--url", rpcserver.BaseURL(addrs["policy"]), filepath.Join(gatehousetest.RepoRoot(t), "examples", "policies"))
		if err != nil || !strings.HasPrefix(stdout, "applied sha256:") {
			t.Fatalf("apply: %v\n%s%s\n%s", err, stdout, stderr, allLogs())
		}
		// Through the RPC or its own watch, whichever comes first: a bundle from etcd has a revision.
		if logs := procs["policysvc"].logs.String(); !regexp.MustCompile(`"msg":"policy bundle active".*"rev":\d+`).MatchString(logs) {
			t.Fatalf("policysvc did not switch to the applied bundle:\n%s", logs)
		}
	})

	// Another team's service calls the policysvc binary with its own service token: its own
	// tenant only (authsvc says who it is, Cedar which tenants it may ask about).
	t.Run("policy Check with a service identity", func(t *testing.T) {
		svcTok, err := auth.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "billing-svc", Tenant: "default", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE}))
		if err != nil {
			t.Fatal(err)
		}
		policy := policyv1connect.NewPolicyServiceClient(&http.Client{Transport: gatehousetest.BearerTransport{Token: svcTok.Msg.GetToken(), Base: rpcserver.NewClient().Transport}}, rpcserver.BaseURL(addrs["policy"]))
		ask := func(tenant string) error {
			_, err := policy.Check(ctx, connect.NewRequest(&policyv1.CheckRequest{
				Subject: &policyv1.Subject{Id: "alice", Tenant: tenant, Kind: "user"}, Action: "tools/call",
				Resource: &policyv1.Resource{Server: "echo-http", Name: "echo"},
			}))
			return err
		}
		if err := ask("default"); err != nil {
			t.Fatalf("its own tenant: %v\n%s", err, allLogs())
		}
		if err := ask("research"); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("another tenant: %v, want PermissionDenied", err)
		}
	})

	t.Run("upstream identity", func(t *testing.T) {
		if got := whoami(t, allLogs, endpoint("echo-static"), token); got.Authorization != "Bearer split-secret-7f3a" {
			t.Fatalf("echo-static got Authorization %q, want the secret in the bridge's environment", got.Authorization)
		}
		got := whoami(t, allLogs, endpoint("echo-jwt"), token)
		if c, _ := verifyUpstreamToken(t, got.Authorization, gatewayJWKS(t, "http://"+addrs["ingress"]), sp.echoURL); c.Subject != "dev" || c.Tenant != "default" {
			t.Fatalf("echo-jwt: the token's claims %+v, want dev in default", c)
		}
	})

	bridgePid := procs["bridgesvc"].cmd.Process.Pid
	t.Run("DELETE reaps the stdio child", func(t *testing.T) {
		testsync.WaitFor(t, 15*time.Second, "earlier sessions' children to be gone", func() bool {
			return len(gatehousetest.ChildrenRunning(bridgePid, echo)) == 0
		})
		rc := rawClient{t: t, url: endpoint("echo-stdio"), token: token}
		sid := rc.initialize("2025-06-18")
		kids := gatehousetest.ChildrenRunning(bridgePid, echo)
		if len(kids) != 1 {
			t.Fatalf("want one echo child of bridgesvc, have %v", kids)
		}
		h := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
		if r := rc.post(echoCall, h); r.status != http.StatusOK || !strings.Contains(string(r.body), "still serving") {
			t.Fatalf("tools/call: %d %s", r.status, r.body)
		}
		if r := rc.do(http.MethodDelete, nil, h); r.status != http.StatusOK {
			t.Fatalf("DELETE: %d %s", r.status, r.body)
		}
		// The session TTL is 30 minutes: only the DELETE can end the child this soon.
		testsync.WaitFor(t, 15*time.Second, "the child to be reaped after DELETE", func() bool { return gatehousetest.ProcessGone(kids[0]) })
	})

	// A session left open: its stdio child is bridgesvc's to end when it stops.
	open := rawClient{t: t, url: endpoint("echo-stdio"), token: token}
	openSid := open.initialize("2025-06-18")
	if r := open.post(echoCall, map[string]string{"Mcp-Session-Id": openSid, "MCP-Protocol-Version": "2025-06-18"}); r.status != http.StatusOK || !strings.Contains(string(r.body), "still serving") {
		t.Fatalf("tools/call on the session left open: %d %s", r.status, r.body)
	}
	openKids := gatehousetest.ChildrenRunning(bridgePid, echo)
	if len(openKids) != 1 {
		t.Fatalf("want one echo child of bridgesvc for the open session, have %v", openKids)
	}

	t.Logf("stopping")
	// SIGTERM every process; each exits cleanly and leaves no child.
	for i := len(sp.order) - 1; i >= 0; i-- {
		p := procs[sp.order[i]]
		if p.name == "bridgesvc" && gatehousetest.ProcessGone(openKids[0]) {
			t.Fatalf("the open session's child %d ended before bridgesvc was stopped", openKids[0])
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not exit within 30s of SIGTERM:\n%s", p.name, p.logs.String())
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("%s exited %d:\n%s", p.name, code, p.logs.String())
		}
		// bridgesvc reaps its children before it exits: checked at once, not waited for (a
		// child left to its parent-death signal would still be there, or a zombie).
		if p.name == "bridgesvc" && !gatehousetest.ProcessGone(openKids[0]) {
			t.Errorf("the open session's child %d outlived bridgesvc's exit", openKids[0])
		}
	}

	t.Logf("stopped")
	// The audit log verifies.
	verifyAudit(t, state)
	// Each call has its own outcome record: the SDK's call on each server, and on echo-stdio
	// the DELETE subtest's call and the open session's.
	calls := auditedCalls(auditRecords(t, state))
	if calls["echo-stdio"] != 3 || calls["echo-http"] != 1 {
		t.Fatalf("allowed tools/call of echo by dev per server in the audit log: %v, want echo-stdio 3, echo-http 1", calls)
	}
	if _, err := net.DialTimeout("tcp", addrs["ingress"], time.Second); err == nil {
		t.Error("the ingress port still accepts after SIGTERM")
	}
}

// auditedCalls counts, per server, the calls (distinct call ids) whose outcome record says
// dev's tools/call of echo was allowed.
func auditedCalls(records []auditRecord) map[string]int {
	ids := map[string]map[string]bool{}
	for _, r := range records {
		if r.Principal == "dev" && r.Tenant == "default" && r.Method == "tools/call" && r.Tool == "echo" &&
			r.Phase == "PHASE_OUTCOME" && r.Outcome == "OUTCOME_ALLOWED" && r.CallID != "" {
			if ids[r.Server] == nil {
				ids[r.Server] = map[string]bool{}
			}
			ids[r.Server][r.CallID] = true
		}
	}
	counts := map[string]int{}
	for server, set := range ids {
		counts[server] = len(set)
	}
	return counts
}

// freeAddr returns a loopback address that was free a moment ago. A service that loses the
// port to another process before binding it exits, which the test reports with its log.
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := procnet.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
