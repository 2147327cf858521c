package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"sync"
	"time"

	"connectrpc.com/connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/toolpin"
)

// Pinned tools. For a server whose registry entry says pin, every tools/list answer is
// checked against the pins the catalog holds (fed by the registry's watch, so no RPC when
// nothing changed): a tool whose definition digest (internal/toolpin) equals its approved pin
// is shown; one that is quarantined is hidden; one that differs from its pin, or has none,
// is reported to the registry (ReportTools), which quarantines it in one etcd transaction
// (or pins it, on the server's first listing: trust on first use) and audits each new
// quarantine once however many replicas report it. Until the registry has answered, a tool
// is not shown: if it cannot answer, the tool stays hidden (fail closed). A tools/call of a
// tool that is not pinned and approved is refused with errQuarantined, for everyone.

// Registry is what the ingress needs of registrysvc beyond the catalog: its client, or the
// service itself in single-process mode.
type Registry interface {
	ReportTools(context.Context, *connect.Request[registryv1.ReportToolsRequest]) (*connect.Response[registryv1.ReportToolsResponse], error)
}

// pinCatalog is what pinning needs of the catalog (*catalog.Catalog has it). A catalog
// without it holds no pins: every tool of a pinned server is then refused.
type pinCatalog interface {
	ToolPins(server string) map[string]*registryv1.ToolPin
	UpdatePins(*registryv1.ServerPins)
}

// maxReportTools is the most tools one report names (registrysvc.MaxPinnedTools).
const maxReportTools = 2048

// Lister says who listed, for the audit record of a quarantine the list reveals.
type Lister struct {
	Principal, Tenant, Session, Trace string
}

// pinned reports whether server's tools are pinned.
func (s *Service) pinned(server string) bool {
	srv, ok := s.deps.Catalog.Server(server)
	return ok && srv.GetPin()
}

// toolPins returns the server's pins as the catalog holds them.
func (s *Service) toolPins(server string) map[string]*registryv1.ToolPin {
	if pc, ok := s.deps.Catalog.(pinCatalog); ok {
		return pc.ToolPins(server)
	}
	return nil
}

// KeepPinned says which items of a tools/list answer of server may be shown: all of them
// for a server that is not pinned; for a pinned one, those whose definition is pinned and not
// quarantined (see above). keep[i] is for items[i]. It digests each item once and makes at
// most one registry call, so its cost is linear in the items. Both the per-server endpoint
// and the aggregated one call it.
func (s *Service) KeepPinned(ctx context.Context, server string, items []json.RawMessage, by Lister) []bool {
	keep := make([]bool, len(items))
	if !s.pinned(server) {
		for i := range keep {
			keep[i] = true
		}
		return keep
	}
	pins := s.toolPins(server)
	names := make([]string, len(items))
	digests := make([]string, len(items))
	count := make(map[string]int, len(items))
	for i, it := range items {
		name, d, err := toolpin.Digest(it)
		if err != nil {
			s.logger.Warn("hiding a tool whose definition cannot be pinned", "server", server, "err", err)
			continue
		}
		names[i], digests[i] = name, d
		count[name]++
	}
	var report []*registryv1.ObservedTool
	for i, name := range names {
		if name == "" {
			continue
		}
		p := pins[name]
		switch {
		case p.GetQuarantined():
			// Hidden until approved.
		case p != nil && p.GetDigest() == digests[i] && count[name] == 1:
			keep[i] = true
		default:
			report = append(report, &registryv1.ObservedTool{Name: name, Digest: digests[i]})
		}
	}
	if len(report) == 0 {
		return keep
	}
	if len(report) > maxReportTools {
		// The registry pins at most this many tools of a server; the rest stay hidden.
		s.logger.Warn("hiding tools of a pinned server beyond the pin limit", "server", server, "tools", len(report), "limit", maxReportTools)
		report = report[:maxReportTools]
	}
	if s.deps.Registry == nil {
		s.logger.Warn("hiding tools of a pinned server: no registry to report them to", "server", server, "tools", len(report))
		return keep
	}
	// The same report, made moments ago, would change nothing (tools over the pin limit, a
	// registry that keeps failing): not every list of every host costs a registry round trip.
	key := reportKey(report)
	if s.pinReports.recent(server, key, s.now()) {
		return keep
	}
	defer s.pinReports.made(server, key, s.now())
	resp, err := s.deps.Registry.ReportTools(ctx, connect.NewRequest(&registryv1.ReportToolsRequest{
		Server: server, Tools: report, Principal: by.Principal, Tenant: by.Tenant, SessionId: by.Session, TraceId: by.Trace,
	}))
	if err != nil {
		s.logger.Warn("hiding tools of a pinned server: the registry did not take their report", "server", server, "tools", len(report), "err", err)
		return keep
	}
	if pc, ok := s.deps.Catalog.(pinCatalog); ok {
		pc.UpdatePins(resp.Msg.GetPins())
	}
	for _, name := range resp.Msg.GetQuarantined() {
		s.logger.Warn("tool quarantined: hidden and refused until an operator approves it", "server", server, "tool", name)
	}
	after := make(map[string]*registryv1.ToolPin, len(resp.Msg.GetPins().GetTools()))
	for _, p := range resp.Msg.GetPins().GetTools() {
		after[p.GetName()] = p
	}
	for i, name := range names {
		if name == "" || keep[i] || count[name] != 1 {
			continue
		}
		if p := after[name]; p != nil && !p.GetQuarantined() && p.GetDigest() == digests[i] {
			keep[i] = true
		}
	}
	return keep
}

// keepPinnedItems is filterList's hook: the items of a tools/list answer that pinning lets
// through.
func (s *Service) keepPinnedItems(ctx context.Context, c *call, items []json.RawMessage) []json.RawMessage {
	if c.msg.Method != "tools/list" {
		return items
	}
	keep := s.KeepPinned(ctx, c.server, items, Lister{Principal: c.principal.GetId(), Tenant: c.principal.GetTenant(), Session: c.session.ID, Trace: c.traceID})
	kept := items[:0:0]
	for i, it := range items {
		if keep[i] {
			kept = append(kept, it)
		}
	}
	return kept
}

// quarantined is the call path's hook: errQuarantined for a tools/call of a pinned server's
// tool that is quarantined or was never pinned, nil otherwise. It reads the catalog only.
func (s *Service) quarantined(c *call) *Error {
	if c.msg.Method != "tools/call" || !s.pinned(c.server) {
		return nil
	}
	p := s.toolPins(c.server)[c.msg.Name]
	if p == nil || p.GetQuarantined() || p.GetDigest() == "" {
		return errQuarantined
	}
	return nil
}

// reportDebounce is how long the same report of a server's unpinned tools is not repeated.
const reportDebounce = 5 * time.Second

// pinReports remembers the last report of each pinned server's unpinned tools (at most one
// entry per server of the catalogue).
type pinReports struct {
	mu   sync.Mutex
	last map[string]reportSeen
}

type reportSeen struct {
	key [sha256.Size]byte
	at  time.Time
}

func reportKey(report []*registryv1.ObservedTool) [sha256.Size]byte {
	h := sha256.New()
	for _, t := range report {
		h.Write([]byte(t.GetName()))
		h.Write([]byte{0})
		h.Write([]byte(t.GetDigest()))
		h.Write([]byte{0})
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func (r *pinReports) recent(server string, key [sha256.Size]byte, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen, ok := r.last[server]
	return ok && seen.key == key && now.Sub(seen.at) < reportDebounce
}

func (r *pinReports) made(server string, key [sha256.Size]byte, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]reportSeen{}
	}
	r.last[server] = reportSeen{key: key, at: now}
}
