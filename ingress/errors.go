package ingress

import (
	"context"
	"errors"
	"net/http"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// JSON-RPC error codes the gateway itself answers with (the implementation-defined range).
const (
	codeDenied      = -32001
	codeQuota       = -32002
	codeUnavailable = -32003
)

var (
	errDenied           = connect.NewError(connect.CodePermissionDenied, errors.New("denied by policy"))
	errAuditUnavailable = connect.NewError(connect.CodeUnavailable, errors.New("audit log unavailable; the call is refused"))
)

// httpStatus maps a Connect code from an internal service to the HTTP status the host sees
// when the request fails before a JSON-RPC exchange can be answered. One table, one place.
var httpStatus = map[connect.Code]int{
	connect.CodeUnauthenticated:    http.StatusUnauthorized,
	connect.CodePermissionDenied:   http.StatusForbidden,
	connect.CodeNotFound:           http.StatusNotFound,
	connect.CodeInvalidArgument:    http.StatusBadRequest,
	connect.CodeResourceExhausted:  http.StatusTooManyRequests,
	connect.CodeUnavailable:        http.StatusServiceUnavailable,
	connect.CodeDeadlineExceeded:   http.StatusServiceUnavailable,
	connect.CodeFailedPrecondition: http.StatusBadGateway,
}

// rpcCode maps a Connect code to the JSON-RPC error code of a failed request.
var rpcCode = map[connect.Code]int{
	connect.CodePermissionDenied:   codeDenied,
	connect.CodeResourceExhausted:  codeQuota,
	connect.CodeUnavailable:        codeUnavailable,
	connect.CodeDeadlineExceeded:   codeUnavailable,
	connect.CodeFailedPrecondition: codeUnavailable,
	connect.CodeInvalidArgument:    jsonrpc.CodeInvalidParams,
	connect.CodeNotFound:           jsonrpc.CodeInvalidParams,
}

// rpcError turns an internal error into the JSON-RPC code and message for the host. Internal
// errors are masked and logged with the trace id.
func (s *Service) rpcError(x *exchange, err error) (int, string) {
	code := connect.CodeOf(err)
	if c, ok := rpcCode[code]; ok {
		return c, message(err)
	}
	if code == connect.CodeCanceled {
		return jsonrpc.CodeInternalError, "request cancelled"
	}
	s.logger.Error("internal error", "trace_id", x.traceID, "err", err)
	return jsonrpc.CodeInternalError, "internal error (trace " + x.traceID + ")"
}

func message(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// writeConnectError answers an HTTP-level failure from an internal service.
func (s *Service) writeConnectError(x *exchange, id []byte, err error) {
	status, ok := httpStatus[connect.CodeOf(err)]
	if !ok {
		s.writeInternal(x, id, err)
		return
	}
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		x.w.Header().Set("Retry-After", "1")
	}
	code, msg := s.rpcError(x, err)
	if status == http.StatusUnauthorized {
		code, msg = jsonrpc.CodeInvalidRequest, "Unauthorized: "+message(err)
	}
	writeError(x.w, status, id, code, msg)
}

// upstreamFailed answers a failure of the bridge before any message reached the host. When
// the session's upstream is gone for good the session ends: 404 tells the host to start over.
func (s *Service) upstreamFailed(x *exchange, id []byte, err error) {
	if connect.CodeOf(err) == connect.CodeNotFound {
		s.endSession(context.WithoutCancel(x.r.Context()), x.session.ID)
		writeError(x.w, http.StatusNotFound, id, jsonrpc.CodeInvalidRequest, "Not Found: session ended: "+message(err))
		return
	}
	s.writeConnectError(x, id, err)
}

func (s *Service) writeInternal(x *exchange, id []byte, err error) {
	s.logger.Error("internal error", "trace_id", x.traceID, "err", err)
	writeError(x.w, http.StatusInternalServerError, id, jsonrpc.CodeInternalError, "internal error (trace "+x.traceID+")")
}

func writeError(w http.ResponseWriter, status int, id []byte, code int, msg string) {
	writeJSON(w, status, jsonrpc.ErrorResponse(id, code, msg))
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
