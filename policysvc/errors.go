package policysvc

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

// The domain errors of policysvc, each mapped to one Connect code in codes.
var (
	// errInvalidRequest: the request is malformed (missing or oversized fields).
	errInvalidRequest = errors.New("invalid request")
	// errCallerDenied: a caller with its own identity may not ask about that tenant.
	errCallerDenied = errors.New("permission denied")
	// errQuotaExhausted: the tenant has used up its tools/call allowance for now.
	errQuotaExhausted = errors.New("quota exhausted")
	// errNotReady: the registry snapshot has not arrived yet, so no server is known.
	errNotReady = errors.New("registry snapshot not loaded yet")
	// errInvalidBundle: an applied bundle does not parse, does not match its schema, has no
	// schema, or is too large; the active bundle stays.
	errInvalidBundle = errors.New("invalid policy bundle")
	// errNoStore: this policysvc runs without etcd, so it cannot apply a bundle.
	errNoStore = errors.New("no bundle store: policysvc runs without etcd (--etcd-endpoints), so bundles cannot be applied")
	// errStore: etcd did not take the bundle.
	errStore = errors.New("bundle store unavailable")
)

// codes maps each domain error to its Connect code; the caller's cancellation and deadline
// keep theirs, anything else is Internal.
var codes = rpcserver.ErrorCodes{
	{Err: errInvalidRequest, Code: connect.CodeInvalidArgument},
	{Err: errCallerDenied, Code: connect.CodePermissionDenied},
	{Err: errQuotaExhausted, Code: connect.CodeResourceExhausted},
	{Err: errNotReady, Code: connect.CodeUnavailable},
	{Err: errInvalidBundle, Code: connect.CodeInvalidArgument},
	{Err: errNoStore, Code: connect.CodeFailedPrecondition},
	{Err: errStore, Code: connect.CodeUnavailable},
}

// quotaError is errQuotaExhausted with the tenant and when a token is next available.
type quotaError struct {
	tenant     string
	retryAfter time.Duration
}

func (e *quotaError) Error() string {
	return fmt.Sprintf("%v: tenant %q is over its tools/call quota; retry in %s", errQuotaExhausted, e.tenant, e.retryAfter)
}

func (e *quotaError) Is(target error) bool { return target == errQuotaExhausted }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errInvalidRequest}, args...)...)
}

// toConnect turns a domain error into the Connect error callers see. A quota error also
// carries a Retry-After header (whole seconds, at least 1).
func toConnect(err error) *connect.Error {
	ce := codes.Error(err)
	if qe, ok := errors.AsType[*quotaError](err); ok {
		secs := max(1, int64((qe.retryAfter+time.Second-1)/time.Second))
		ce.Meta().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	return ce
}
