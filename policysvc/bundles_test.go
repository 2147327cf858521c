package policysvc_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
	"google.golang.org/protobuf/proto"
)

var shared *etcdtest.Etcd

func TestMain(m *testing.M) { os.Exit(etcdtest.Main(m, &shared)) }

// forbidFilesRead is a policy that turns alice's allowed tools/call of files/read into a deny.
const forbidFilesRead = `
@id("no-files-read")
forbid (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.name == "read" };
`

// replica is one policysvc sharing etcd with others under prefix.
func replica(t *testing.T, cfg policysvc.Config, kv policysvc.Etcd, logs *testsync.Buffer) *policysvc.Service {
	t.Helper()
	if cfg.PolicyDir == "" {
		cfg.PolicyDir = writeDir(t, map[string]string{"gatehouse.cedarschema": shippedSchema(t), "test.cedar": testPolicies})
	}
	var logger *slog.Logger
	if logs != nil {
		logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	svc, err := policysvc.New(cfg, testCatalog(), kv, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

// bundleOf is an ApplyBundle request of the shipped schema and the given policy files.
func bundleOf(t *testing.T, policies map[string]string) *policyv1.Bundle {
	t.Helper()
	b := &policyv1.Bundle{Files: []*policyv1.BundleFile{{Name: "gatehouse.cedarschema", Content: []byte(shippedSchema(t))}}}
	for name, content := range policies {
		b.Files = append(b.Files, &policyv1.BundleFile{Name: name, Content: []byte(content)})
	}
	return b
}

func apply(svc *policysvc.Service, b *policyv1.Bundle) (*policyv1.ApplyBundleResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := svc.ApplyBundle(ctx, connect.NewRequest(&policyv1.ApplyBundleRequest{Bundle: b}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// aliceReads is alice's tools/call of files/read, allowed by testPolicies.
func aliceReads(t *testing.T, svc *policysvc.Service) *policyv1.CheckResponse {
	t.Helper()
	resp, err := check(svc, &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "tools/call", Resource: &policyv1.Resource{Server: "files", Name: "read"}})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// storedVersion is the version of the bundle etcd holds under prefix, "" when none.
func storedVersion(t *testing.T, prefix string) string {
	t.Helper()
	resp, err := shared.Client.Get(context.Background(), prefix+"bundle")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	var b policyv1.Bundle
	if err := proto.Unmarshal(resp.Kvs[0].Value, &b); err != nil {
		t.Fatal(err)
	}
	return b.GetVersion()
}

// TestApplySwitchesEveryReplica: a bundle applied through one replica decides there as soon
// as ApplyBundle returns, and on another replica (through its watch) without a restart; a
// replica started later starts with it rather than with its directory.
func TestApplySwitchesEveryReplica(t *testing.T) {
	t.Parallel()
	prefix := etcdtest.Prefix(t)
	one := replica(t, policysvc.Config{KeyPrefix: prefix}, shared.Client, nil)
	two := replica(t, policysvc.Config{KeyPrefix: prefix}, shared.Client, nil)
	dirVersion := one.BundleVersion()
	if storedVersion(t, prefix) != "" {
		t.Fatal("a replica stored its directory without ApplyDir")
	}
	for _, svc := range []*policysvc.Service{one, two} {
		if got := aliceReads(t, svc); got.GetDecision() != policyv1.Decision_DECISION_ALLOW {
			t.Fatalf("before the apply: %v", got)
		}
	}

	in := bundleOf(t, map[string]string{"test.cedar": testPolicies, "forbid.cedar": forbidFilesRead})
	in.GitCommit = "0123456789abcdef0123456789abcdef01234567-dirty"
	resp, err := apply(one, in)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	want := digestOf(in)
	if resp.GetVersion() != want || resp.GetPreviousVersion() != "" {
		t.Fatalf("apply answered %v, want version %s and no previous one", resp, want)
	}
	if got := aliceReads(t, one); got.GetDecision() != policyv1.Decision_DECISION_DENY || got.GetBundleVersion() != want || !slicesEqual(got.GetPolicyIds(), "no-files-read") {
		t.Fatalf("the applying replica after the apply: %v, want a deny by no-files-read under %s", got, want)
	}
	testsync.WaitFor(t, 10*time.Second, "the other replica to switch", func() bool { return two.BundleVersion() == want })
	if got := aliceReads(t, two); got.GetDecision() != policyv1.Decision_DECISION_DENY || !slicesEqual(got.GetPolicyIds(), "no-files-read") {
		t.Fatalf("the other replica after the switch: %v", got)
	}
	if storedVersion(t, prefix) != want {
		t.Fatalf("etcd holds %s, want %s", storedVersion(t, prefix), want)
	}

	// A replica that starts now decides by the stored bundle, not by its directory.
	three := replica(t, policysvc.Config{KeyPrefix: prefix}, shared.Client, nil)
	if three.BundleVersion() != want {
		t.Fatalf("a new replica starts with %s, want the stored %s (its directory is %s)", three.BundleVersion(), want, dirVersion)
	}
	// With ApplyDir its directory is applied instead, and the others follow.
	four := replica(t, policysvc.Config{KeyPrefix: prefix, ApplyDir: true}, shared.Client, nil)
	if four.BundleVersion() != dirVersion || storedVersion(t, prefix) != dirVersion {
		t.Fatalf("ApplyDir: replica %s, etcd %s, want the directory's %s", four.BundleVersion(), storedVersion(t, prefix), dirVersion)
	}
	for _, svc := range []*policysvc.Service{one, two, three} {
		testsync.WaitFor(t, 10*time.Second, "replicas to follow the applied directory", func() bool { return svc.BundleVersion() == dirVersion })
	}
	// Applying the same files again is harmless: the same version, named as the previous one.
	again := bundleOf(t, map[string]string{"test.cedar": testPolicies})
	if resp, err := apply(two, again); err != nil || resp.GetVersion() != dirVersion || resp.GetPreviousVersion() != dirVersion {
		t.Fatalf("re-apply: %v, %v", resp, err)
	}
}

func digestOf(b *policyv1.Bundle) string {
	files := make([]cedarpolicy.File, len(b.GetFiles()))
	for i, f := range b.GetFiles() {
		files[i] = cedarpolicy.File{Name: f.GetName(), Content: f.GetContent()}
	}
	nb, err := cedarpolicy.New(files)
	if err != nil {
		panic(err)
	}
	return nb.Version()
}

func slicesEqual(got []string, want ...string) bool {
	return strings.Join(got, "\x00") == strings.Join(want, "\x00")
}

// TestApplyRefusesInvalidBundles: each bad bundle is refused with InvalidArgument and a
// message naming what is wrong (a schema error at its file and line), nothing is stored, and
// both replicas keep deciding by the bundle they had.
func TestApplyRefusesInvalidBundles(t *testing.T) {
	t.Parallel()
	prefix := etcdtest.Prefix(t)
	one := replica(t, policysvc.Config{KeyPrefix: prefix}, shared.Client, nil)
	two := replica(t, policysvc.Config{KeyPrefix: prefix}, shared.Client, nil)
	good := bundleOf(t, map[string]string{"test.cedar": testPolicies})
	if _, err := apply(one, good); err != nil {
		t.Fatal(err)
	}
	version := digestOf(good)
	testsync.WaitFor(t, 10*time.Second, "the other replica to take the good bundle", func() bool { return two.BundleVersion() == version })

	schema := []byte(shippedSchema(t))
	big := make([]*policyv1.BundleFile, 0, 2)
	big = append(big, &policyv1.BundleFile{Name: "gatehouse.cedarschema", Content: schema},
		&policyv1.BundleFile{Name: "big.cedar", Content: []byte("// " + strings.Repeat("x", policysvc.MaxBundleBytes) + "\n" + testPolicies)})
	many := []*policyv1.BundleFile{{Name: "gatehouse.cedarschema", Content: schema}}
	for i := range policysvc.MaxBundleFiles {
		many = append(many, &policyv1.BundleFile{Name: fmt.Sprintf("p%03d.cedar", i), Content: []byte("// empty\n")})
	}
	tests := []struct {
		name string
		in   *policyv1.Bundle
		want []string
	}{
		{"attribute the schema lacks", bundleOf(t, map[string]string{"typo.cedar": "// typo\n\n@id(\"typo\")\npermit (principal, action == Gatehouse::Action::\"initialize\", resource is Gatehouse::Server)\nwhen { resource.owner == principal.tenant };\n"}),
			[]string{"typo.cedar:3:1:", "owner"}},
		{"syntax error", bundleOf(t, map[string]string{"bad.cedar": "permit (principal, action, resource)\nwhen { ;"}), []string{"bad.cedar:2:"}},
		{"no schema", &policyv1.Bundle{Files: []*policyv1.BundleFile{{Name: "a.cedar", Content: []byte(testPolicies)}}}, []string{"no schema"}},
		{"no files", &policyv1.Bundle{}, []string{"no files"}},
		{"path in a name", bundleOf(t, map[string]string{"../etc/x.cedar": testPolicies}), []string{"base name"}},
		{"hidden file", bundleOf(t, map[string]string{".x.cedar": testPolicies}), []string{"hidden"}},
		{"other extension", bundleOf(t, map[string]string{"README.md": "hello", "a.cedar": testPolicies}), []string{"neither a policy"}},
		{"too large", &policyv1.Bundle{Files: big}, []string{"larger than"}},
		{"too many files", &policyv1.Bundle{Files: many}, []string{"files, more than"}},
		{"bad git commit", &policyv1.Bundle{Files: good.GetFiles(), GitCommit: "main; rm -rf /"}, []string{"git commit"}},
		{"version that is not the files'", &policyv1.Bundle{Files: good.GetFiles(), Version: "sha256:0000"}, []string{"names version"}},
		{"duplicate file", &policyv1.Bundle{Files: append(append([]*policyv1.BundleFile(nil), good.GetFiles()...), good.GetFiles()[1])}, []string{"twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := apply(one, tt.in)
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if got := storedVersion(t, prefix); got != version {
		t.Fatalf("etcd holds %s after the refusals, want %s", got, version)
	}
	for _, svc := range []*policysvc.Service{one, two} {
		if svc.BundleVersion() != version {
			t.Fatalf("a replica moved to %s, want %s", svc.BundleVersion(), version)
		}
	}
}

// TestStoredBundleThatDoesNotLoad: a value in etcd that is not a valid bundle (written by
// hand, or by a version that accepted more) is refused by a running replica, which keeps its
// bundle, and keeps a new replica from starting rather than deciding by other policies.
func TestStoredBundleThatDoesNotLoad(t *testing.T) {
	t.Parallel()
	prefix := etcdtest.Prefix(t)
	logs := &testsync.Buffer{}
	one := replica(t, policysvc.Config{KeyPrefix: prefix}, shared.Client, logs)
	before := one.BundleVersion()
	bad, err := proto.Marshal(&policyv1.Bundle{Files: []*policyv1.BundleFile{{Name: "a.cedar", Content: []byte("permit (")}}, Version: "sha256:x"})
	if err != nil {
		t.Fatal(err)
	}
	for _, value := range []string{"not a bundle \xff", string(bad)} {
		n := strings.Count(logs.String(), "refusing the stored policy bundle")
		if _, err := shared.Client.Put(context.Background(), prefix+"bundle", value); err != nil {
			t.Fatal(err)
		}
		testsync.WaitFor(t, 10*time.Second, "the replica to refuse the stored value", func() bool {
			return strings.Count(logs.String(), "refusing the stored policy bundle") > n
		})
		if one.BundleVersion() != before {
			t.Fatalf("the replica moved to %s", one.BundleVersion())
		}
		if got := aliceReads(t, one); got.GetDecision() != policyv1.Decision_DECISION_ALLOW || got.GetBundleVersion() != before {
			t.Fatalf("after the refusal: %v", got)
		}
		dir := writeDir(t, map[string]string{"gatehouse.cedarschema": shippedSchema(t), "test.cedar": testPolicies})
		if _, err := policysvc.New(policysvc.Config{KeyPrefix: prefix, PolicyDir: dir}, testCatalog(), shared.Client, nil); err == nil || !strings.Contains(err.Error(), "does not load") {
			t.Fatalf("a new replica: err = %v, want a refusal to start", err)
		}
	}
	// A deleted key changes nothing either.
	if _, err := shared.Client.Delete(context.Background(), prefix+"bundle"); err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 10*time.Second, "the replica to see the delete", func() bool { return strings.Contains(logs.String(), "was deleted") })
	if one.BundleVersion() != before {
		t.Fatalf("the replica moved to %s after a delete", one.BundleVersion())
	}
}

// TestConcurrentApplies: many bundles applied at once through two replicas leave both
// replicas deciding by the one etcd kept (the last written), whatever order each learnt of
// them in.
func TestConcurrentApplies(t *testing.T) {
	t.Parallel()
	prefix := etcdtest.Prefix(t)
	replicas := []*policysvc.Service{
		replica(t, policysvc.Config{KeyPrefix: prefix}, shared.Client, nil),
		replica(t, policysvc.Config{KeyPrefix: prefix}, shared.Client, nil),
	}
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			b := bundleOf(t, map[string]string{"test.cedar": testPolicies, "extra.cedar": fmt.Sprintf("// bundle %d\n", i)})
			if _, err := apply(replicas[i%2], b); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	stored := storedVersion(t, prefix)
	for i, svc := range replicas {
		testsync.WaitFor(t, 10*time.Second, fmt.Sprintf("replica %d to decide by the stored bundle", i), func() bool { return svc.BundleVersion() == stored })
	}
}

// TestWatchCompaction: a replica whose watch broke while the bundle changed and history was
// compacted reads the bundle again and switches to it.
func TestWatchCompaction(t *testing.T) {
	t.Parallel()
	prefix := etcdtest.Prefix(t)
	kv := etcdtest.NewWatchBreaker(shared.Client)
	follower := replica(t, policysvc.Config{KeyPrefix: prefix}, kv, nil)
	leader := replica(t, policysvc.Config{KeyPrefix: prefix}, shared.Client, nil)

	release := kv.BreakAndHold()
	in := bundleOf(t, map[string]string{"test.cedar": testPolicies, "forbid.cedar": forbidFilesRead})
	resp, err := apply(leader, in)
	if err != nil {
		t.Fatal(err)
	}
	put, err := shared.Client.Put(context.Background(), etcdtest.Prefix(t)+"bump", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shared.Client.Compact(context.Background(), put.Header.Revision); err != nil {
		t.Fatal(err)
	}
	release()
	testsync.WaitFor(t, 20*time.Second, "the follower to switch after the compaction", func() bool { return follower.BundleVersion() == resp.GetVersion() })
}

// TestApplyWithoutEtcd: a policysvc without etcd refuses to apply, and says why.
func TestApplyWithoutEtcd(t *testing.T) {
	t.Parallel()
	svc := newService(t, policysvc.Config{}, nil)
	_, err := apply(svc, bundleOf(t, map[string]string{"test.cedar": testPolicies}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "etcd") {
		t.Fatalf("err = %v, want FailedPrecondition naming etcd", err)
	}
}

// TestApplyOverTheWire: ApplyBundle takes a bundle near the limit over HTTP, while Check
// keeps its small read limit.
func TestApplyOverTheWire(t *testing.T) {
	t.Parallel()
	prefix := etcdtest.Prefix(t)
	svc := replica(t, policysvc.Config{KeyPrefix: prefix}, shared.Client, nil)
	client := serve(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	padding := "// " + strings.Repeat("x", policysvc.MaxBundleBytes-len(shippedSchema(t))-len(testPolicies)-200) + "\n"
	in := bundleOf(t, map[string]string{"test.cedar": padding + testPolicies})
	resp, err := client.ApplyBundle(ctx, connect.NewRequest(&policyv1.ApplyBundleRequest{Bundle: in}))
	if err != nil {
		t.Fatalf("apply of a bundle near the limit: %v", err)
	}
	if resp.Msg.GetVersion() != svc.BundleVersion() {
		t.Fatalf("version %s, active %s", resp.Msg.GetVersion(), svc.BundleVersion())
	}
	_, err = client.Check(ctx, connect.NewRequest(&policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "tools/call",
		Resource: &policyv1.Resource{Server: "files", Name: strings.Repeat("x", 100<<10)}}))
	// ResourceExhausted is the read limit's refusal: under ApplyBundle's limit the request
	// would be read, and refused later as InvalidArgument (a name over 4 KiB).
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("a 100 KiB Check: err = %v, want ResourceExhausted by the read limit", err)
	}
}

// serve mounts svc's handlers on a test server and returns a client of it.
func serve(t *testing.T, svc *policysvc.Service) policyv1connect.PolicyServiceClient {
	t.Helper()
	srv := httptest.NewServer(rpcserver.NewMux(svc.Handlers()...))
	t.Cleanup(srv.Close)
	return policyv1connect.NewPolicyServiceClient(srv.Client(), srv.URL)
}
