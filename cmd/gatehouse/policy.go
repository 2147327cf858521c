package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
	"github.com/gatehouse-mcp/gatehouse/policysvc/fixtures"
)

const (
	adminRPCTimeout = 60 * time.Second
	gitTimeout      = 10 * time.Second
)

const policyUsage = `usage: gatehouse policy <command> [flags]

Write, check and roll out the Cedar policies policysvc decides by (docs/policy.md).

commands:
  validate DIR        parse every DIR/*.cedar and the DIR/*.cedarschema, and validate every
                      policy against the schema; problems print as FILE:LINE:COL: message
  test [--fixtures FIXTURES] DIR
                      run the cases in FIXTURES (default DIR/tests) against DIR's bundle,
                      exactly as policysvc decides a call; print each failure
  explain --dir DIR --principal ID --tenant T [--groups a,b] [--kind user] --action A
          --resource SERVER[/NAME] [--server-tenants a,b] [--context JSON]
                      print the decision of one request, the policies that decided it and
                      any evaluation errors
  apply [--url URL] DIR
                      validate DIR's bundle on the gateway and make it the active one on
                      every policysvc replica, without a restart; an invalid bundle is
                      refused and the active one stays

Every command exits 1 when something is wrong. apply talks to the gateway at --url (default
$GATEHOUSE_URL, else ` + defaultURL + `) with the admin credential from
$GATEHOUSE_ADMIN_TOKEN or the file $GATEHOUSE_ADMIN_TOKEN_FILE names: an operator's own
credential, sent as a bearer token; Cedar decides (admin/policy.apply on the gateway). The
internal token alone opens no admin RPC.`

// policyCmd runs `gatehouse policy ...`.
func policyCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, policyUsage)
		return errors.New("policy: no command")
	}
	var err error
	switch args[0] {
	case "validate":
		err = policyValidate(args[1:], stdout, stderr)
	case "test":
		err = policyTest(args[1:], stdout, stderr)
	case "explain":
		err = policyExplain(args[1:], stdout, stderr)
	case "apply":
		err = policyApply(ctx, args[1:], getenv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, policyUsage)
		return nil
	default:
		fmt.Fprintln(stderr, policyUsage)
		return fmt.Errorf("policy: unknown command %q", args[0])
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h printed the command's usage
	}
	return err
}

// parseArgs parses flags that may come before or after the positional arguments (`apply DIR
// --url URL` as well as `apply --url URL DIR`) and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// oneDir parses args for a command that takes one directory.
func oneDir(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		fs.Usage()
		return "", fmt.Errorf("%s: want one directory, got %d arguments", fs.Name(), len(pos))
	}
	return pos[0], nil
}

func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gatehouse policy "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: gatehouse policy %s\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// loadBundle reads and builds DIR's bundle, and returns its files too; problems print as
// DIR/FILE:LINE:COL: message.
func loadBundle(dir string, stderr io.Writer) (*cedarpolicy.Bundle, []cedarpolicy.File, error) {
	files, err := cedarpolicy.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	b, err := cedarpolicy.New(files)
	if err == nil {
		return b, files, nil
	}
	var perr *cedarpolicy.Error
	if !errors.As(err, &perr) {
		return nil, nil, err
	}
	printProblems(stderr, dir, perr.Problems)
	if len(perr.Problems) == 1 {
		return nil, nil, fmt.Errorf("%s: 1 problem (listed above)", dir)
	}
	return nil, nil, fmt.Errorf("%s: %d problems (listed above)", dir, len(perr.Problems))
}

// checkApplyLimits refuses a bundle policysvc would refuse for its size alone.
func checkApplyLimits(dir string, files []cedarpolicy.File) error {
	if len(files) > policysvc.MaxBundleFiles {
		return fmt.Errorf("%s: %d files; an applied bundle has at most %d", dir, len(files), policysvc.MaxBundleFiles)
	}
	total := 0
	for _, f := range files {
		total += len(f.Name) + len(f.Content)
	}
	if total > policysvc.MaxBundleBytes {
		return fmt.Errorf("%s: %d bytes; an applied bundle has at most %d", dir, total, policysvc.MaxBundleBytes)
	}
	return nil
}

func printProblems(w io.Writer, dir string, problems []cedarpolicy.Problem) {
	for _, p := range problems {
		if p.File != "" {
			p.File = filepath.Join(dir, p.File)
		}
		fmt.Fprintln(w, p.String())
	}
}

func policyValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", "validate DIR", stderr)
	dir, err := oneDir(fs, args)
	if err != nil {
		return err
	}
	b, files, err := loadBundle(dir, stderr)
	if err != nil {
		return err
	}
	if !b.Validated() {
		fmt.Fprintf(stderr, "%s: no %s file: the policies parse, but there is nothing to validate them against\n", dir, cedarpolicy.SchemaExt)
		return fmt.Errorf("%s: no schema", dir)
	}
	if err := checkApplyLimits(dir, files); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d policies in %d policy files, valid against the schema; version %s\n", dir, b.Len(), len(b.Files())-1, b.Version())
	return nil
}

func policyTest(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("test", "test [--fixtures FIXTURES] DIR", stderr)
	fixturesDir := fs.String("fixtures", "", "directory of *.yaml case files (default DIR/tests)")
	dir, err := oneDir(fs, args)
	if err != nil {
		return err
	}
	if *fixturesDir == "" {
		*fixturesDir = filepath.Join(dir, "tests")
	}
	b, _, err := loadBundle(dir, stderr)
	if err != nil {
		return err
	}
	cases, err := fixtures.ReadDir(*fixturesDir)
	if err != nil {
		return err
	}
	if len(cases) == 0 {
		return fmt.Errorf("%s: no cases", *fixturesDir)
	}
	failed := 0
	for _, r := range fixtures.Run(b, cases) {
		if r.Passed() {
			continue
		}
		failed++
		c := r.Case
		if r.Err != nil {
			fmt.Fprintf(stdout, "FAIL %s %s: %v\n", c.Where(), c.Name, r.Err)
			continue
		}
		fmt.Fprintf(stdout, "FAIL %s %s: %s\n", c.Where(), c.Name, r.Failure)
		printDecision(stdout, "     ", r.Got)
	}
	if failed > 0 {
		fmt.Fprintf(stdout, "FAIL: %d of %d cases failed (bundle %s)\n", failed, len(cases), b.Version())
		return fmt.Errorf("%d of %d cases failed", failed, len(cases))
	}
	fmt.Fprintf(stdout, "ok: %d cases passed (bundle %s)\n", len(cases), b.Version())
	return nil
}

// printDecision writes the decision, the deciding policies and the evaluation errors.
func printDecision(w io.Writer, indent string, d *policyv1.CheckResponse) {
	decision := "deny"
	if d.GetDecision() == policyv1.Decision_DECISION_ALLOW {
		decision = "allow"
	}
	ids := strings.Join(d.GetPolicyIds(), ", ")
	if ids == "" {
		ids = "(none: no policy permits it, so it is denied by default)"
		if decision == "allow" {
			ids = "(none)"
		}
	}
	fmt.Fprintf(w, "%sdecision: %s\n%spolicies: %s\n", indent, decision, indent, ids)
	for _, e := range d.GetErrors() {
		fmt.Fprintf(w, "%serror:    %s\n", indent, e)
	}
}

// maxContextBytes bounds --context.
const maxContextBytes = 64 << 10

func policyExplain(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("explain", "explain --dir DIR --principal ID --tenant T [--groups a,b] --action A --resource SERVER[/NAME] [--context JSON]", stderr)
	dir := fs.String("dir", "", "the policy directory (required)")
	principal := fs.String("principal", "", "the principal's id (required)")
	tenant := fs.String("tenant", "", "the principal's tenant (required)")
	groups := fs.String("groups", "", "the principal's groups, comma-separated")
	kind := fs.String("kind", "user", "the principal's kind: user, service or anonymous")
	action := fs.String("action", "", "the MCP method, e.g. tools/call (required)")
	resource := fs.String("resource", "", "SERVER, or SERVER/NAME for a tool, resource URI or prompt (required)")
	serverTenants := fs.String("server-tenants", "", "the tenants the server is approved for, comma-separated (default: the principal's tenant)")
	contextJSON := fs.String("context", "", "the Cedar context, a JSON object in Cedar's JSON value form")
	if pos, err := parseArgs(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		fs.Usage()
		return fmt.Errorf("explain: unexpected arguments %q", pos)
	}
	for name, v := range map[string]string{"dir": *dir, "principal": *principal, "tenant": *tenant, "action": *action, "resource": *resource} {
		if v == "" {
			fs.Usage()
			return fmt.Errorf("explain: --%s is required", name)
		}
	}
	server, name, _ := strings.Cut(*resource, "/")
	if server == "" {
		return fmt.Errorf("explain: --resource %q names no server", *resource)
	}
	var ctxMap map[string]any
	if *contextJSON != "" {
		if len(*contextJSON) > maxContextBytes {
			return fmt.Errorf("explain: --context is longer than %d bytes", maxContextBytes)
		}
		dec := json.NewDecoder(strings.NewReader(*contextJSON))
		dec.UseNumber()
		if err := dec.Decode(&ctxMap); err != nil {
			return fmt.Errorf("explain: --context: %w", err)
		}
		if dec.More() {
			return errors.New("explain: --context: more than one JSON value")
		}
	}
	rec, err := fixtures.ContextRecord(ctxMap)
	if err != nil {
		return fmt.Errorf("explain: --%w", err)
	}
	tenants := splitList(*serverTenants)
	if *serverTenants == "" {
		tenants = []string{*tenant}
	}
	b, _, err := loadBundle(*dir, stderr)
	if err != nil {
		return err
	}
	req := &policyv1.CheckRequest{
		Subject:  &policyv1.Subject{Id: *principal, Tenant: *tenant, Groups: splitList(*groups), Kind: *kind},
		Action:   *action,
		Resource: &policyv1.Resource{Server: server, Name: name},
	}
	d, err := policysvc.Evaluate(b, catalog.Static(&registryv1.Server{Name: server, Tenants: tenants}), req, rec, time.Now())
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	fmt.Fprintf(stdout, "request:  %s %s on %s by %s (tenant %s, kind %s, groups [%s]); server approved for [%s]\n",
		*action, orDash(name), server, *principal, *tenant, *kind, strings.Join(splitList(*groups), ", "), strings.Join(tenants, ", "))
	fmt.Fprintf(stdout, "bundle:   %s\n", b.Version())
	printDecision(stdout, "", d)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func policyApply(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("apply", "apply [--url URL] DIR", stderr)
	url := fs.String("url", "", "the gateway (default $"+gatewayURLEnv+", else "+defaultURL+")")
	dir, err := oneDir(fs, args)
	if err != nil {
		return err
	}
	base, hc, err := adminClient("apply", *url, getenv, adminRPCTimeout)
	if err != nil {
		return err
	}
	files, err := cedarpolicy.ReadDir(dir)
	if err != nil {
		return err
	}
	if err := checkApplyLimits(dir, files); err != nil {
		return err
	}
	bundle := &policyv1.Bundle{Version: cedarpolicy.Digest(files), GitCommit: gitCommit(ctx, dir)}
	for _, f := range files {
		bundle.Files = append(bundle.Files, &policyv1.BundleFile{Name: f.Name, Content: f.Content})
	}
	client := policyv1connect.NewPolicyServiceClient(hc, base)
	resp, err := client.ApplyBundle(ctx, connect.NewRequest(&policyv1.ApplyBundleRequest{Bundle: bundle}))
	if err != nil {
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			// The gateway's validation names files by base name: print them as DIR/FILE.
			fmt.Fprintln(stderr, prefixFiles(connectMessage(err), dir, files))
			return fmt.Errorf("apply: %s refused the bundle (the reasons are listed above); the active bundle stays", base)
		}
		return fmt.Errorf("apply: %w", err)
	}
	commit := ""
	if bundle.GitCommit != "" {
		commit = " (git " + bundle.GitCommit + ")"
	}
	prev := resp.Msg.GetPreviousVersion()
	switch {
	case prev == resp.Msg.GetVersion():
		fmt.Fprintf(stdout, "applied %s%s: unchanged, it was already the applied bundle\n", resp.Msg.GetVersion(), commit)
	case prev == "":
		fmt.Fprintf(stdout, "applied %s%s\n", resp.Msg.GetVersion(), commit)
	default:
		fmt.Fprintf(stdout, "applied %s%s, replacing %s\n", resp.Msg.GetVersion(), commit, prev)
	}
	return nil
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// prefixFiles puts dir/ before each line of msg that starts with the name of a bundle file.
func prefixFiles(msg, dir string, files []cedarpolicy.File) string {
	lines := strings.Split(msg, "\n")
	for i, line := range lines {
		for _, f := range files {
			if strings.HasPrefix(line, f.Name+":") {
				lines[i] = filepath.Join(dir, line)
				break
			}
		}
	}
	return strings.Join(lines, "\n")
}

// gitCommit is the commit DIR's work tree is at, with "-dirty" when DIR has uncommitted
// changes (tracked or not), or "" when DIR is not in a git repository or git is not there.
func gitCommit(ctx context.Context, dir string) string {
	ctx, cancel := context.WithTimeout(ctx, gitTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	commit := string(bytes.TrimSpace(out))
	status, err := exec.CommandContext(ctx, "git", "-C", dir, "status", "--porcelain", "--", ".").Output()
	if err != nil || len(bytes.TrimSpace(status)) > 0 {
		commit += "-dirty"
	}
	return commit
}
