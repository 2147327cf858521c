package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// JSON-RPC error codes the gateway chooses itself, all in the implementation-defined range
// -32000..-32019 (PROTOCOLS.md: gateway-chosen codes stay there; -32020.. belong to the spec).
const (
	codeDenied           = -32001 // policy denied the call
	codeQuota            = -32002 // the tenant's quota is exhausted
	codeUnavailable      = -32003 // a dependency (policy, upstream, session store) is unavailable
	codeAuditUnavailable = -32004 // the audit log cannot record the call: it is refused
	codeTimeout          = -32005 // the upstream did not answer within the server's call timeout
	codeTooLarge         = -32006 // an upstream message exceeds the gateway's message limit
	codeCapacity         = -32007 // a cap was reached (sessions, streams, upstream processes)
	codeCancelled        = -32008 // the call was cancelled (the gateway is draining)
	codeThrottled        = -32009 // too many failed authentications from this address
	codeBreakerOpen      = -32010 // the server's circuit breaker is open: it is failing (breaker.go)
	codeQuarantined      = -32011 // the tool is quarantined: its definition is not the approved one
)

// Error is one refusal the ingress makes. Each is a row of the table below: the HTTP status
// when it is answered before any message of the exchange, the JSON-RPC code and the short,
// safe message the host sees (with the trace id appended), the level it is logged at and
// whether the host may retry after a second.
//
// Status is used when the refusal is answered at the HTTP level (before the exchange, or for
// an initialize, which has no session to answer in). A call's refusal is a JSON-RPC error
// response in a 200 answer (or in its SSE stream), except errSessionEnded, which is always
// 404 so that the host starts over.
type Error struct {
	Name    string
	Status  int
	Code    int
	Message string
	Level   slog.Level
	Retry   string // Retry-After, when set
}

func (e *Error) Error() string { return e.Name + ": " + e.Message }

// The error table: every refusal the ingress answers with.
var (
	errNotReady          = &Error{"not_ready", http.StatusServiceUnavailable, jsonrpc.CodeInternalError, "Service Unavailable: the gateway is not ready", slog.LevelDebug, "1"}
	errHostNotAllowed    = &Error{"host_not_allowed", http.StatusForbidden, jsonrpc.CodeInvalidRequest, "Forbidden: host not allowed", slog.LevelDebug, ""}
	errOriginNotAllowed  = &Error{"origin_not_allowed", http.StatusForbidden, jsonrpc.CodeInvalidRequest, "Forbidden: origin not allowed", slog.LevelDebug, ""}
	errBadRevision       = &Error{"bad_revision", http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "Bad Request: unsupported MCP-Protocol-Version; supported: " + strings.Join(Supported, ", "), slog.LevelDebug, ""}
	errLastEventID       = &Error{"last_event_id", http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "Bad Request: Last-Event-ID names no stream of this gateway (it does not resume streams)", slog.LevelDebug, ""}
	errMethodNotAllowed  = &Error{"method_not_allowed", http.StatusMethodNotAllowed, jsonrpc.CodeInvalidRequest, "Method Not Allowed", slog.LevelDebug, ""}
	errBodyTooLarge      = &Error{"body_too_large", http.StatusRequestEntityTooLarge, jsonrpc.CodeInvalidRequest, "Request Entity Too Large", slog.LevelDebug, ""}
	errMediaType         = &Error{"media_type", http.StatusUnsupportedMediaType, jsonrpc.CodeInvalidRequest, "Unsupported Media Type: Content-Type must be application/json", slog.LevelDebug, ""}
	errNotAcceptable     = &Error{"not_acceptable", http.StatusNotAcceptable, jsonrpc.CodeInvalidRequest, "Not Acceptable: Accept must include application/json and text/event-stream", slog.LevelDebug, ""}
	errStreamAccept      = &Error{"stream_not_acceptable", http.StatusNotAcceptable, jsonrpc.CodeInvalidRequest, "Not Acceptable: Accept must include text/event-stream", slog.LevelDebug, ""}
	errTwoCredentials    = &Error{"two_credentials", http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "Bad Request: more than one Authorization header", slog.LevelDebug, ""}
	errMalformedAuth     = &Error{"malformed_authorization", http.StatusUnauthorized, jsonrpc.CodeInvalidRequest, "Unauthorized: malformed Authorization header", slog.LevelDebug, ""}
	errUnauthenticated   = &Error{"unauthenticated", http.StatusUnauthorized, jsonrpc.CodeInvalidRequest, "Unauthorized: invalid credential", slog.LevelDebug, ""}
	errNoCredential      = &Error{"no_credential", http.StatusUnauthorized, jsonrpc.CodeInvalidRequest, "Unauthorized: no credential", slog.LevelDebug, ""}
	errUnknownToken      = &Error{"unknown_token", http.StatusUnauthorized, jsonrpc.CodeInvalidRequest, "Unauthorized: unknown or revoked token", slog.LevelDebug, ""}
	errTokenExpired      = &Error{"token_expired", http.StatusUnauthorized, jsonrpc.CodeInvalidRequest, "Unauthorized: token expired", slog.LevelDebug, ""}
	errInsufficientScope = &Error{"insufficient_scope", http.StatusForbidden, jsonrpc.CodeInvalidRequest, "Forbidden: the token lacks a scope this gateway requires", slog.LevelDebug, ""}
	errThrottled         = &Error{"auth_throttled", http.StatusTooManyRequests, codeThrottled, "Too Many Requests: too many failed authentications from this address", slog.LevelDebug, ""} // Retry-After: when the bucket has a token again
	errAuthUnavailable   = &Error{"auth_unavailable", http.StatusServiceUnavailable, codeUnavailable, "Service Unavailable: authentication is unavailable", slog.LevelWarn, "1"}
	errSessionRequired   = &Error{"session_required", http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "Bad Request: Mcp-Session-Id header is required", slog.LevelDebug, ""}
	errSessionNotFound   = &Error{"session_not_found", http.StatusNotFound, jsonrpc.CodeInvalidRequest, "Not Found: session not found", slog.LevelDebug, ""}
	errSessionEnded      = &Error{"session_ended", http.StatusNotFound, jsonrpc.CodeInvalidRequest, "Not Found: session ended: the session's upstream has ended; start a new session", slog.LevelInfo, ""}
	errSessionStore      = &Error{"session_store_unavailable", http.StatusServiceUnavailable, codeUnavailable, "Service Unavailable: sessions cannot be read", slog.LevelError, "1"}
	errTooManySessions   = &Error{"too_many_sessions", http.StatusServiceUnavailable, codeCapacity, "Service Unavailable: too many sessions for this principal; end a session (DELETE) or wait for one to expire", slog.LevelInfo, "30"}
	errStreamOpen        = &Error{"stream_open", http.StatusConflict, jsonrpc.CodeInvalidRequest, "Conflict: this session already has a GET stream open", slog.LevelDebug, ""}
	errTooManyStreams    = &Error{"too_many_streams", http.StatusServiceUnavailable, codeCapacity, "Service Unavailable: too many GET streams for this principal", slog.LevelInfo, "5"}
	errBodyRead          = &Error{"body_unreadable", http.StatusBadRequest, jsonrpc.CodeParseError, "Bad Request: the request body could not be read", slog.LevelDebug, ""}
	errInvalidMessage    = &Error{"invalid_message", http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "Bad Request: invalid JSON-RPC message", slog.LevelDebug, ""} // code and message: the parser's
	errBatchTooLarge     = &Error{"batch_too_large", http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "Bad Request: batch larger than the limit", slog.LevelDebug, ""}
	errNotNotification   = &Error{"not_a_notification", http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "Bad Request: a method that is not a notification needs an id", slog.LevelDebug, ""}
	errInitializeAlone   = &Error{"initialize_not_alone", http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "Bad Request: initialize must be sent alone and without a session", slog.LevelDebug, ""}
	errNoServer          = &Error{"no_server", http.StatusNotFound, jsonrpc.CodeInvalidRequest, "Not Found: no such server", slog.LevelDebug, ""}
	errNoInitialize      = &Error{"no_initialize_response", http.StatusBadGateway, codeUnavailable, "Bad Gateway: the upstream sent no initialize response", slog.LevelWarn, ""}
	errBatchServerReq    = &Error{"batch_server_request", http.StatusBadGateway, codeUnavailable, "the upstream sent a request that a batched call cannot answer; send the call alone", slog.LevelInfo, ""}
	errDenied            = &Error{"denied", http.StatusForbidden, codeDenied, "denied by policy", slog.LevelDebug, ""}
	errQuarantined       = &Error{"tool_quarantined", http.StatusForbidden, codeQuarantined, "tool quarantined: its definition changed, or was never approved, since an operator approved this server's tools; it is refused until an operator runs gatehouse servers approve", slog.LevelInfo, ""}
	errQuota             = &Error{"quota_exhausted", http.StatusTooManyRequests, codeQuota, "quota exhausted", slog.LevelDebug, "1"}
	errPolicyUnavailable = &Error{"policy_unavailable", http.StatusServiceUnavailable, codeUnavailable, "policy service unavailable; the call is refused", slog.LevelError, "1"}
	errAuditUnavailable  = &Error{"audit_unavailable", http.StatusServiceUnavailable, codeAuditUnavailable, "audit log unavailable; the call is refused", slog.LevelError, "1"}
	errTimeout           = &Error{"upstream_timeout", http.StatusGatewayTimeout, codeTimeout, "the upstream did not answer in time", slog.LevelWarn, ""}
	errMessageTooLarge   = &Error{"upstream_message_too_large", http.StatusBadGateway, codeTooLarge, "the upstream's message exceeds the gateway's limit", slog.LevelWarn, ""}
	errTooManyUpstreams  = &Error{"too_many_upstreams", http.StatusServiceUnavailable, codeCapacity, "too many upstream processes; end a session or retry later", slog.LevelWarn, "5"}
	errUpstreamStart     = &Error{"upstream_start", http.StatusBadGateway, codeUnavailable, "the upstream cannot be started", slog.LevelError, ""}
	errUpstreamRejected  = &Error{"upstream_rejected", http.StatusBadGateway, codeUnavailable, "the upstream rejected the message", slog.LevelWarn, ""}
	errUpstreamDown      = &Error{"upstream_unavailable", http.StatusBadGateway, codeUnavailable, "the upstream is unavailable", slog.LevelWarn, ""}
	errUpstreamNoAnswer  = &Error{"upstream_no_response", http.StatusBadGateway, codeUnavailable, "the upstream ended without a response", slog.LevelWarn, ""}
	errBadMessage        = &Error{"bad_message", http.StatusBadRequest, jsonrpc.CodeInvalidParams, "the message was refused by the bridge", slog.LevelInfo, ""}
	errDuplicateID       = &Error{"duplicate_id", http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "request id already in flight", slog.LevelDebug, ""}
	errCancelled         = &Error{"cancelled", http.StatusServiceUnavailable, codeCancelled, "Service Unavailable: the call was cancelled", slog.LevelInfo, "1"}
	errInternal          = &Error{"internal", http.StatusInternalServerError, jsonrpc.CodeInternalError, "internal error", slog.LevelError, ""}
	errNeedsUserToken    = &Error{"needs_user_token", http.StatusForbidden, jsonrpc.CodeInvalidRequest, "Forbidden: this server acts with the caller's own identity (token exchange); authenticate with an OpenID Connect token of an issuer the gateway trusts", slog.LevelDebug, ""}
	errUpstreamIdentity  = &Error{"upstream_identity", http.StatusBadGateway, codeUnavailable, "the gateway cannot identify the caller to the upstream", slog.LevelWarn, ""}
	errBreakerOpen       = &Error{"breaker_open", http.StatusServiceUnavailable, codeBreakerOpen, "circuit breaker open", slog.LevelInfo, ""} // message and Retry-After: breakerOpen's
	errExchangeRefused   = &Error{"token_exchange_refused", http.StatusForbidden, jsonrpc.CodeInvalidRequest, "Forbidden: the authorization server refused to exchange the caller's token for the upstream's", slog.LevelInfo, ""}
)

// Table lists every row, for tests and docs.
var Table = []*Error{
	errNotReady, errHostNotAllowed, errOriginNotAllowed, errBadRevision, errLastEventID,
	errMethodNotAllowed, errBodyTooLarge, errMediaType, errNotAcceptable, errStreamAccept,
	errTwoCredentials, errMalformedAuth, errUnauthenticated, errNoCredential, errUnknownToken,
	errTokenExpired, errInsufficientScope, errThrottled, errAuthUnavailable,
	errSessionRequired, errSessionNotFound, errSessionEnded, errSessionStore, errTooManySessions,
	errStreamOpen, errTooManyStreams, errBodyRead, errInvalidMessage, errBatchTooLarge, errNotNotification,
	errInitializeAlone, errNoServer, errNoInitialize, errBatchServerReq, errDenied, errQuota,
	errPolicyUnavailable, errAuditUnavailable, errTimeout, errMessageTooLarge,
	errTooManyUpstreams, errUpstreamStart, errUpstreamRejected, errUpstreamDown,
	errUpstreamNoAnswer, errBadMessage, errDuplicateID, errCancelled, errInternal,
	errNeedsUserToken, errUpstreamIdentity, errExchangeRefused, errBreakerOpen, errQuarantined,
}

// bridgeReasons are the bridge's known reasons (its domain errors' texts, before and after
// the bridge gave host-safe reasons of its own); a bridge error is recognised by its code and
// reason and answered with the row's own message, never the bridge's text.
var bridgeReasons = []struct {
	code   connect.Code // 0: any
	reason string
	err    *Error
}{
	{connect.CodeFailedPrecondition, "exceeds the size limit", errMessageTooLarge},
	{connect.CodeResourceExhausted, "message too large", errMessageTooLarge}, // before the bridge's own code for it
	{0, "too many upstream processes", errTooManyUpstreams},
	{0, "cannot start upstream", errUpstreamStart},
	{0, "could not be started", errUpstreamStart},
	{0, "request id already in flight", errDuplicateID},
	{0, "upstream rejected the message", errUpstreamRejected},
	{0, "cannot identify the caller to the upstream", errUpstreamIdentity},
	{0, "refused to exchange the caller's token", errExchangeRefused},
	{0, "carries no OpenID Connect token", errNeedsUserToken},
}

// fromBridge names an error of the bridge (a *connect.Error). A per-call timeout arrives as
// DeadlineExceeded; a session whose upstream has ended as NotFound.
func fromBridge(err error) *Error {
	if errors.Is(err, context.Canceled) {
		return errCancelled
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errTimeout
	}
	if e := breakerOpen(err); e != nil {
		return e
	}
	code := connect.CodeOf(err)
	switch code {
	case connect.CodeNotFound:
		return errSessionEnded
	case connect.CodeDeadlineExceeded:
		return errTimeout
	case connect.CodeCanceled:
		return errCancelled
	}
	msg := message(err)
	for _, r := range bridgeReasons {
		if (r.code == 0 || r.code == code) && strings.Contains(msg, r.reason) {
			return r.err
		}
	}
	switch code {
	case connect.CodeResourceExhausted:
		return errTooManyUpstreams
	case connect.CodeFailedPrecondition:
		return errUpstreamRejected
	case connect.CodeUnavailable, connect.CodeUnimplemented:
		return errUpstreamDown
	case connect.CodeInvalidArgument:
		return errBadMessage
	}
	return errInternal
}

// fromPolicy names an error of policysvc.
func fromPolicy(err error) *Error {
	switch connect.CodeOf(err) {
	case connect.CodeResourceExhausted:
		return errQuota
	case connect.CodeCanceled:
		return errCancelled
	}
	return errPolicyUnavailable
}

// authReasons are authsvc's reasons for refusing a credential, made for the host to read.
var authReasons = []struct {
	reason string
	err    *Error
}{
	{"no credential", errNoCredential},
	{"unknown or revoked token", errUnknownToken},
	{"token expired", errTokenExpired},
}

// fromAuth names an error of authsvc.
func fromAuth(err error) *Error {
	switch connect.CodeOf(err) {
	case connect.CodePermissionDenied:
		return errInsufficientScope // authsvc's only PermissionDenied
	case connect.CodeUnauthenticated, connect.CodeInvalidArgument:
		msg := message(err)
		for _, r := range authReasons {
			if strings.Contains(msg, r.reason) {
				return r.err
			}
		}
		return errUnauthenticated
	case connect.CodeCanceled:
		return errCancelled
	}
	return errAuthUnavailable
}

func message(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// denialData is the data of a denial's JSON-RPC error: the bundle that decided and the ids of
// the policies that did (never their text), so that a host's report leads an operator to
// them (gatehouse policy explain reproduces the decision).
type denialData struct {
	Bundle   string   `json:"bundle"`
	Policies []string `json:"policies"`
}

// refusalResponse is the JSON-RPC error answering id with refusal e; a denial by policy
// (decision not nil) carries denialData.
func refusalResponse(id json.RawMessage, e *Error, traceID string, decision *policyv1.CheckResponse) []byte {
	if decision == nil {
		return jsonrpc.ErrorResponse(id, e.Code, hostMessage(e, traceID))
	}
	if id == nil {
		id = json.RawMessage("null")
	}
	type errorObject struct {
		Code    int        `json:"code"`
		Message string     `json:"message"`
		Data    denialData `json:"data"`
	}
	data := denialData{Bundle: decision.GetBundleVersion(), Policies: decision.GetPolicyIds()}
	if data.Policies == nil {
		data.Policies = []string{} // denied by default: no policy decided
	}
	b, err := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   errorObject     `json:"error"`
	}{"2.0", id, errorObject{e.Code, hostMessage(e, traceID), data}})
	if err != nil {
		panic(err) // only strings and an id the parser validated
	}
	return b
}

// hostMessage is what the host reads: the row's message and the trace id.
func hostMessage(e *Error, traceID string) string {
	return e.Message + " (trace " + traceID + ")"
}

// refuse answers a refusal at the HTTP level and logs it at the row's level with its cause.
// A refusal ends the exchange: the connection closes after it, so a body the ingress did not
// read (a stalled one included) holds nothing.
func (s *Service) refuse(x *exchange, id []byte, e *Error, cause error) {
	s.logRefusal(x, e, cause)
	s.answerRefusal(x, id, e)
}

// answerRefusal answers a refusal at the HTTP level without logging it.
func (s *Service) answerRefusal(x *exchange, id []byte, e *Error) {
	h := x.w.Header()
	if e.Retry != "" {
		h.Set("Retry-After", e.Retry)
	}
	if !x.bodyRead && x.r.ProtoMajor == 1 {
		// (HTTP/2 would read Connection: close as a GOAWAY for every stream of the
		// connection; its unread request bodies are bounded by flow control instead.)
		h.Set("Connection", "close")
	}
	writeError(x.w, e.Status, id, e.Code, hostMessage(e, x.traceID))
}

func (s *Service) logRefusal(x *exchange, e *Error, cause error) {
	if !s.logger.Enabled(x.r.Context(), e.Level) {
		return
	}
	attrs := []any{"error", e.Name, "trace_id", x.traceID, "server", x.server}
	if cause != nil {
		attrs = append(attrs, "cause", cause.Error())
	}
	s.logger.Log(context.WithoutCancel(x.r.Context()), e.Level, "refused", attrs...)
}

func writeError(w http.ResponseWriter, status int, id []byte, code int, msg string) {
	writeJSON(w, status, jsonrpc.ErrorResponse(id, code, msg))
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
