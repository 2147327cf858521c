package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
)

const examplePolicies = "../../examples/policies"

// runPolicy runs `gatehouse policy args...` and returns its stdout, stderr and error.
func runPolicy(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), append([]string{"policy"}, args...), func(k string) string { return env[k] }, &out, &errOut)
	return out.String(), errOut.String(), err
}

// policyDir writes a policy directory: the shipped schema plus files (name → content).
func policyDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	schema, err := os.ReadFile(filepath.Join(examplePolicies, "gatehouse.cedarschema"))
	if err != nil {
		t.Fatal(err)
	}
	files["gatehouse.cedarschema"] = string(schema)
	for name, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func examplePolicy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(examplePolicies, "default.cedar"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// unknownAttribute is a policy using an attribute the schema does not declare, its @id on
// line 3 of its file.
const unknownAttribute = "// Servers belong to their tenant's owner.\n\n@id(\"owner-only\")\npermit (principal, action == Gatehouse::Action::\"initialize\", resource is Gatehouse::Server)\nwhen { resource.owner == principal.tenant };\n"

// forbidEcho forbids the echo tool of the echo server, which default.cedar permits.
const forbidEcho = `@id("no-echo")
forbid (principal, action == Gatehouse::Action::"tools/call", resource == Gatehouse::Tool::"echo/echo");
`

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	t.Run("examples", func(t *testing.T) {
		stdout, stderr, err := runPolicy(t, nil, "validate", examplePolicies)
		if err != nil || !strings.Contains(stdout, "valid against the schema; version sha256:") {
			t.Fatalf("err %v\nstdout %s\nstderr %s", err, stdout, stderr)
		}
	})
	t.Run("attribute the schema lacks", func(t *testing.T) {
		dir := policyDir(t, map[string]string{"default.cedar": examplePolicy(t), "owner.cedar": unknownAttribute})
		_, stderr, err := runPolicy(t, nil, "validate", dir)
		if err == nil {
			t.Fatal("validate passed")
		}
		// FILE:LINE:COL: message, the file named as the operator gave the directory.
		want := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(filepath.Join(dir, "owner.cedar")) + `:3:1: .*attribute .owner. on entity type .Gatehouse::Server. not found$`)
		if !want.MatchString(stderr) {
			t.Fatalf("stderr does not place the error at owner.cedar:3:1:\n%s", stderr)
		}
	})
	t.Run("syntax error", func(t *testing.T) {
		dir := policyDir(t, map[string]string{"bad.cedar": "permit (principal, action, resource)\nwhen { 1 + };\n"})
		_, stderr, err := runPolicy(t, nil, "validate", dir)
		if err == nil || !strings.Contains(stderr, filepath.Join(dir, "bad.cedar")+":2:13: ") {
			t.Fatalf("err %v, stderr %s; want bad.cedar:2:13", err, stderr)
		}
	})
	t.Run("no schema", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "a.cedar"), []byte(examplePolicy(t)), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, stderr, err := runPolicy(t, nil, "validate", dir); err == nil || !strings.Contains(stderr, "no .cedarschema") {
			t.Fatalf("err %v, stderr %s; want a refusal naming the missing schema", err, stderr)
		}
	})
	t.Run("usage", func(t *testing.T) {
		if _, _, err := runPolicy(t, nil, "validate"); err == nil {
			t.Fatal("validate without a directory passed")
		}
		if _, _, err := runPolicy(t, nil, "validate", "a", "b"); err == nil {
			t.Fatal("validate with two directories passed")
		}
		if _, stderr, err := runPolicy(t, nil, "apply", "-h"); err != nil || !strings.Contains(stderr, "--url") && !strings.Contains(stderr, "-url") {
			t.Fatalf("apply -h: %v\n%s", err, stderr)
		}
	})
}

func TestPolicyTest(t *testing.T) {
	t.Parallel()
	t.Run("examples pass", func(t *testing.T) {
		stdout, stderr, err := runPolicy(t, nil, "test", examplePolicies)
		if err != nil || !strings.Contains(stdout, "cases passed") || strings.Contains(stdout, "FAIL") {
			t.Fatalf("err %v\nstdout %s\nstderr %s", err, stdout, stderr)
		}
	})
	t.Run("wrong expectation fails", func(t *testing.T) {
		dir := policyDir(t, map[string]string{"default.cedar": examplePolicy(t), "tests/cases.yaml": `
- name: dev calls echo
  principal: {id: dev, tenant: default}
  action: tools/call
  resource: {server: echo, tool: echo, tenants: [default]}
  expect: deny
- name: another tenant is refused
  principal: {id: eve, tenant: other}
  action: tools/call
  resource: {server: echo, tool: echo, tenants: [default]}
  expect: deny
`})
		stdout, _, err := runPolicy(t, nil, "test", dir)
		if err == nil {
			t.Fatalf("a wrong expectation passed:\n%s", stdout)
		}
		for _, want := range []string{"FAIL " + filepath.Join(dir, "tests", "cases.yaml") + ":2 dev calls echo: want deny, got allow",
			"policies: tenant-may-call-tools-on-approved-servers", "1 of 2 cases failed"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, stdout)
			}
		}
		if strings.Contains(stdout, "another tenant is refused") {
			t.Errorf("a passing case is reported:\n%s", stdout)
		}
	})
	t.Run("fixtures elsewhere", func(t *testing.T) {
		fixtures := t.TempDir()
		if err := os.WriteFile(filepath.Join(fixtures, "x.yaml"), []byte("- name: x\n  principal: {id: a, tenant: t}\n  action: initialize\n  resource: {server: s, tenants: [t]}\n  expect: allow\n  policies: [tenant-may-initialize-approved-servers]\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if stdout, stderr, err := runPolicy(t, nil, "test", examplePolicies, "--fixtures", fixtures); err != nil || !strings.Contains(stdout, "ok: 1 cases passed") {
			t.Fatalf("err %v\nstdout %s\nstderr %s", err, stdout, stderr)
		}
	})
	t.Run("invalid bundle", func(t *testing.T) {
		dir := policyDir(t, map[string]string{"owner.cedar": unknownAttribute})
		if _, stderr, err := runPolicy(t, nil, "test", dir); err == nil || !strings.Contains(stderr, "owner.cedar:3:1:") {
			t.Fatalf("err %v, stderr %s", err, stderr)
		}
	})
}

func TestPolicyExplain(t *testing.T) {
	t.Parallel()
	dir := policyDir(t, map[string]string{"default.cedar": examplePolicy(t), "echo.cedar": forbidEcho})
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"forbidden", []string{"--resource", "echo/echo"}, []string{"decision: deny", "policies: no-echo"}},
		{"permitted", []string{"--resource", "echo/add"}, []string{"decision: allow", "policies: tenant-may-call-tools-on-approved-servers"}},
		{"server of another tenant", []string{"--resource", "echo/add", "--server-tenants", "acme,globex"}, []string{"decision: deny", "denied by default", "approved for [acme, globex]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"explain", "--dir", dir, "--principal", "dev", "--tenant", "default", "--groups", "a,b", "--action", "tools/call"}, tt.args...)
			stdout, stderr, err := runPolicy(t, nil, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
	for _, bad := range [][]string{
		{"--resource", "echo/echo", "--context", `{"x": 1}`},            // the schema's context is empty
		{"--resource", "echo/echo", "--context", `[1]`},                 // not an object
		{"--resource", "echo/echo", "--context", `{} {}`},               // two values
		{"--resource", "/echo"},                                         // no server
		{"--resource", "echo/echo", "--kind", strings.Repeat("k", 100)}, // over policysvc's bound
	} {
		args := append([]string{"explain", "--dir", dir, "--principal", "dev", "--tenant", "default", "--action", "tools/call"}, bad...)
		if stdout, _, err := runPolicy(t, nil, args...); err == nil {
			t.Errorf("explain %q passed:\n%s", bad, stdout)
		}
	}
	if _, _, err := runPolicy(t, nil, "explain", "--dir", dir, "--tenant", "default", "--action", "tools/call", "--resource", "echo"); err == nil || !strings.Contains(err.Error(), "--principal") {
		t.Errorf("explain without --principal: %v", err)
	}
}

// TestPolicyApply applies through a real policysvc on a real etcd, behind a stand-in for the
// operator's authentication (operatorOnly): an applied bundle decides at once, an invalid one is refused
// with its problems at DIR/FILE:LINE and the applied one stays, and no credential is no call.
func TestPolicyApply(t *testing.T) {
	t.Parallel()
	etcd, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	svc, err := policysvc.New(policysvc.Config{PolicyDir: examplePolicies, KeyPrefix: etcdtest.Prefix(t)},
		catalog.Static(&registryv1.Server{Name: "echo", Tenants: []string{"default"}}), etcd.Client, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	const token = "admin-token-0123456789"
	srv := httptest.NewServer(operatorOnly(token, rpcserver.NewMux(svc.Handlers()...)))
	t.Cleanup(srv.Close)
	env := map[string]string{"GATEHOUSE_URL": srv.URL, "GATEHOUSE_ADMIN_TOKEN": token}

	dir := policyDir(t, map[string]string{"default.cedar": examplePolicy(t), "echo.cedar": forbidEcho})
	stdout, stderr, err := runPolicy(t, env, "apply", dir)
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, stderr)
	}
	version := svc.BundleVersion()
	files, err := cedarpolicy.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing was applied before; the directory is not in git, so no commit is named.
	if want := cedarpolicy.Digest(files); version != want || stdout != "applied "+want+"\n" {
		t.Fatalf("active %s, stdout %q; want %s applied", version, stdout, want)
	}

	bad := policyDir(t, map[string]string{"default.cedar": examplePolicy(t), "owner.cedar": unknownAttribute})
	_, stderr, err = runPolicy(t, map[string]string{"GATEHOUSE_ADMIN_TOKEN": token}, "apply", bad, "--url", srv.URL)
	if err == nil || !strings.Contains(stderr, filepath.Join(bad, "owner.cedar")+":3:1:") || !strings.Contains(err.Error(), "active bundle stays") {
		t.Fatalf("apply of an invalid bundle: %v\n%s", err, stderr)
	}
	if svc.BundleVersion() != version {
		t.Fatalf("after a refused apply the active bundle is %s, want %s", svc.BundleVersion(), version)
	}

	if _, _, err := runPolicy(t, map[string]string{"GATEHOUSE_URL": srv.URL}, "apply", dir); err == nil || !strings.Contains(err.Error(), "GATEHOUSE_ADMIN_TOKEN") {
		t.Fatalf("apply without a credential: %v", err)
	}
	if _, _, err := runPolicy(t, map[string]string{"GATEHOUSE_URL": srv.URL, "GATEHOUSE_ADMIN_TOKEN": "wrong-token-0123456789"}, "apply", dir); err == nil || !strings.Contains(err.Error(), "unauthenticated") {
		t.Fatalf("apply with a wrong credential: %v", err)
	}
}

// TestGitCommit: a directory in a git work tree is named by its commit, and marked dirty
// while it has changes; outside git there is no commit.
func TestGitCommit(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	ctx := context.Background()
	if got := gitCommit(ctx, t.TempDir()); got != "" {
		t.Fatalf("outside git: %q", got)
	}
	repo := t.TempDir()
	policies := filepath.Join(repo, "policies")
	if err := os.Mkdir(policies, 0o700); err != nil {
		t.Fatal(err)
	}
	gitRun := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_SYSTEM=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	gitRun("init", "-q")
	if err := os.WriteFile(filepath.Join(policies, "a.cedar"), []byte(forbidEcho), 0o600); err != nil {
		t.Fatal(err)
	}
	gitRun("add", ".")
	gitRun("commit", "-q", "-m", "policies")
	head := gitRun("rev-parse", "HEAD")
	if got := gitCommit(ctx, policies); got != head {
		t.Fatalf("clean: %q, want %q", got, head)
	}
	if err := os.WriteFile(filepath.Join(policies, "a.cedar"), []byte(forbidEcho+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := gitCommit(ctx, policies); got != head+"-dirty" {
		t.Fatalf("changed: %q, want %q", got, head+"-dirty")
	}
}

// TestPolicyDocExamples: the Cedar policies in docs/policy.md validate against the shipped
// schema, and its fixture cases parse and pass against the shipped policies.
func TestPolicyDocExamples(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```(cedar|yaml)\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	var cedarN, yamlN int
	for i, b := range blocks {
		switch b[1] {
		case "cedar":
			cedarN++
			dir := policyDir(t, map[string]string{"doc.cedar": b[2]})
			if _, stderr, err := runPolicy(t, nil, "validate", dir); err != nil {
				t.Errorf("block %d does not validate: %v\n%s", i, err, stderr)
			}
		case "yaml":
			yamlN++
			dir := policyDir(t, map[string]string{"default.cedar": examplePolicy(t), "tests/doc.yaml": b[2]})
			if stdout, stderr, err := runPolicy(t, nil, "test", dir); err != nil {
				t.Errorf("block %d: %v\n%s%s", i, err, stdout, stderr)
			}
		}
	}
	if cedarN == 0 || yamlN == 0 {
		t.Fatalf("found %d cedar and %d yaml blocks", cedarN, yamlN)
	}
}

// TestPolicyBundleLimits: validate and apply refuse a bundle larger than policysvc takes,
// before anything is sent.
func TestPolicyBundleLimits(t *testing.T) {
	t.Parallel()
	dir := policyDir(t, map[string]string{"default.cedar": examplePolicy(t), "big.cedar": "// " + strings.Repeat("x", policysvc.MaxBundleBytes) + "\n"})
	if _, _, err := runPolicy(t, nil, "validate", dir); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("validate: %v", err)
	}
	env := map[string]string{"GATEHOUSE_URL": "http://127.0.0.1:1", "GATEHOUSE_ADMIN_TOKEN": "admin-token-0123456789"}
	if _, _, err := runPolicy(t, env, "apply", dir); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("apply: %v", err)
	}
}
