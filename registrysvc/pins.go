package registrysvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/toolpin"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Pinning. A pinned server's pins live under KeyPrefix + "pins/<server>", one value per
// server holding every tool's pin, apart from the configuration's keys (Seed never touches
// them), so a restart keeps every approval and quarantine. Each change is one etcd
// transaction conditional on the value read, so concurrent reports of the same tool by any
// number of ingress replicas make one quarantine, audited once, by the report that made it.
//
// The first listing of a pinned server with no pins at all is trusted (trust on first use):
// its tools are pinned as they are, the pin recorded as an approval by
// "trust-on-first-use", audited and logged. Quarantining everything until an operator
// approves would be stricter, but a new server would then show no tools until someone both
// listed it and approved it, and the definition approved would be one nobody had been shown
// either. The trust lasts firstUseWindow, so that every page of a paginated first listing is
// pinned too; after it, or once an operator approves, a tool without a pin is quarantined.

// Limits on pins.
const (
	// MaxPinnedTools bounds the tools of one server's pins: they are one etcd value (etcd
	// refuses values over 1.5 MiB; a pin takes about 350 bytes).
	MaxPinnedTools = 2048
	// firstUseWindow is how long after a server's first listing tools without a pin are
	// pinned on trust.
	firstUseWindow = time.Minute
	// pinAttempts bounds the retries of a pin transaction that lost a race.
	pinAttempts = 8
	// trustedFirstUse is who approved a pin taken on trust.
	trustedFirstUse = "trust-on-first-use"
	// maxReportIDBytes bounds the principal, tenant, session and trace ids of a report.
	maxReportIDBytes = 256
)

// Audit methods of the registry's records.
const (
	MethodQuarantine = "gatehouse/quarantine"
	MethodApprove    = "gatehouse/approve"
	MethodImport     = "gatehouse/import"
)

// Auditor is what the registry needs of auditsvc: its client, or the service itself.
type Auditor interface {
	Append(context.Context, *connect.Request[auditv1.AppendRequest]) (*connect.Response[auditv1.AppendResponse], error)
}

// validatePins checks stored pins as Validate checks a server.
func validatePins(p *registryv1.ServerPins) error {
	if !ident.ValidServerName(p.GetServer()) {
		return errors.New("bad server name")
	}
	if len(p.GetTools()) > MaxPinnedTools {
		return fmt.Errorf("%d tools, more than the limit of %d", len(p.GetTools()), MaxPinnedTools)
	}
	for _, t := range p.GetTools() {
		if t.GetName() == "" || len(t.GetName()) > toolpin.MaxNameBytes {
			return fmt.Errorf("tool name %.140q: want 1 to %d bytes", t.GetName(), toolpin.MaxNameBytes)
		}
		if d := t.GetDigest(); d != "" && !toolpin.ValidDigest(d) {
			return fmt.Errorf("tool %q: bad digest", t.GetName())
		}
		if d := t.GetObservedDigest(); d != "" && !toolpin.ValidDigest(d) {
			return fmt.Errorf("tool %q: bad observed digest", t.GetName())
		}
	}
	return nil
}

// ReportTools implements registryv1connect.RegistryServiceHandler.
func (s *Service) ReportTools(ctx context.Context, req *connect.Request[registryv1.ReportToolsRequest]) (*connect.Response[registryv1.ReportToolsResponse], error) {
	// The gateway's own services only: a report can quarantine any tool for everyone.
	if c, ok := rpcserver.CallerFrom(ctx); ok && c.Principal != nil {
		return nil, toConnect(fmt.Errorf("%w: ReportTools is for the gateway's own services", errCallerDenied))
	}
	m := req.Msg
	if !ident.ValidServerName(m.GetServer()) {
		return nil, toConnect(invalid("server %.64q is not a server name", m.GetServer()))
	}
	if len(m.GetTools()) > MaxPinnedTools {
		return nil, toConnect(invalid("%d tools, more than the limit of %d", len(m.GetTools()), MaxPinnedTools))
	}
	for _, f := range []string{m.GetPrincipal(), m.GetTenant(), m.GetSessionId(), m.GetTraceId()} {
		if len(f) > maxReportIDBytes {
			return nil, toConnect(invalid("an id is longer than %d bytes", maxReportIDBytes))
		}
	}
	// Two reports of one name with different digests: the name cannot be pinned to both,
	// so it is quarantined at the later one.
	type observed struct {
		name, digest string
		conflict     bool
	}
	var tools []*observed
	byName := make(map[string]*observed, len(m.GetTools()))
	for i, t := range m.GetTools() {
		if t.GetName() == "" || len(t.GetName()) > toolpin.MaxNameBytes {
			return nil, toConnect(invalid("tools[%d]: a name of 1 to %d bytes is required", i, toolpin.MaxNameBytes))
		}
		if !toolpin.ValidDigest(t.GetDigest()) {
			return nil, toConnect(invalid("tools[%d]: digest %.80q is not sha256:<64 hex digits>", i, t.GetDigest()))
		}
		if o, dup := byName[t.GetName()]; dup {
			o.conflict = o.conflict || o.digest != t.GetDigest()
			o.digest = t.GetDigest()
			continue
		}
		o := &observed{name: t.GetName(), digest: t.GetDigest()}
		byName[o.name] = o
		tools = append(tools, o)
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, toConnect(err)
	}
	s.mu.RLock()
	srv, ok := s.servers[m.GetServer()]
	s.mu.RUnlock()
	if !ok {
		return nil, toConnect(fmt.Errorf("%w: %q", errNotFound, m.GetServer()))
	}
	if !srv.GetPin() {
		return nil, toConnect(fmt.Errorf("%w: server %q is not pinned", errNotPinned, m.GetServer()))
	}
	var quarantined []*registryv1.ToolPin
	var trusted bool
	pins, err := s.updatePins(ctx, m.GetServer(), func(cur *registryv1.ServerPins, now time.Time) bool {
		quarantined, trusted = nil, false
		byName := make(map[string]*registryv1.ToolPin, len(cur.GetTools()))
		for _, t := range cur.GetTools() {
			byName[t.GetName()] = t
		}
		firstUse := len(cur.GetTools()) == 0 && cur.GetFirstUseUntil() == nil && cur.GetRevision() == 0
		if firstUse {
			cur.FirstUseUntil = timestamppb.New(now.Add(firstUseWindow))
		}
		trusting := cur.GetFirstUseUntil() != nil && now.Before(cur.GetFirstUseUntil().AsTime())
		changed := firstUse
		for _, o := range tools {
			name, digest := o.name, o.digest
			p := byName[name]
			switch {
			case p == nil && trusting && !o.conflict:
				if len(cur.Tools) >= MaxPinnedTools {
					continue
				}
				p = &registryv1.ToolPin{Name: name, Digest: digest, ApprovedBy: trustedFirstUse, ApprovedAt: timestamppb.New(now)}
				cur.Tools = append(cur.Tools, p)
				byName[name] = p
				trusted, changed = true, true
			case p == nil:
				if len(cur.Tools) >= MaxPinnedTools {
					continue
				}
				p = &registryv1.ToolPin{Name: name, Quarantined: true, ObservedDigest: digest, QuarantinedAt: timestamppb.New(now)}
				cur.Tools = append(cur.Tools, p)
				byName[name] = p
				quarantined, changed = append(quarantined, p), true
			case p.GetQuarantined() || (p.GetDigest() == digest && !o.conflict):
				// Already quarantined (until approved, whatever it shows now), or as pinned.
			default:
				p.Quarantined, p.ObservedDigest, p.QuarantinedAt = true, digest, timestamppb.New(now)
				quarantined, changed = append(quarantined, p), true
			}
		}
		return changed
	})
	if err != nil {
		return nil, toConnect(err)
	}
	resp := &registryv1.ReportToolsResponse{Pins: pins, TrustedFirstUse: trusted}
	by := &auditv1.Record{Principal: m.GetPrincipal(), Tenant: m.GetTenant(), SessionId: m.GetSessionId(), TraceId: m.GetTraceId()}
	if trusted {
		s.logger.Info("pinned a server's tools on first use", "server", m.GetServer(), "tools", len(pins.GetTools()))
		s.record(ctx, by, m.GetServer(), "", MethodApprove, auditv1.Outcome_OUTCOME_ALLOWED,
			fmt.Sprintf("pinned %d tools on first use (%s)", len(pins.GetTools()), trustedFirstUse))
	}
	for _, p := range quarantined {
		resp.Quarantined = append(resp.Quarantined, p.GetName())
		old := p.GetDigest()
		if old == "" {
			old = "none (a tool not pinned before)"
		}
		msg := fmt.Sprintf("tool quarantined: its definition changed: pinned %s, observed %s; approve with `gatehouse servers approve %s --tool %s`", old, p.GetObservedDigest(), m.GetServer(), p.GetName())
		s.logger.Warn("tool quarantined", "server", m.GetServer(), "tool", p.GetName(), "pinned", p.GetDigest(), "observed", p.GetObservedDigest())
		s.record(ctx, by, m.GetServer(), p.GetName(), MethodQuarantine, auditv1.Outcome_OUTCOME_DENIED, msg)
	}
	return connect.NewResponse(resp), nil
}

// ApproveTools implements registryv1connect.RegistryServiceHandler.
func (s *Service) ApproveTools(ctx context.Context, req *connect.Request[registryv1.ApproveToolsRequest]) (*connect.Response[registryv1.ApproveToolsResponse], error) {
	who, err := s.admin(ctx, "admin/servers.approve")
	if err != nil {
		return nil, toConnect(err)
	}
	server, tool := req.Msg.GetServer(), req.Msg.GetTool()
	if !ident.ValidServerName(server) {
		return nil, toConnect(invalid("server %.64q is not a server name", server))
	}
	if len(tool) > toolpin.MaxNameBytes {
		return nil, toConnect(invalid("tool is longer than %d bytes", toolpin.MaxNameBytes))
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, toConnect(err)
	}
	s.mu.RLock()
	srv, ok := s.servers[server]
	s.mu.RUnlock()
	if !ok {
		return nil, toConnect(fmt.Errorf("%w: %q", errNotFound, server))
	}
	if !srv.GetPin() {
		return nil, toConnect(fmt.Errorf("%w: server %q is not pinned", errNotPinned, server))
	}
	var approved []*registryv1.ToolPin
	var missing bool
	pins, err := s.updatePins(ctx, server, func(cur *registryv1.ServerPins, now time.Time) bool {
		approved, missing = nil, tool != ""
		for _, p := range cur.GetTools() {
			if tool != "" && p.GetName() != tool {
				continue
			}
			missing = false
			if !p.GetQuarantined() {
				continue
			}
			p.Digest, p.Quarantined, p.ObservedDigest, p.QuarantinedAt = p.GetObservedDigest(), false, "", nil
			p.ApprovedBy, p.ApprovedAt = who, timestamppb.New(now)
			approved = append(approved, p)
		}
		// An operator's approval ends the trust of a first listing.
		closed := cur.FirstUseUntil != nil
		cur.FirstUseUntil = nil
		return len(approved) > 0 || closed
	})
	if err != nil {
		return nil, toConnect(err)
	}
	if missing {
		return nil, toConnect(fmt.Errorf("%w: server %q has no tool %q seen by the gateway", errNotFound, server, tool))
	}
	resp := &registryv1.ApproveToolsResponse{Pins: pins}
	by := &auditv1.Record{Principal: who}
	for _, p := range approved {
		resp.Approved = append(resp.Approved, p.GetName())
		s.logger.Info("tool approved", "server", server, "tool", p.GetName(), "digest", p.GetDigest(), "by", who)
		s.record(ctx, by, server, p.GetName(), MethodApprove, auditv1.Outcome_OUTCOME_ALLOWED, "pinned "+p.GetDigest()+"; quarantine lifted")
	}
	return connect.NewResponse(resp), nil
}

// updatePins applies change to a server's stored pins (an empty set at revision 0 when
// there are none) in a transaction conditional on the value read, retrying a lost race, and
// returns the pins as stored (with their revision) once this replica's cache holds them.
// change reports whether it changed anything; it is called again after a lost race.
func (s *Service) updatePins(ctx context.Context, server string, change func(cur *registryv1.ServerPins, now time.Time) bool) (*registryv1.ServerPins, error) {
	key := s.pinsPrefix + server
	for range pinAttempts {
		resp, err := s.kv.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("%w: read pins: %w", errStore, err)
		}
		cur := &registryv1.ServerPins{Server: server}
		var modRev int64
		if len(resp.Kvs) == 1 {
			modRev = resp.Kvs[0].ModRevision
			if err := protojson.Unmarshal(resp.Kvs[0].Value, cur); err != nil || cur.GetServer() != server || validatePins(cur) != nil {
				// Unreadable pins pin nothing: everything is quarantined again from scratch,
				// never trusted (the revision is not 0).
				s.logger.Error("unreadable pins in etcd; starting them over", "key", key, "err", err)
				cur = &registryv1.ServerPins{Server: server}
			}
			cur.Revision = modRev
		}
		if !change(cur, s.now()) {
			return cur, nil
		}
		slices.SortFunc(cur.Tools, func(a, b *registryv1.ToolPin) int { return strings.Compare(a.GetName(), b.GetName()) })
		stored := proto.Clone(cur).(*registryv1.ServerPins)
		stored.Revision = 0
		b, err := protojson.Marshal(stored)
		if err != nil {
			return nil, fmt.Errorf("encode pins: %w", err)
		}
		txn, err := s.kv.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
			Then(clientv3.OpPut(key, string(b))).
			Commit()
		if err != nil {
			return nil, fmt.Errorf("%w: write pins: %w", errStore, err)
		}
		if !txn.Succeeded {
			continue
		}
		cur.Revision = txn.Header.Revision
		if err := s.waitRev(ctx, cur.Revision); err != nil {
			return nil, err
		}
		return cur, nil
	}
	return nil, fmt.Errorf("%w: the pins of %q kept changing", errConflict, server)
}

// admin authorizes an operator's request for action on the gateway and returns who made it.
func (s *Service) admin(ctx context.Context, action string) (string, error) {
	p, err := rpcserver.AdminCaller(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errCallerDenied, err)
	}
	if p == nil {
		return "gatehouse", nil // a call within the process
	}
	if s.authorize == nil {
		return "", fmt.Errorf("%w: no policy decides %s here", errCallerDenied, action)
	}
	if err := s.authorize(ctx, p, action, ""); err != nil {
		if errors.Is(err, rpcserver.ErrPolicyUnavailable) {
			return "", fmt.Errorf("%w: %w", errPolicyUnavailable, err)
		}
		return "", fmt.Errorf("%w: %w", errCallerDenied, err)
	}
	return p.GetId(), nil
}

// record writes one audit record of the registry's (a quarantine, an approval, an import),
// complete in itself. The change it records is already stored: a record the audit log
// refuses is logged at ERROR with everything it held.
func (s *Service) record(ctx context.Context, by *auditv1.Record, server, tool, method string, outcome auditv1.Outcome, msg string) {
	rec := proto.Clone(by).(*auditv1.Record)
	rec.Time, rec.Server, rec.Tool, rec.Method, rec.Outcome, rec.Error = timestamppb.New(s.now()), server, tool, method, outcome, msg
	rec.Phase, rec.CallId = auditv1.Phase_PHASE_COMPLETE, newID()
	if s.audit == nil {
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if _, err := s.audit.Append(actx, connect.NewRequest(&auditv1.AppendRequest{Record: rec})); err != nil {
		s.logger.Error("audit append failed", "method", method, "server", server, "tool", tool, "principal", rec.GetPrincipal(), "record", msg, "err", err)
	}
}

// auditTimeout bounds one audit append.
const auditTimeout = 10 * time.Second

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
