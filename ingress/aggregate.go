package ingress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The aggregated endpoint (/mcp): one MCP server made of every server the caller may use. The
// gateway answers initialize itself; each server's upstream opens lazily on the session's
// first request for it (the bridge initializes it with the host's own initialize). Tools and
// prompts are named "<prefix>__<name>" (catalog.Prefix; a server may have another prefix or
// none), resources keep their URIs. Every request for one server becomes a call on that
// server, decided and audited as on the server's own endpoint, with the name the server
// knows; lists fan out to every server in parallel (lists.go's filtering applies to each).

const aggregatedPath = "/mcp"

// gatewayInfo is the serverInfo of the aggregated endpoint.
const gatewayInfo = `{"name":"gatehouse","version":"0.1.0"}`

// maxStoredInitialize bounds the host's initialize kept in the session record (etcd).
const maxStoredInitialize = 64 << 10

// Errors of the aggregated endpoint: a name or URI no server of the session serves is answered
// as an upstream answers an unknown tool, so a server the caller may not use cannot be found.
var (
	errUnknownTool     = &Error{"unknown_tool", http.StatusOK, -32602, "unknown tool", slog.LevelDebug, ""}
	errUnknownPrompt   = &Error{"unknown_prompt", http.StatusOK, -32602, "unknown prompt", slog.LevelDebug, ""}
	errUnknownResource = &Error{"unknown_resource", http.StatusOK, -32602, "unknown resource", slog.LevelDebug, ""}
	errUnknownMethod   = &Error{"unknown_method", http.StatusOK, -32601, "method not found", slog.LevelDebug, ""}
	errBadCursor       = &Error{"bad_cursor", http.StatusOK, -32602, "invalid cursor", slog.LevelDebug, ""}
	errUnknownResponse = &Error{"unknown_response", http.StatusBadRequest, -32600, "a response to no request of the gateway's", slog.LevelDebug, ""}
)

// openAggregated answers an aggregated session's initialize: policy decides initialize on
// every server approved for the principal's tenant, the allowed ones (in configuration order)
// are the session's servers, and the gateway answers with its own capabilities. No upstream
// is contacted. One COMPLETE record (server "/mcp") holds the session's opening, and one per
// allowed server its decision (bundle, policies), all durable before the answer.
func (s *Service) openAggregated(x *exchange, m *jsonrpc.Message) {
	ctx := x.r.Context()
	revision := negotiate(m.ProtocolVersion)
	init, err := storedInitialize(m, revision)
	if err != nil {
		s.refuse(x, m.ID, errInvalidMessage, err)
		return
	}
	servers, decisions, err := s.allowedServers(ctx, x, m.ProtocolVersion)
	if err != nil {
		s.refuse(x, m.ID, fromPolicy(err), err)
		return
	}
	var key [32]byte
	_, _ = rand.Read(key[:])
	rec, ok := s.createSession(x, m, sessionstore.Record{
		Aggregated: true, ProtocolVersion: revision, Servers: servers, Initialize: init, CursorKey: hex.EncodeToString(key[:]),
	})
	if !ok {
		return
	}
	// One durable record for the session, and one per server it may open, naming the bundle
	// and the policies that allowed it: every upstream the session will open has its
	// decision on record before it can be sent anything. Appended together (group commit).
	records := []*auditv1.Record{{
		Time: timestamppb.Now(), TraceId: x.traceID, CallId: newCallID(), SessionId: rec.ID, Principal: x.principal.GetId(),
		Tenant: x.principal.GetTenant(), Server: aggregatedPath, Method: "initialize", Phase: auditv1.Phase_PHASE_COMPLETE,
		Outcome: auditv1.Outcome_OUTCOME_ALLOWED,
	}}
	for i, name := range servers {
		records = append(records, &auditv1.Record{
			Time: timestamppb.Now(), TraceId: x.traceID, CallId: newCallID(), SessionId: rec.ID, Principal: x.principal.GetId(),
			Tenant: x.principal.GetTenant(), Server: name, Method: "initialize", Phase: auditv1.Phase_PHASE_COMPLETE,
			Outcome: auditv1.Outcome_OUTCOME_ALLOWED, BundleVersion: decisions[i].GetBundleVersion(), PolicyIds: decisions[i].GetPolicyIds(),
		})
	}
	failed := make([]error, len(records))
	var wg sync.WaitGroup
	for i, r := range records {
		wg.Go(func() { failed[i] = s.appendRecord(ctx, r, false) })
	}
	wg.Wait()
	if err := errors.Join(failed...); err != nil {
		s.endSession(context.WithoutCancel(ctx), rec.ID)
		s.refuse(x, m.ID, errAuditUnavailable, err)
		return
	}
	result, _ := json.Marshal(map[string]any{
		"protocolVersion": revision,
		"capabilities":    s.capabilities(servers),
		"serverInfo":      json.RawMessage(gatewayInfo),
		"instructions":    s.instructions(servers),
	})
	s.logger.Info("aggregated session opened", "session_tag", digest([]byte(rec.ID))[:12], "principal", rec.Principal, "tenant", rec.Tenant, "servers", servers, "trace_id", x.traceID)
	x.w.Header().Set(headerSession, rec.ID)
	writeJSON(x.w, http.StatusOK, resultResponse(m.ID, result))
}

// negotiate picks the revision of an aggregated session: the host's when the gateway speaks
// it, else the newest it speaks.
func negotiate(requested string) string {
	if slices.Contains(Supported, requested) {
		return requested
	}
	return Supported[len(Supported)-1]
}

// storedInitialize is the host's initialize as each upstream will be sent it: the host's
// params, asking for the revision the gateway negotiated with the host, under the gateway's id.
func storedInitialize(m *jsonrpc.Message, revision string) (json.RawMessage, error) {
	if len(m.Params) > maxStoredInitialize {
		return nil, fmt.Errorf("initialize params of %d bytes, over %d", len(m.Params), maxStoredInitialize)
	}
	params, err := splice(m.Params, "protocolVersion", mustQuote(revision))
	if err != nil {
		return nil, err
	}
	return json.RawMessage(`{"jsonrpc":"2.0","id":"gatehouse-open","method":"initialize","params":` + string(params) + `}`), nil
}

// allowedServers are the servers approved for the principal's tenant on which policy allows
// initialize, in configuration order, with the decisions that allowed them.
func (s *Service) allowedServers(ctx context.Context, x *exchange, revision string) ([]string, []*policyv1.CheckResponse, error) {
	tenant := x.principal.GetTenant()
	var names []string
	var decisions []*policyv1.CheckResponse
	for _, srv := range s.deps.Catalog.Servers() {
		if !slices.Contains(srv.GetTenants(), tenant) {
			continue
		}
		d, err := s.decide(ctx, x.principal, srv.GetName(), "initialize", "", &policyv1.RequestContext{
			SourceAddress: sourceAddress(x.r), ProtocolVersion: revision,
		})
		if err != nil {
			return nil, nil, err
		}
		if d.GetDecision() == policyv1.Decision_DECISION_ALLOW {
			names, decisions = append(names, srv.GetName()), append(decisions, d)
		}
	}
	return names, decisions, nil
}

// instructions merges the servers' declared instructions, each under its server's name.
func (s *Service) instructions(servers []string) string {
	var b strings.Builder
	for _, name := range servers {
		srv, ok := s.deps.Catalog.Server(name)
		if !ok {
			continue
		}
		if text := serverInstructions(srv); text != "" {
			fmt.Fprintf(&b, "## %s\n%s\n\n", name, text)
		}
	}
	return strings.TrimSpace(b.String())
}

// sessionServers are the session's servers still in the catalogue, in configuration order.
func (s *Service) sessionServers(rec sessionstore.Record) []*registryv1.Server {
	out := make([]*registryv1.Server, 0, len(rec.Servers))
	for _, name := range rec.Servers {
		if srv, ok := s.deps.Catalog.Server(name); ok && slices.Contains(srv.GetTenants(), rec.Tenant) {
			out = append(out, srv)
		}
	}
	return out
}

// route finds the server of an aggregated name: the server whose prefix it carries, else the
// server without a prefix. It returns the name the server knows.
func route(servers []*registryv1.Server, name string) (*registryv1.Server, string, bool) {
	var bare *registryv1.Server
	for _, srv := range servers {
		p := catalog.Prefix(srv)
		if p == "" {
			bare = srv
			continue
		}
		if rest, ok := strings.CutPrefix(name, p+catalog.NameSeparator); ok && rest != "" {
			return srv, rest, true
		}
	}
	if bare != nil && !claimed(servers, name) {
		return bare, name, true
	}
	return nil, "", false
}

// claimed reports whether name begins with a prefixed server's prefix (whatever the session
// may use): such a name is never routed to the server without a prefix, whose item of that
// name is hidden from lists instead.
func claimed(servers []*registryv1.Server, name string) bool {
	for _, srv := range servers {
		if p := catalog.Prefix(srv); p != "" && strings.HasPrefix(name, p+catalog.NameSeparator) {
			return true
		}
	}
	return false
}

// aggregatedName is what the host sees of a server's tool or prompt name.
func aggregatedName(srv *registryv1.Server, name string) string {
	if p := catalog.Prefix(srv); p != "" {
		return p + catalog.NameSeparator + name
	}
	return name
}

// aggregated serves one request of an aggregated session.
func (s *Service) aggregated(ctx context.Context, x *exchange, m *jsonrpc.Message, r replier) {
	servers := s.sessionServers(x.session)
	switch m.Method {
	case "ping":
		_ = r.answer(resultResponse(m.ID, []byte(`{}`)), nil)
	case "tools/list", "prompts/list", "resources/list", "resources/templates/list":
		s.aggregateList(ctx, x, m, servers, r)
	case "tools/call", "prompts/get":
		unknown := errUnknownTool
		if m.Method == "prompts/get" {
			unknown = errUnknownPrompt
		}
		srv, name, ok := route(servers, m.Name)
		if !ok {
			_ = r.answer(refusalResponse(m.ID, unknown, x.traceID, nil), unknown)
			return
		}
		s.runOn(ctx, x, srv, m, name, r)
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		s.readResource(ctx, x, m, servers, r)
	case "completion/complete":
		s.complete(ctx, x, m, servers, r)
	case "logging/setLevel":
		s.broadcast(ctx, x, m, servers, r)
	default:
		_ = r.answer(refusalResponse(m.ID, errUnknownMethod, x.traceID, nil), errUnknownMethod)
	}
}

// runOn runs m as a call on one server of an aggregated session; name, when not empty, is
// the tool or prompt name the server knows (m carries the aggregated one). What the upstream
// sends back is translated for the host (server requests get ids that name the server).
func (s *Service) runOn(ctx context.Context, x *exchange, srv *registryv1.Server, m *jsonrpc.Message, name string, r replier) {
	if name != "" && name != m.Name {
		renamed, err := renameParam(m, "name", name)
		if err != nil {
			s.answerCall(x, m, r, errInvalidMessage, err)
			return
		}
		m = renamed
	}
	s.run(ctx, s.callOn(x, srv, m), &serverReplier{replier: r, server: srv.GetName()})
}

// callOn is the call of m on one server of an aggregated session.
func (s *Service) callOn(x *exchange, srv *registryv1.Server, m *jsonrpc.Message) *call {
	c := s.newCall(x, m)
	c.server = srv.GetName()
	c.revision = "" // the upstream's own, negotiated when the bridge opened it
	c.open = x.session.Initialize
	if srv.GetIdentity().GetTokenExchange() == nil {
		c.subject = ""
	}
	return c
}

// renameParam returns m with params.<key> set to value (a string), reread.
func renameParam(m *jsonrpc.Message, key, value string) (*jsonrpc.Message, error) {
	params, err := splice(m.Params, key, mustQuote(value))
	if err != nil {
		return nil, err
	}
	return withParams(m, params)
}

// withParams is m with its params replaced, reread.
func withParams(m *jsonrpc.Message, params []byte) (*jsonrpc.Message, error) {
	raw, err := splice(m.Raw, "params", params)
	if err != nil {
		return nil, err
	}
	out, err := jsonrpc.Peek(raw)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// serverReplier passes a server's messages to the host, giving the server's requests (sampling,
// elicitation, roots) ids that name the server, so the host's answer finds its way back.
type serverReplier struct {
	replier
	server string
}

func (p *serverReplier) emit(msg []byte) error {
	out, err := tagRequest(msg, p.server)
	if err != nil {
		return err
	}
	return p.replier.emit(out)
}

// tagRequest gives a server's request an id "<server>:<its id as JSON>"; other messages pass
// unchanged.
func tagRequest(msg []byte, server string) ([]byte, error) {
	m, err := jsonrpc.Peek(msg)
	if err != nil || m.Kind != jsonrpc.KindRequest {
		return msg, nil
	}
	id, err := json.Marshal(server + ":" + string(m.ID))
	if err != nil {
		return nil, err
	}
	return splice(msg, "id", id)
}

// untagResponse reads a host's response to a tagged server request: the server and the
// response with the server's own id back.
func untagResponse(m *jsonrpc.Message) (string, *jsonrpc.Message, bool) {
	var tagged string
	if json.Unmarshal(m.ID, &tagged) != nil {
		return "", nil, false
	}
	server, id, ok := strings.Cut(tagged, ":")
	if !ok || !json.Valid([]byte(id)) {
		return "", nil, false
	}
	raw, err := splice(m.Raw, "id", []byte(id))
	if err != nil {
		return "", nil, false
	}
	out, err := jsonrpc.Peek(raw)
	if err != nil {
		return "", nil, false
	}
	return server, &out, true
}

// forwardAggregated delivers a host's notification or response in an aggregated session: a
// response goes to the server whose request it answers; notifications/initialized was the
// gateway's to take; other notifications (cancelled, roots changed, progress) go to every
// open upstream of the session, which ignore what is not theirs.
func (s *Service) forwardAggregated(x *exchange, m *jsonrpc.Message) error {
	ctx := x.r.Context()
	if m.Kind == jsonrpc.KindResponse {
		server, back, ok := untagResponse(m)
		if !ok || !slices.Contains(x.session.Servers, server) {
			return errUnknownResponse
		}
		return s.deliverTo(ctx, x, server, back)
	}
	if m.Method == "notifications/initialized" {
		return nil
	}
	var wg sync.WaitGroup
	for _, srv := range s.sessionServers(x.session) {
		wg.Go(func() {
			if err := s.deliverTo(ctx, x, srv.GetName(), m); err != nil {
				s.logger.Debug("notification not delivered", "server", srv.GetName(), "method", m.Method, "err", err)
			}
		})
	}
	wg.Wait()
	return nil
}

func (s *Service) deliverTo(ctx context.Context, x *exchange, server string, m *jsonrpc.Message) error {
	req := s.sendRequest(x.principal, server, x.session.ID, "", "", m)
	req.Initialize = x.session.Initialize
	return s.deps.Bridge.Deliver(ctx, req, func(*bridgev1.SendResponse) error { return nil })
}

// broadcast sends a request every server should hear (logging/setLevel) to each of the
// session's servers, and answers the host with an empty result when any accepted it.
func (s *Service) broadcast(ctx context.Context, x *exchange, m *jsonrpc.Message, servers []*registryv1.Server, r replier) {
	results := make([]collected, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Go(func() { s.run(ctx, s.callOn(x, srv, m), &results[i]) })
	}
	wg.Wait()
	for _, res := range results {
		if res.final != nil && res.refusal == nil && !isErrorResponse(res.final) {
			_ = r.answer(resultResponse(m.ID, []byte(`{}`)), nil)
			return
		}
	}
	// None accepted it: the first server's answer says why (a refusal, or its error).
	for _, res := range results {
		if res.final != nil {
			_ = r.answer(res.final, res.refusal)
			return
		}
	}
	_ = r.answer(refusalResponse(m.ID, errUnknownMethod, x.traceID, nil), errUnknownMethod)
}

// collected is a replier that keeps a call's answer, for the aggregated endpoint's fan-outs.
type collected struct {
	final   []byte
	refusal *Error
}

func (c *collected) emit([]byte) error { return nil }
func (c *collected) answer(final []byte, refusal *Error) error {
	c.final, c.refusal = final, refusal
	return nil
}

func isErrorResponse(msg []byte) bool {
	m, err := jsonrpc.Peek(msg)
	return err != nil || m.IsError
}

// resultResponse is a JSON-RPC response with a result given as JSON.
func resultResponse(id json.RawMessage, result []byte) []byte {
	out := make([]byte, 0, len(result)+len(id)+40)
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, id...)
	out = append(out, `,"result":`...)
	out = append(out, result...)
	return append(out, '}')
}

// serverInstructions is what a server declares its instructions to be, for the merged
// initialize.
func serverInstructions(srv *registryv1.Server) string { return srv.GetInstructions() }

// capabilities merges the servers' declared capabilities. A server that declares none may
// have any, so then every capability the gateway routes is advertised.
func (s *Service) capabilities(servers []string) map[string]any {
	all := &registryv1.ServerCapabilities{Tools: true, ToolsListChanged: true, Prompts: true, PromptsListChanged: true,
		Resources: true, ResourcesSubscribe: true, ResourcesListChanged: true, Logging: true, Completions: true}
	union := &registryv1.ServerCapabilities{}
	for _, name := range servers {
		srv, ok := s.deps.Catalog.Server(name)
		if !ok {
			continue
		}
		c := srv.GetCapabilities()
		if c == nil {
			union = all
			break
		}
		union.Tools = union.Tools || c.GetTools()
		union.ToolsListChanged = union.ToolsListChanged || c.GetToolsListChanged()
		union.Prompts = union.Prompts || c.GetPrompts()
		union.PromptsListChanged = union.PromptsListChanged || c.GetPromptsListChanged()
		union.Resources = union.Resources || c.GetResources()
		union.ResourcesSubscribe = union.ResourcesSubscribe || c.GetResourcesSubscribe()
		union.ResourcesListChanged = union.ResourcesListChanged || c.GetResourcesListChanged()
		union.Logging = union.Logging || c.GetLogging()
		union.Completions = union.Completions || c.GetCompletions()
	}
	out := map[string]any{}
	if union.Tools {
		out["tools"] = map[string]any{"listChanged": union.ToolsListChanged}
	}
	if union.Prompts {
		out["prompts"] = map[string]any{"listChanged": union.PromptsListChanged}
	}
	if union.Resources {
		out["resources"] = map[string]any{"listChanged": union.ResourcesListChanged, "subscribe": union.ResourcesSubscribe}
	}
	if union.Logging {
		out["logging"] = map[string]any{}
	}
	if union.Completions {
		out["completions"] = map[string]any{}
	}
	return out
}

// listenAggregated serves an aggregated session's GET stream: the messages of every server's
// upstream that belong to no request (list_changed, resource updates, logs, server
// requests, the last with ids naming their server), merged. Each server's part waits for its
// upstream to open; one that fails is logged and the others go on. The stream ends when the
// host leaves, the session ends or every part has ended.
func (s *Service) listenAggregated(ctx context.Context, cancel context.CancelFunc, x *exchange, st *stream) {
	servers := s.sessionServers(x.session)
	ended := make(chan struct{})
	var wg sync.WaitGroup
	for _, srv := range servers {
		name := srv.GetName()
		subject := x.subject
		if srv.GetIdentity().GetTokenExchange() == nil {
			subject = ""
		}
		wg.Go(func() {
			err := s.deps.Bridge.Subscribe(ctx, &bridgev1.ListenRequest{SessionId: x.session.ID, Server: name, SubjectToken: subject},
				func() error { return nil },
				func(msg *bridgev1.ListenResponse) error {
					out, err := tagRequest(msg.GetMessage(), name)
					if err != nil {
						return err
					}
					return st.push(out)
				})
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("aggregated stream: a server's part ended", "server", name, "trace_id", x.traceID, "err", err)
			}
		})
	}
	go func() {
		wg.Wait()
		close(ended)
	}()
	sse := startSSE(x.w, s.cfg.StreamWriteTimeout)
	st.setWriter(sse)
	_ = s.write(ctx, st, sse, ended)
	cancel()
	<-ended
	if st.overflowed() {
		panic(http.ErrAbortHandler)
	}
}

// answerCall answers one request of an aggregated session with a refusal through its
// replier (a batch collects it; a POST writes it), logging the cause.
func (s *Service) answerCall(x *exchange, m *jsonrpc.Message, r replier, e *Error, cause error) {
	s.logRefusal(x, e, cause)
	_ = r.answer(refusalResponse(m.ID, e, x.traceID, nil), e)
}
