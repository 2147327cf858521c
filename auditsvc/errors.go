package auditsvc

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc/query"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

// The domain errors of auditsvc, each mapped to one Connect code in codes.
var (
	// errInvalidRecord: the record is missing, incomplete, inconsistent with its phase, or
	// oversized. Nothing is written.
	errInvalidRecord = errors.New("invalid record")
	// errUnavailable: the record could not be made durable; it is not in the log. This
	// includes a full disk (the message carries "no space left on device"): the log is
	// unavailable to every caller alike, which is Unavailable, not ResourceExhausted (a
	// caller's own quota, which the ingress reports as such). Either way the call is refused.
	errUnavailable = errors.New("audit log unavailable")
	// errDenied: an operator's Verify that policy does not allow.
	errDenied = errors.New("permission denied")
	// errClosed: the service is shutting down.
	errClosed = fmt.Errorf("%w: closed", errUnavailable)
	// errCallerDenied: policy does not let the caller read the log (Query, Tail).
	errCallerDenied = errors.New("permission denied")
	// errPolicyUnavailable: policy could not decide an operator's request.
	errPolicyUnavailable = errors.New("policy unavailable")
	// errTooManyTails: every Tail slot (in all, or of the caller) is taken.
	errTooManyTails = errors.New("too many tails")
	// errUnimplemented: what the configured store does not offer (Query and Tail with the
	// postgres store).
	errUnimplemented = errors.New("unimplemented")
)

// codes maps each domain error to its Connect code; anything else is Internal:
//
//	errInvalidRecord  InvalidArgument
//	errUnavailable    Unavailable (failed write or fsync, disk full, broken until restart, closed;
//	                  a Verify while another runs, or one that cannot read the log)
//	errDenied         PermissionDenied (an operator's Verify that policy refuses)
//	errCallerDenied       PermissionDenied (an operator's Query or Tail that policy refuses)
//	errPolicyUnavailable  Unavailable
//	query.ErrInvalid      InvalidArgument (a filter, page size or page token)
//	errTooManyTails       ResourceExhausted
//	errUnimplemented      Unimplemented
//	context errors    Canceled, DeadlineExceeded (also while waiting for room in the queue)
var codes = rpcserver.ErrorCodes{
	{Err: errInvalidRecord, Code: connect.CodeInvalidArgument},
	{Err: errUnavailable, Code: connect.CodeUnavailable},
	{Err: errDenied, Code: connect.CodePermissionDenied},
	{Err: errCallerDenied, Code: connect.CodePermissionDenied},
	{Err: errPolicyUnavailable, Code: connect.CodeUnavailable},
	{Err: query.ErrInvalid, Code: connect.CodeInvalidArgument},
	{Err: errTooManyTails, Code: connect.CodeResourceExhausted},
	{Err: errUnimplemented, Code: connect.CodeUnimplemented},
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errInvalidRecord}, args...)...)
}

// toConnect turns an error into the Connect error callers see.
func toConnect(err error) *connect.Error { return codes.Error(err) }
