package authsvc

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

// The domain errors of authsvc, each mapped to one Connect code in codes. authsvc decides who
// a caller is, never what they may do: a missing, unknown, revoked, expired or otherwise
// invalid credential is Unauthenticated (the host should authenticate again); refusing an
// authenticated principal is policysvc's PermissionDenied. The one PermissionDenied of
// authsvc is a valid token that lacks a scope an issuer requires (RFC 6750's
// insufficient_scope: the host needs another token, not the same one again).
var (
	// errUnauthenticated: no usable credential (see unauthenticated for the reasons).
	errUnauthenticated = errors.New("unauthenticated")
	// errInvalidRequest: a malformed request (missing, oversized or ill-formed fields).
	errInvalidRequest = errors.New("invalid request")
	// errAlreadyExists: CreateToken with an explicit token that is already registered.
	errAlreadyExists = errors.New("token already exists")
	// errNotFound: RevokeToken of an id that is not (or no longer) registered.
	errNotFound = errors.New("token not found")
	// errUnavailable: etcd did not answer; the caller may retry (and must not let anyone in).
	errUnavailable = errors.New("token store unavailable")
	// errIssuerUnavailable: an issuer's keys cannot be had; likewise.
	errIssuerUnavailable = errors.New("issuer unavailable")
	// errAdminDenied: an admin request made with the internal token alone, or refused by
	// policy.
	errAdminDenied = errors.New("permission denied")
	// errInsufficientScope: a valid token without a scope its issuer requires.
	errInsufficientScope = errors.New("insufficient scope")
	// errTooManyWatchers: WatchRevocations beyond the configured number of streams.
	errTooManyWatchers = errors.New("too many revocation watchers")
	// errTooManyKeys: RotateSigningKey while too many earlier keys are still published; the
	// operator waits until the oldest one's tokens have expired.
	errTooManyKeys = errors.New("too many signing keys still published")
)

// codes maps each domain error to its Connect code; the caller's cancellation and deadline
// keep theirs, anything else is Internal.
var codes = rpcserver.ErrorCodes{
	{Err: errUnauthenticated, Code: connect.CodeUnauthenticated},
	{Err: errInvalidRequest, Code: connect.CodeInvalidArgument},
	{Err: errAlreadyExists, Code: connect.CodeAlreadyExists},
	{Err: errNotFound, Code: connect.CodeNotFound},
	{Err: errUnavailable, Code: connect.CodeUnavailable},
	{Err: errIssuerUnavailable, Code: connect.CodeUnavailable},
	{Err: errInsufficientScope, Code: connect.CodePermissionDenied},
	{Err: errAdminDenied, Code: connect.CodePermissionDenied},
	{Err: errTooManyWatchers, Code: connect.CodeResourceExhausted},
	{Err: errTooManyKeys, Code: connect.CodeFailedPrecondition},
}

// authError is errUnauthenticated with the reason the caller sees ("token expired"), so
// the Connect message reads "unauthenticated: token expired". It never holds the credential.
type authError struct{ reason string }

func (e *authError) Error() string        { return e.reason }
func (e *authError) Is(target error) bool { return target == errUnauthenticated }

func unauthenticated(format string, args ...any) error {
	return &authError{reason: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errInvalidRequest}, args...)...)
}

// storeError wraps a failed etcd call: the caller's own cancellation or deadline as such,
// anything else as errUnavailable.
func storeError(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", op, ctxErr)
	}
	return fmt.Errorf("%s: %w: %w", op, errUnavailable, err)
}

// toConnect turns a domain error into the Connect error callers see, logging the ones that
// are not the caller's doing.
func (s *Service) toConnect(err error) *connect.Error {
	code := codes.Code(err)
	if code == connect.CodeInternal || code == connect.CodeUnavailable {
		s.logger.Error("auth request failed", "code", code.String(), "err", err)
	}
	return connect.NewError(code, err)
}
