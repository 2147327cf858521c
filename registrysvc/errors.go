package registrysvc

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

// The domain errors of registrysvc, each mapped to one Connect code in codes.
var (
	// errInvalidRequest: the request is malformed (missing, oversized or ill-formed fields).
	errInvalidRequest = errors.New("invalid request")
	// errNotFound: no server has that name.
	errNotFound = errors.New("server not found")
	// errCallerDenied: another team's caller may not list that tenant.
	errCallerDenied = errors.New("permission denied")
	// errNotReady: the first snapshot has not been read from etcd yet.
	errNotReady = errors.New("registry not loaded yet")
	// errTooManyWatchers: MaxWatchers streams are already open.
	errTooManyWatchers = errors.New("too many registry watchers")
	// errLagged: a watcher fell too far behind; it must reconnect for a fresh snapshot.
	errLagged = errors.New("watcher fell behind; reconnect for a fresh snapshot")
	// errNotPinned: pins were reported or approved for a server that is not pinned.
	errNotPinned = errors.New("server not pinned")
	// errNameTaken: an import names a server the configuration holds.
	errNameTaken = errors.New("server name taken")
	// errConflict: a transaction kept losing races with other writers.
	errConflict = errors.New("concurrent changes")
	// errStore: etcd could not be read or written.
	errStore = errors.New("registry store unavailable")
	// errPolicyUnavailable: policy could not decide an operator's request.
	errPolicyUnavailable = errors.New("policy unavailable")
	// errClosed: the registry is shutting down.
	errClosed = errors.New("registry is shutting down")
)

// codes maps each domain error to its Connect code; the caller's cancellation and deadline
// keep theirs, anything else is Internal.
var codes = rpcserver.ErrorCodes{
	{Err: errInvalidRequest, Code: connect.CodeInvalidArgument},
	{Err: errNotFound, Code: connect.CodeNotFound},
	{Err: errCallerDenied, Code: connect.CodePermissionDenied},
	{Err: errNotReady, Code: connect.CodeUnavailable},
	{Err: errTooManyWatchers, Code: connect.CodeResourceExhausted},
	{Err: errLagged, Code: connect.CodeUnavailable},
	{Err: errClosed, Code: connect.CodeUnavailable},
	{Err: errNotPinned, Code: connect.CodeFailedPrecondition},
	{Err: errNameTaken, Code: connect.CodeAlreadyExists},
	{Err: errConflict, Code: connect.CodeAborted},
	{Err: errStore, Code: connect.CodeUnavailable},
	{Err: errPolicyUnavailable, Code: connect.CodeUnavailable},
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errInvalidRequest}, args...)...)
}

// toConnect turns a domain error into the Connect error callers see.
func toConnect(err error) *connect.Error { return codes.Error(err) }
