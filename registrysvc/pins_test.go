package registrysvc_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/registrysvc"
)

// countingAudit counts the records of each method.
type countingAudit struct {
	mu      sync.Mutex
	records []*auditv1.Record
}

func (a *countingAudit) Append(_ context.Context, req *connect.Request[auditv1.AppendRequest]) (*connect.Response[auditv1.AppendResponse], error) {
	a.mu.Lock()
	a.records = append(a.records, req.Msg.GetRecord())
	a.mu.Unlock()
	return connect.NewResponse(&auditv1.AppendResponse{}), nil
}

func (a *countingAudit) count(method, tool string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, r := range a.records {
		if r.GetMethod() == method && r.GetTool() == tool {
			n++
		}
	}
	return n
}

func digestOf(i int) string { return fmt.Sprintf("sha256:%064x", i) }

func report(t *testing.T, svc *registrysvc.Service, server string, tools map[string]string) *registryv1.ReportToolsResponse {
	t.Helper()
	req := &registryv1.ReportToolsRequest{Server: server, Principal: "alice", Tenant: "acme"}
	for name, d := range tools {
		req.Tools = append(req.Tools, &registryv1.ObservedTool{Name: name, Digest: d})
	}
	resp, err := svc.ReportTools(testContext(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("report %v: %v", tools, err)
	}
	return resp.Msg
}

func pinOf(p *registryv1.ServerPins, name string) *registryv1.ToolPin {
	for _, t := range p.GetTools() {
		if t.GetName() == name {
			return t
		}
	}
	return nil
}

// TestReportToolsQuarantine: the first report pins on trust; then any number of concurrent
// reports of a changed tool make one quarantine, audited once, reported as new to exactly one
// caller; an approval pins the observed definition and ends the trust, after which a tool
// never seen before is quarantined too.
func TestReportToolsQuarantine(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	audit := &countingAudit{}
	svc := newService(t, registrysvc.Config{Audit: audit}, nil)
	pinned := stdio("p", "acme")
	pinned.Pin = true
	if err := svc.Seed(ctx, []*registryv1.Server{pinned, stdio("loose")}); err != nil {
		t.Fatal(err)
	}

	first := report(t, svc, "p", map[string]string{"a": digestOf(1), "b": digestOf(2)})
	if !first.GetTrustedFirstUse() || len(first.GetQuarantined()) != 0 || pinOf(first.GetPins(), "a").GetDigest() != digestOf(1) {
		t.Fatalf("first report: %v, want a and b pinned on trust", first)
	}
	if again := report(t, svc, "p", map[string]string{"a": digestOf(1), "b": digestOf(2)}); again.GetTrustedFirstUse() || len(again.GetQuarantined()) != 0 {
		t.Fatalf("the same report again: %v, want no change", again)
	}

	const reporters = 16
	var wg sync.WaitGroup
	var news atomic.Int32
	for range reporters {
		wg.Go(func() {
			resp, err := svc.ReportTools(ctx, connect.NewRequest(&registryv1.ReportToolsRequest{Server: "p", Tools: []*registryv1.ObservedTool{{Name: "a", Digest: digestOf(3)}}}))
			if err != nil {
				t.Errorf("concurrent report: %v", err)
				return
			}
			if p := pinOf(resp.Msg.GetPins(), "a"); !p.GetQuarantined() || p.GetObservedDigest() != digestOf(3) || p.GetDigest() != digestOf(1) {
				t.Errorf("concurrent report's pins of a: %v", p)
			}
			news.Add(int32(len(resp.Msg.GetQuarantined())))
		})
	}
	wg.Wait()
	if news.Load() != 1 || audit.count(registrysvc.MethodQuarantine, "a") != 1 {
		t.Fatalf("%d reports said they quarantined a, %d audit records; want 1 and 1", news.Load(), audit.count(registrysvc.MethodQuarantine, "a"))
	}

	// Not pinned, or not ours to report: refused.
	if _, err := svc.ReportTools(ctx, connect.NewRequest(&registryv1.ReportToolsRequest{Server: "loose"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("report on an unpinned server: %v", err)
	}
	asHost := rpcserver.WithCaller(ctx, rpcserver.Caller{Principal: &authv1.Principal{Id: "mallory", Tenant: "acme"}})
	if _, err := svc.ReportTools(asHost, connect.NewRequest(&registryv1.ReportToolsRequest{Server: "p"})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("report by a principal: %v", err)
	}
	if _, err := svc.ReportTools(ctx, connect.NewRequest(&registryv1.ReportToolsRequest{Server: "p", Tools: []*registryv1.ObservedTool{{Name: "a", Digest: "md5:x"}}})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("report with a bad digest: %v", err)
	}
	// An operator without a credential of their own (the internal token alone) may not approve.
	internal := rpcserver.WithCaller(ctx, rpcserver.Caller{})
	if _, err := svc.ApproveTools(internal, connect.NewRequest(&registryv1.ApproveToolsRequest{Server: "p"})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("approve with the internal token: %v", err)
	}

	approved, err := svc.ApproveTools(ctx, connect.NewRequest(&registryv1.ApproveToolsRequest{Server: "p"}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(approved.Msg.GetApproved(), []string{"a"}) || pinOf(approved.Msg.GetPins(), "a").GetDigest() != digestOf(3) || approved.Msg.GetPins().GetFirstUseUntil() != nil {
		t.Fatalf("approve: %v, want a pinned at the observed digest and the trust ended", approved.Msg)
	}
	if audit.count(registrysvc.MethodApprove, "a") != 1 {
		t.Fatal("the approval was not audited")
	}
	if r := report(t, svc, "p", map[string]string{"a": digestOf(3), "b": digestOf(2)}); len(r.GetQuarantined()) != 0 {
		t.Fatalf("report of the approved definitions: %v", r)
	}
	if r := report(t, svc, "p", map[string]string{"c": digestOf(4)}); !slices.Equal(r.GetQuarantined(), []string{"c"}) || pinOf(r.GetPins(), "c").GetDigest() != "" {
		t.Fatalf("a new tool after the approval: %v, want it quarantined", r)
	}
	if _, err := svc.ApproveTools(ctx, connect.NewRequest(&registryv1.ApproveToolsRequest{Server: "p", Tool: "zzz"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("approve of a tool never seen: %v", err)
	}
	// A duplicate name with two definitions in one list cannot be pinned to both.
	if r := report(t, svc, "p", nil); r == nil {
		t.Fatal("empty report")
	}
	resp, err := svc.ReportTools(ctx, connect.NewRequest(&registryv1.ReportToolsRequest{Server: "p", Tools: []*registryv1.ObservedTool{{Name: "b", Digest: digestOf(2)}, {Name: "b", Digest: digestOf(5)}}}))
	if err != nil || !slices.Equal(resp.Msg.GetQuarantined(), []string{"b"}) {
		t.Fatalf("a duplicate tool: %v %v, want b quarantined", resp, err)
	}

	// The catalogue's watchers get the pins: GetServer shows them.
	got, err := svc.GetServer(ctx, connect.NewRequest(&registryv1.GetServerRequest{Name: "p"}))
	if err != nil || !pinOf(got.Msg.GetPins(), "c").GetQuarantined() {
		t.Fatalf("GetServer pins: %v %v", got, err)
	}
}

// TestImportServers: imported servers join the catalogue apart from the configuration's,
// survive a Seed, and may not take a configured server's name.
func TestImportServers(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	audit := &countingAudit{}
	svc := newService(t, registrysvc.Config{Audit: audit}, nil)
	if err := svc.Seed(ctx, []*registryv1.Server{stdio("configured")}); err != nil {
		t.Fatal(err)
	}
	imp := web("weather", "acme")
	imp.Pin = true
	if _, err := svc.ImportServers(ctx, connect.NewRequest(&registryv1.ImportServersRequest{Servers: []*registryv1.Server{web("configured")}})); connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("import over a configured name: %v", err)
	}
	if _, err := svc.ImportServers(ctx, connect.NewRequest(&registryv1.ImportServersRequest{Servers: []*registryv1.Server{{Name: "Bad Name"}}})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("import of an invalid server: %v", err)
	}
	if _, err := svc.ImportServers(ctx, connect.NewRequest(&registryv1.ImportServersRequest{Servers: []*registryv1.Server{imp}})); err != nil {
		t.Fatal(err)
	}
	if audit.count(registrysvc.MethodImport, "") != 1 {
		t.Fatal("the import was not audited")
	}
	// The configuration is seeded again without it: the imported server stays.
	if err := svc.Seed(ctx, []*registryv1.Server{stdio("configured"), stdio("other")}); err != nil {
		t.Fatal(err)
	}
	list, err := svc.ListServers(ctx, connect.NewRequest(&registryv1.ListServersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(list.Msg.GetServers()); !slices.Equal(got, []string{"configured", "other", "weather"}) {
		t.Fatalf("servers %v, want the configured ones and the imported one", got)
	}
	w, err := svc.GetServer(ctx, connect.NewRequest(&registryv1.GetServerRequest{Name: "weather"}))
	if err != nil || !w.Msg.GetServer().GetImported() || !w.Msg.GetServer().GetPin() {
		t.Fatalf("the imported server: %v %v", w, err)
	}
	// A configuration whose prefix would collide with the imported server's is refused.
	clash := stdio("configured")
	prefix := "weather"
	clash.Prefix = &prefix
	if err := svc.Seed(ctx, []*registryv1.Server{clash}); err == nil {
		t.Fatal("a configuration colliding with an imported server's prefix was seeded")
	}
}

// TestReportToolsOverRPC: a report of as many tools as a server may pin fits in one request
// of the RPC, and one more is refused.
func TestReportToolsOverRPC(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	svc := newService(t, registrysvc.Config{}, nil)
	pinned := web("big")
	pinned.Pin = true
	if err := svc.Seed(ctx, []*registryv1.Server{pinned}); err != nil {
		t.Fatal(err)
	}
	req := &registryv1.ReportToolsRequest{Server: "big"}
	for i := range registrysvc.MaxPinnedTools {
		req.Tools = append(req.Tools, &registryv1.ObservedTool{Name: fmt.Sprintf("%0128d", i), Digest: digestOf(i)})
	}
	client := connectClient(t, svc)
	resp, err := client.ReportTools(ctx, connect.NewRequest(req))
	if err != nil || len(resp.Msg.GetPins().GetTools()) != registrysvc.MaxPinnedTools {
		t.Fatalf("a report of %d tools: %v", registrysvc.MaxPinnedTools, err)
	}
	req.Tools = append(req.Tools, &registryv1.ObservedTool{Name: "one-more", Digest: digestOf(0)})
	if _, err := client.ReportTools(ctx, connect.NewRequest(req)); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a report of one tool more: %v", err)
	}
}

// TestImportRace: imports whose prefixes collide, sent concurrently: exactly one lands.
func TestImportRace(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	svc := newService(t, registrysvc.Config{Audit: &countingAudit{}}, nil)
	if err := svc.Seed(ctx, []*registryv1.Server{stdio("configured")}); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	var landed atomic.Int32
	for i := range n {
		wg.Go(func() {
			srv := web(fmt.Sprintf("w%d", i), "acme")
			p := "shared"
			srv.Prefix = &p // every one claims the same prefix
			if _, err := svc.ImportServers(ctx, connect.NewRequest(&registryv1.ImportServersRequest{Servers: []*registryv1.Server{srv}})); err == nil {
				landed.Add(1)
			}
		})
	}
	wg.Wait()
	if got := landed.Load(); got != 1 {
		t.Fatalf("%d colliding imports landed, want 1", got)
	}
}
