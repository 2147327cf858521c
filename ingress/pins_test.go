package ingress_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"github.com/gatehouse-mcp/gatehouse/internal/toolpin"
)

// trustingRegistry pins whatever is reported (as a first listing would), counting reports;
// down makes it fail.
type trustingRegistry struct {
	calls atomic.Int32
	down  bool
}

func (r *trustingRegistry) ReportTools(_ context.Context, req *connect.Request[registryv1.ReportToolsRequest]) (*connect.Response[registryv1.ReportToolsResponse], error) {
	r.calls.Add(1)
	if r.down {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("down"))
	}
	pins := &registryv1.ServerPins{Server: req.Msg.GetServer(), Revision: 2}
	for _, t := range req.Msg.GetTools() {
		pins.Tools = append(pins.Tools, &registryv1.ToolPin{Name: t.GetName(), Digest: t.GetDigest()})
	}
	return connect.NewResponse(&registryv1.ReportToolsResponse{Pins: pins, TrustedFirstUse: true}), nil
}

func pinService(t *testing.T, cat *catalog.Catalog, reg ingress.Registry) *ingress.Service {
	t.Helper()
	svc, err := ingress.New(ingress.Config{AllowedHosts: "127.0.0.1", MaxBodyBytes: 1 << 20},
		ingress.Deps{Auth: newFakeAuth(), Policy: fakePolicy{}, Bridge: newFakeBridge(), Audit: newFakeAudit(), Catalog: cat, Sessions: &fakeSessions{records: map[string]sessionstore.Record{}}, Registry: reg},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func toolItems(n int, desc string) []json.RawMessage {
	items := make([]json.RawMessage, n)
	for i := range items {
		items[i] = json.RawMessage(fmt.Sprintf(`{"name":"t%d","description":%q,"inputSchema":{"type":"object"}}`, i, desc))
	}
	return items
}

func kept(keep []bool) int {
	n := 0
	for _, k := range keep {
		if k {
			n++
		}
	}
	return n
}

// TestKeepPinned: a list of thousands of tools costs one report; once pinned, a list costs
// none; a changed tool is hidden when the registry quarantines it, and every unpinned tool is
// hidden when the registry cannot be asked.
func TestKeepPinned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const n = 2000
	cat := catalog.Static(&registryv1.Server{Name: "p", Pin: true}, &registryv1.Server{Name: "loose"})
	reg := &trustingRegistry{}
	svc := pinService(t, cat, reg)

	if got := kept(svc.KeepPinned(ctx, "loose", toolItems(3, "x"), ingress.Lister{})); got != 3 || reg.calls.Load() != 0 {
		t.Fatalf("unpinned server: kept %d, %d reports", got, reg.calls.Load())
	}
	if got := kept(svc.KeepPinned(ctx, "p", toolItems(n, "x"), ingress.Lister{})); got != n || reg.calls.Load() != 1 {
		t.Fatalf("first listing: kept %d of %d with %d reports, want all with 1", got, n, reg.calls.Load())
	}
	if got := kept(svc.KeepPinned(ctx, "p", toolItems(n, "x"), ingress.Lister{})); got != n || reg.calls.Load() != 1 {
		t.Fatalf("second listing: kept %d with %d reports, want all with no new report", got, reg.calls.Load())
	}

	// The registry's pins now hold t0 quarantined at a new definition, and nothing else: t0
	// is hidden without a report of it, the others are reported (and pinned by this registry).
	items := toolItems(n, "x")
	items[0] = json.RawMessage(`{"name":"t0","description":"changed","inputSchema":{"type":"object"}}`)
	_, observed, _ := toolpin.Digest(items[0])
	_, old, _ := toolpin.Digest(toolItems(1, "x")[0])
	cat.UpdatePins(&registryv1.ServerPins{Server: "p", Revision: 3, Tools: []*registryv1.ToolPin{{Name: "t0", Digest: old, Quarantined: true, ObservedDigest: observed}}})
	if keep := svc.KeepPinned(ctx, "p", items, ingress.Lister{}); keep[0] || kept(keep) != n-1 || reg.calls.Load() != 2 {
		t.Fatalf("after the quarantine: t0 kept %v, %d kept, %d reports", keep[0], kept(keep), reg.calls.Load())
	}
	// An older set (a late watch event) does not replace a newer one.
	cat.UpdatePins(&registryv1.ServerPins{Server: "p", Revision: 1})
	if p := cat.ToolPins("p")["t0"]; !p.GetQuarantined() {
		t.Fatalf("an older pin set replaced a newer one: %v", p)
	}

	// A server showing more tools than may be pinned: the excess stays hidden.
	many := pinService(t, catalog.Static(&registryv1.Server{Name: "p", Pin: true}), &trustingRegistry{})
	if got := kept(many.KeepPinned(ctx, "p", toolItems(3000, "x"), ingress.Lister{})); got != 2048 {
		t.Fatalf("3000 tools: kept %d, want the 2048 that may be pinned", got)
	}

	// The registry is down: nothing not already pinned is shown.
	down := pinService(t, catalog.Static(&registryv1.Server{Name: "p", Pin: true}), &trustingRegistry{down: true})
	if got := kept(down.KeepPinned(ctx, "p", toolItems(10, "x"), ingress.Lister{})); got != 0 {
		t.Fatalf("registry down: kept %d, want none", got)
	}
	// Undigestable or duplicate items are never shown.
	odd := []json.RawMessage{json.RawMessage(`{"name":"dup"}`), json.RawMessage(`{"name":"dup","description":"other"}`), json.RawMessage(`{"description":"no name"}`)}
	if got := kept(svc.KeepPinned(ctx, "p", odd, ingress.Lister{})); got != 0 {
		t.Fatalf("duplicates and nameless items: kept %d", got)
	}
}
