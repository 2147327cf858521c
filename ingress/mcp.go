package ingress

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	headerSession  = "Mcp-Session-Id"
	headerRevision = "MCP-Protocol-Version"
	// auditTimeout bounds one audit append; past it the call is refused (fail closed).
	auditTimeout = 10 * time.Second
)

// validRevision accepts what looks like a revision date (YYYY-MM-DD); whether the gateway or
// the session speaks it is decided once the session is known.
func validRevision(v string) bool {
	if len(v) != 10 || v[4] != '-' || v[7] != '-' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if i != 4 && i != 7 && (v[i] < '0' || v[i] > '9') {
			return false
		}
	}
	return true
}

// exchange is one HTTP request on an MCP endpoint, as it moves through the hot path.
type exchange struct {
	w         http.ResponseWriter
	r         *http.Request
	traceID   string
	server    string
	principal *authv1.Principal
	session   sessionstore.Record
}

func (s *Service) serveMCP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{w: w, r: r, traceID: traceID(r), server: r.PathValue("name")}
	if why := s.guard.check(r); why != "" {
		writeError(w, http.StatusForbidden, nil, jsonrpc.CodeInvalidRequest, "Forbidden: "+why)
		return
	}
	if v := r.Header.Get(headerRevision); v != "" && !validRevision(v) {
		writeError(w, http.StatusBadRequest, nil, jsonrpc.CodeInvalidRequest,
			"Bad Request: unsupported MCP-Protocol-Version "+quote(v)+"; supported: "+strings.Join(Supported, ", "))
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		// The guard admitted this origin: let browser hosts on it read the answer and the
		// session header, and answer their preflights.
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", "Mcp-Session-Id, WWW-Authenticate")
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	if r.Header.Get("Last-Event-ID") != "" {
		// The gateway gives its events no ids, so any Last-Event-ID names a stream it never
		// served: resuming it would replay another stream's messages or none.
		writeError(w, http.StatusBadRequest, nil, jsonrpc.CodeInvalidRequest, "Bad Request: Last-Event-ID names no stream of this gateway (it does not resume streams)")
		return
	}
	switch r.Method {
	case http.MethodPost:
		s.post(x)
	case http.MethodGet:
		s.listen(x)
	case http.MethodDelete:
		s.terminate(x)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeError(w, http.StatusMethodNotAllowed, nil, jsonrpc.CodeInvalidRequest, "Method Not Allowed")
	}
}

// admit authenticates the host and checks the server exists. It answers the host itself and
// returns false when the request must stop.
func (s *Service) admit(x *exchange) bool {
	credential, ok := bearer(x.r)
	if !ok {
		x.w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse", error="invalid_request"`)
		writeError(x.w, http.StatusUnauthorized, nil, jsonrpc.CodeInvalidRequest, "Unauthorized: malformed Authorization header")
		return false
	}
	p, err := s.auth.authenticate(x.r.Context(), credential, x.server)
	if err != nil {
		if connect.CodeOf(err) == connect.CodeUnauthenticated {
			if credential == "" {
				x.w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse"`)
			} else {
				x.w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse", error="invalid_token"`)
			}
		}
		s.writeConnectError(x, nil, err)
		return false
	}
	x.principal = p
	// Whether the server exists is not checked here: requests other than initialize need a
	// session, which is bound to its server, and initialize asks policy. An unknown server
	// and one the caller may not use are answered alike, so neither can be discovered.
	return true
}

// resume loads the host's session: 400 without one, 404 for an unknown, ended or foreign one.
func (s *Service) resume(x *exchange) bool {
	id := x.r.Header.Get(headerSession)
	if id == "" {
		writeError(x.w, http.StatusBadRequest, nil, jsonrpc.CodeInvalidRequest, "Bad Request: Mcp-Session-Id header is required")
		return false
	}
	ctx := x.r.Context()
	rec, err := s.deps.Sessions.Get(ctx, id)
	if err == nil && (rec.Principal != x.principal.GetId() || rec.Tenant != x.principal.GetTenant() || rec.Server != x.server) {
		err = sessionstore.ErrNotFound // another principal's or another server's session: never served
	}
	if err == nil {
		err = s.deps.Sessions.Touch(ctx, id)
	}
	if errors.Is(err, sessionstore.ErrNotFound) {
		writeError(x.w, http.StatusNotFound, nil, jsonrpc.CodeInvalidRequest, "Not Found: session not found")
		return false
	}
	if err != nil {
		s.logger.Error("session store", "trace_id", x.traceID, "err", err)
		x.w.Header().Set("Retry-After", "1")
		writeError(x.w, http.StatusServiceUnavailable, nil, jsonrpc.CodeInternalError, "Service Unavailable: sessions cannot be read (trace "+x.traceID+")")
		return false
	}
	// The revision header must be one the gateway speaks, or the one this session negotiated
	// with its upstream (passed through unchanged, it may be older than the gateway's own).
	if v := x.r.Header.Get(headerRevision); v != "" && !slices.Contains(Supported, v) && v != rec.ProtocolVersion {
		writeError(x.w, http.StatusBadRequest, nil, jsonrpc.CodeInvalidRequest,
			"Bad Request: unsupported MCP-Protocol-Version "+quote(v)+"; supported: "+strings.Join(Supported, ", "))
		return false
	}
	x.session = rec
	return true
}

func (s *Service) post(x *exchange) {
	w, r := x.w, x.r
	if r.ContentLength > s.maxBody {
		writeError(w, http.StatusRequestEntityTooLarge, nil, jsonrpc.CodeInvalidRequest, "Request Entity Too Large")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, nil, jsonrpc.CodeInvalidRequest, "Unsupported Media Type: Content-Type must be application/json")
		return
	}
	if !accepts(r, "application/json") || !accepts(r, "text/event-stream") {
		writeError(w, http.StatusNotAcceptable, nil, jsonrpc.CodeInvalidRequest, "Not Acceptable: Accept must include application/json and text/event-stream")
		return
	}
	if !s.admit(x) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, nil, jsonrpc.CodeInvalidRequest, "Request Entity Too Large")
			return
		}
		writeError(w, http.StatusBadRequest, nil, jsonrpc.CodeParseError, "Bad Request: reading body: "+err.Error())
		return
	}
	hasSession := r.Header.Get(headerSession) != ""
	if hasSession && !s.resume(x) {
		return
	}
	msgs, batch, err := jsonrpc.Parse(body, hasSession && x.session.ProtocolVersion == "2025-03-26")
	if err != nil {
		e := jsonrpc.AsError(err)
		writeError(w, http.StatusBadRequest, e.ID, e.Code, e.Message)
		return
	}
	if batch && len(msgs) > s.cfg.MaxBatch {
		writeError(w, http.StatusBadRequest, nil, jsonrpc.CodeInvalidRequest, "Bad Request: batch larger than the limit")
		return
	}
	for _, m := range msgs {
		if m.Kind == jsonrpc.KindNotification && !strings.HasPrefix(m.Method, "notifications/") {
			// A request without an id would reach the upstream with no decision and no audit
			// record: every method that is not a notification must be a request.
			writeError(w, http.StatusBadRequest, nil, jsonrpc.CodeInvalidRequest, "Bad Request: "+quote(m.Method)+" is not a notification: it needs an id")
			return
		}
		if m.Method == "initialize" && (batch || hasSession) {
			writeError(w, http.StatusBadRequest, m.ID, jsonrpc.CodeInvalidRequest, "Bad Request: initialize must be sent alone and without a session")
			return
		}
	}
	if !hasSession {
		if v := r.Header.Get(headerRevision); v != "" && !slices.Contains(Supported, v) {
			writeError(w, http.StatusBadRequest, nil, jsonrpc.CodeInvalidRequest,
				"Bad Request: unsupported MCP-Protocol-Version "+quote(v)+"; supported: "+strings.Join(Supported, ", "))
			return
		}
		if msgs[0].Method != "initialize" || msgs[0].Kind != jsonrpc.KindRequest {
			writeError(w, http.StatusBadRequest, msgs[0].ID, jsonrpc.CodeInvalidRequest, "Bad Request: Mcp-Session-Id header is required")
			return
		}
		s.initialize(x, msgs[0])
		return
	}
	if batch {
		s.batch(x, msgs)
		return
	}
	m := msgs[0]
	if m.Kind != jsonrpc.KindRequest {
		if err := s.forward(x, m); err != nil {
			s.upstreamFailed(x, nil, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		return
	}
	s.request(x, m, nil)
}

// forward delivers a notification or a response to the upstream.
func (s *Service) forward(x *exchange, m *jsonrpc.Message) error {
	return s.deps.Bridge.Deliver(x.r.Context(), s.sendRequest(x, m), func(*bridgev1.SendResponse) error { return nil })
}

func (s *Service) sendRequest(x *exchange, m *jsonrpc.Message) *bridgev1.SendRequest {
	req := &bridgev1.SendRequest{
		SessionId:       x.session.ID,
		Server:          x.server,
		ProtocolVersion: x.session.ProtocolVersion,
		Message:         m.Raw,
	}
	if m.Kind == jsonrpc.KindRequest {
		req.RequestId = m.ID
	}
	return req
}

// initialize opens a session: policy may the principal use this server at all, a session
// record under a lease, then the upstream's own initialize, passed through unchanged.
func (s *Service) initialize(x *exchange, m *jsonrpc.Message) {
	ctx := x.r.Context()
	d, err := s.check(ctx, x, "initialize", "")
	if err != nil {
		s.writeConnectError(x, m.ID, err)
		return
	}
	if d.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		// A caller cannot even learn that a server it may not use exists.
		writeError(x.w, http.StatusNotFound, nil, jsonrpc.CodeInvalidRequest, "Not Found: no server "+quote(x.server))
		return
	}
	rec, err := s.deps.Sessions.Create(ctx, sessionstore.Record{Server: x.server, Principal: x.principal.GetId(), Tenant: x.principal.GetTenant()}, s.cfg.MaxSessionsPerPrincipal)
	if errors.Is(err, sessionstore.ErrTooManySessions) {
		x.w.Header().Set("Retry-After", "30")
		writeError(x.w, http.StatusServiceUnavailable, m.ID, codeUnavailable, "Service Unavailable: "+err.Error()+"; end a session (DELETE) or wait for one to expire")
		return
	}
	if err != nil {
		s.writeInternal(x, m.ID, err)
		return
	}
	x.session = rec
	var out [][]byte
	var revision string
	failed := false
	err = s.deps.Bridge.Deliver(ctx, s.sendRequest(x, m), func(msg *bridgev1.SendResponse) error {
		out = append(out, msg.GetMessage())
		if msg.GetProtocolVersion() != "" {
			revision = msg.GetProtocolVersion()
		}
		if msg.GetFinal() {
			failed = msg.GetError()
		}
		return nil
	})
	if err == nil && revision != "" {
		rec.ProtocolVersion = revision
		err = s.deps.Sessions.Update(ctx, rec)
	}
	if err != nil || failed || len(out) == 0 {
		s.endSession(context.WithoutCancel(ctx), rec.ID)
		if err != nil {
			s.writeConnectError(x, m.ID, err)
			return
		}
		if len(out) == 0 {
			writeError(x.w, http.StatusBadGateway, m.ID, jsonrpc.CodeInternalError, "upstream sent no initialize response")
			return
		}
	} else {
		x.w.Header().Set(headerSession, rec.ID)
	}
	if len(out) == 1 {
		writeJSON(x.w, http.StatusOK, out[0])
		return
	}
	sse := startSSE(x.w)
	for _, b := range out {
		if sse.send(b) != nil {
			return
		}
	}
}

// decided are the methods that policy decides and the audit log records, one record per call.
var decided = map[string]bool{"tools/call": true, "resources/read": true, "prompts/get": true}

// request relays one request and streams the upstream's messages back as SSE (progress,
// logs and server requests may precede the response, and hosts must accept SSE). In a batch,
// collect receives the response.
func (s *Service) request(x *exchange, m *jsonrpc.Message, collect func([]byte)) {
	ctx := x.r.Context()
	start := time.Now()
	var rec *auditv1.Record
	if decided[m.Method] {
		rec = &auditv1.Record{
			Time: timestamppb.New(start), TraceId: x.traceID, SessionId: x.session.ID,
			Principal: x.principal.GetId(), Tenant: x.principal.GetTenant(), Server: x.server,
			Method: m.Method, Tool: m.Name, ArgumentsDigest: digest(m.Arguments),
		}
		d, err := s.check(ctx, x, m.Method, m.Name)
		if err != nil {
			rec.Outcome, rec.Error = auditv1.Outcome_OUTCOME_DENIED, err.Error()
			if connect.CodeOf(err) != connect.CodeResourceExhausted {
				rec.Outcome = auditv1.Outcome_OUTCOME_FAILED
			}
			s.finish(x, m, rec, start, err, collect)
			return
		}
		rec.BundleVersion, rec.PolicyIds = d.GetBundleVersion(), d.GetPolicyIds()
		if d.GetDecision() != policyv1.Decision_DECISION_ALLOW {
			rec.Outcome, rec.Error = auditv1.Outcome_OUTCOME_DENIED, "denied by policy"
			s.finish(x, m, rec, start, errDenied, collect)
			return
		}
	}
	var sse *sseWriter
	var final *bridgev1.SendResponse
	hostGone := false
	err := s.deps.Bridge.Deliver(ctx, s.sendRequest(x, m), func(msg *bridgev1.SendResponse) error {
		if msg.GetFinal() {
			final = msg
			return nil
		}
		if collect != nil {
			// A batch is answered with responses only, so a server request (sampling,
			// elicitation, roots) could never be answered: fail the call rather than hang.
			if sm, perr := jsonrpc.ParseMessage(msg.GetMessage()); perr == nil && sm.Kind == jsonrpc.KindRequest {
				return connect.NewError(connect.CodeFailedPrecondition, errors.New("the upstream sent a request ("+sm.Method+") that a batched call cannot answer; send the call alone"))
			}
			return nil
		}
		if sse == nil {
			sse = startSSE(x.w)
		}
		if err := sse.send(msg.GetMessage()); err != nil {
			hostGone = true // the host went away; ending Deliver cancels the upstream call
			return err
		}
		return nil
	})
	if final != nil {
		if rec != nil && final.GetError() {
			rec.Outcome, rec.Error = auditv1.Outcome_OUTCOME_FAILED, "upstream returned an error"
		}
		s.finishWith(x, rec, start, final.GetMessage(), sse, collect, m)
		return
	}
	if err == nil {
		err = connect.NewError(connect.CodeUnavailable, errors.New("upstream ended without a response"))
	}
	if hostGone {
		err = errors.New("the host went away before the response")
	}
	if sse == nil {
		if connect.CodeOf(err) == connect.CodeNotFound && collect == nil {
			s.upstreamFailed(x, m.ID, err) // answer 404 first; the record follows
			s.finish(x, m, rec, start, err, func([]byte) {})
			return
		}
		s.finish(x, m, rec, start, err, collect)
		return
	}
	if rec != nil {
		rec.Outcome, rec.Error = auditv1.Outcome_OUTCOME_FAILED, err.Error()
		if s.append(context.WithoutCancel(ctx), x, rec, start) != nil || hostGone {
			return
		}
	} else if hostGone {
		return
	}
	code, msg := s.rpcError(x, err)
	_ = sse.send(jsonrpc.ErrorResponse(m.ID, code, msg))
}

// finish answers a request that ends in an error before any upstream message reached the host.
func (s *Service) finish(x *exchange, m *jsonrpc.Message, rec *auditv1.Record, start time.Time, err error, collect func([]byte)) {
	if rec != nil {
		if rec.Outcome == auditv1.Outcome_OUTCOME_UNSPECIFIED {
			rec.Outcome = auditv1.Outcome_OUTCOME_FAILED
		}
		if rec.Error == "" {
			rec.Error = err.Error()
		}
		if aerr := s.append(x.r.Context(), x, rec, start); aerr != nil {
			err = aerr
		}
	}
	code, msg := s.rpcError(x, err)
	resp := jsonrpc.ErrorResponse(m.ID, code, msg)
	if collect != nil {
		collect(resp)
		return
	}
	writeJSON(x.w, http.StatusOK, resp)
}

// finishWith records the outcome, then hands the host the upstream's response: no call
// completes without its audit record committed.
func (s *Service) finishWith(x *exchange, rec *auditv1.Record, start time.Time, final []byte, sse *sseWriter, collect func([]byte), m *jsonrpc.Message) {
	if rec != nil {
		if rec.Outcome == auditv1.Outcome_OUTCOME_UNSPECIFIED {
			rec.Outcome = auditv1.Outcome_OUTCOME_ALLOWED
		}
		if err := s.append(x.r.Context(), x, rec, start); err != nil {
			code, msg := s.rpcError(x, err)
			final = jsonrpc.ErrorResponse(m.ID, code, msg)
		}
	}
	if collect != nil {
		collect(final)
		return
	}
	if sse == nil {
		sse = startSSE(x.w)
	}
	_ = sse.send(final)
}

// batch handles a JSON-RPC batch (2025-03-26): requests answered together in one array.
func (s *Service) batch(x *exchange, msgs []*jsonrpc.Message) {
	var responses [][]byte
	collect := func(b []byte) { responses = append(responses, b) }
	for _, m := range msgs {
		if m.Kind != jsonrpc.KindRequest {
			if err := s.forward(x, m); err != nil {
				code, msg := s.rpcError(x, err)
				collect(jsonrpc.ErrorResponse(nil, code, msg))
			}
			continue
		}
		s.request(x, m, collect)
	}
	if len(responses) == 0 {
		x.w.WriteHeader(http.StatusAccepted)
		return
	}
	out := []byte{'['}
	for i, b := range responses {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, b...)
	}
	writeJSON(x.w, http.StatusOK, append(out, ']'))
}

// listen serves the standalone SSE stream (GET): upstream messages that belong to no request.
func (s *Service) listen(x *exchange) {
	if !accepts(x.r, "text/event-stream") {
		writeError(x.w, http.StatusNotAcceptable, nil, jsonrpc.CodeInvalidRequest, "Not Acceptable: Accept must include text/event-stream")
		return
	}
	if !s.admit(x) || !s.resume(x) {
		return
	}
	ctx, cancel := context.WithCancel(x.r.Context())
	stop := context.AfterFunc(s.draining, cancel) // standalone streams end when the gateway drains
	defer stop()
	var sse *sseWriter
	opened := make(chan struct{})
	var pinger sync.WaitGroup
	defer pinger.Wait() // deferred calls run last first: cancel stops the pinger, then this
	defer cancel()      // waits for it, so no ping is written after the handler returns
	pinger.Add(1)
	go func() {
		defer pinger.Done()
		select {
		case <-opened:
		case <-ctx.Done():
			return
		}
		ping := time.NewTicker(15 * time.Second)
		defer ping.Stop()
		for {
			select {
			case <-ping.C:
				if sse.comment("ping") != nil {
					cancel()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	err := s.deps.Bridge.Subscribe(ctx, &bridgev1.ListenRequest{
		SessionId: x.session.ID, Server: x.server, ProtocolVersion: x.session.ProtocolVersion,
	}, func() error {
		sse = startSSE(x.w)
		close(opened)
		return sse.flush() // the host learns at once that its stream is open
	}, func(msg *bridgev1.ListenResponse) error {
		return sse.send(msg.GetMessage())
	})
	if err != nil && sse == nil {
		s.writeConnectError(x, nil, err)
	}
}

// terminate ends a session (DELETE).
func (s *Service) terminate(x *exchange) {
	if !s.admit(x) || !s.resume(x) {
		return
	}
	s.endSession(x.r.Context(), x.session.ID)
	x.w.WriteHeader(http.StatusOK)
}

func (s *Service) endSession(ctx context.Context, id string) {
	if err := s.deps.Sessions.Delete(ctx, id); err != nil && !errors.Is(err, sessionstore.ErrNotFound) {
		s.logger.Warn("end session", "session", id, "err", err)
	}
	// The bridges also reap on the session watch; this makes the common case immediate.
	s.deps.Bridge.EndSession(id)
}

func (s *Service) check(ctx context.Context, x *exchange, action, name string) (*policyv1.CheckResponse, error) {
	p := x.principal
	resp, err := s.deps.Policy.Check(ctx, connect.NewRequest(&policyv1.CheckRequest{
		Subject:  &policyv1.Subject{Id: p.GetId(), Tenant: p.GetTenant(), Groups: p.GetGroups(), Kind: kindName(p.GetKind())},
		Action:   action,
		Resource: &policyv1.Resource{Server: x.server, Name: name},
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func (s *Service) append(ctx context.Context, x *exchange, rec *auditv1.Record, start time.Time) error {
	rec.Latency = durationpb.New(time.Since(start))
	// The record is written even when the host has gone: the call happened.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if _, err := s.deps.Audit.Append(actx, connect.NewRequest(&auditv1.AppendRequest{Record: rec})); err != nil {
		s.logger.Error("audit append failed; refusing the call", "trace_id", x.traceID, "err", err)
		return errAuditUnavailable
	}
	return nil
}

func kindName(k authv1.PrincipalKind) string {
	switch k {
	case authv1.PrincipalKind_PRINCIPAL_KIND_USER:
		return "user"
	case authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE:
		return "service"
	case authv1.PrincipalKind_PRINCIPAL_KIND_ANONYMOUS:
		return "anonymous"
	}
	return "unspecified"
}

// bearer extracts the bearer token; ok is false for another scheme or an oversized value.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", true
	}
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || len(token) > maxCredential {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// accepts reports whether the Accept header admits the media type.
func accepts(r *http.Request, mediaType string) bool {
	major, _, _ := strings.Cut(mediaType, "/")
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			if mt == mediaType || mt == "*/*" || mt == major+"/*" {
				return true
			}
		}
	}
	return false
}

func digest(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// traceID takes the trace id of a valid W3C traceparent header, or makes a new one.
func traceID(r *http.Request) string {
	if tp := r.Header.Get("Traceparent"); len(tp) == 55 && tp[2] == '-' && tp[35] == '-' {
		id := tp[3:35]
		if _, err := hex.DecodeString(id); err == nil && id != strings.Repeat("0", 32) {
			return id
		}
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
