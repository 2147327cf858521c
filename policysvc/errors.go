package policysvc

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"connectrpc.com/connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

// The domain errors of policysvc, each mapped to one Connect code in codes.
var (
	// errInvalidRequest: the request is malformed (missing or oversized fields).
	errInvalidRequest = errors.New("invalid request")
	// errCallerDenied: a caller with its own identity may not ask about that tenant.
	errCallerDenied = errors.New("permission denied")
	// errQuotaExhausted: a limit of tools/call (a token bucket of the tenant, the principal,
	// the server, the tool or an anonymous host's address, or the calls in flight per tenant
	// and server) is used up for now.
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

// quotaError is errQuotaExhausted with the limit that refused and when the call could pass.
type quotaError struct {
	scope      string // scopeNames, or scopeConcurrency
	key        string // whose limit: the tenant, tenant/principal, server, server/tool, source address
	rate       float64
	burst      int
	max        int // a concurrency limit's
	retryAfter time.Duration
}

func (e *quotaError) Error() string {
	if e.scope == scopeConcurrency {
		return fmt.Sprintf("%v: %s %q has %d tools/call in flight, its limit; retry in %s", errQuotaExhausted, e.scope, e.key, e.max, e.retryAfter)
	}
	return fmt.Sprintf("%v: %s %q is over its tools/call quota (rate %g/s, burst %d); retry in %s", errQuotaExhausted, e.scope, e.key, e.rate, e.burst, e.retryAfter)
}

func (e *quotaError) Is(target error) bool { return target == errQuotaExhausted }

// retryAfterSeconds is the wait in whole seconds, at least 1.
func (e *quotaError) retryAfterSeconds() int64 {
	return min(math.MaxUint32, max(1, int64((e.retryAfter+time.Second-1)/time.Second)))
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errInvalidRequest}, args...)...)
}

// toConnect turns a domain error into the Connect error callers see. A quota error also
// carries a Retry-After header (whole seconds, at least 1) and a QuotaExceeded detail
// naming the limit.
func toConnect(err error) *connect.Error {
	ce := codes.Error(err)
	if qe, ok := errors.AsType[*quotaError](err); ok {
		secs := qe.retryAfterSeconds()
		ce.Meta().Set("Retry-After", strconv.FormatInt(secs, 10))
		if d, derr := connect.NewErrorDetail(&policyv1.QuotaExceeded{
			Scope: qe.scope, Rate: qe.rate, Burst: uint32(qe.burst), Max: uint32(qe.max), RetryAfterSeconds: uint32(secs),
		}); derr == nil {
			ce.AddDetail(d)
		}
	}
	return ce
}
