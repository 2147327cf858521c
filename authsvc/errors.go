package authsvc

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
)

// The domain errors of authsvc, each mapped to one Connect code in codes. authsvc decides who
// a caller is, never what they may do, so it has no PermissionDenied: a missing, unknown,
// revoked or expired credential is Unauthenticated (the host should authenticate again);
// refusing an authenticated principal is policysvc's PermissionDenied.
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
)

// codes maps each domain error to its Connect code; anything else is Internal.
var codes = []struct {
	err  error
	code connect.Code
}{
	{errUnauthenticated, connect.CodeUnauthenticated},
	{errInvalidRequest, connect.CodeInvalidArgument},
	{errAlreadyExists, connect.CodeAlreadyExists},
	{errNotFound, connect.CodeNotFound},
	{errUnavailable, connect.CodeUnavailable},
	{context.Canceled, connect.CodeCanceled},
	{context.DeadlineExceeded, connect.CodeDeadlineExceeded},
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
	code := connect.CodeInternal
	for _, c := range codes {
		if errors.Is(err, c.err) {
			code = c.code
			break
		}
	}
	if code == connect.CodeInternal || code == connect.CodeUnavailable {
		s.logger.Error("auth request failed", "code", code.String(), "err", err)
	}
	return connect.NewError(code, err)
}
