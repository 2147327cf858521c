package registrysvc

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
)

// The domain errors of registrysvc, each mapped to one Connect code in codes.
var (
	// errInvalidRequest: the request is malformed (missing, oversized or ill-formed fields).
	errInvalidRequest = errors.New("invalid request")
	// errNotFound: no server has that name.
	errNotFound = errors.New("server not found")
	// errNotReady: the first snapshot has not been read from etcd yet.
	errNotReady = errors.New("registry not loaded yet")
	// errTooManyWatchers: MaxWatchers streams are already open.
	errTooManyWatchers = errors.New("too many registry watchers")
	// errLagged: a watcher fell too far behind; it must reconnect for a fresh snapshot.
	errLagged = errors.New("watcher fell behind; reconnect for a fresh snapshot")
	// errClosed: the registry is shutting down.
	errClosed = errors.New("registry is shutting down")
)

// codes maps each domain error to its Connect code; anything else is Internal.
var codes = []struct {
	err  error
	code connect.Code
}{
	{errInvalidRequest, connect.CodeInvalidArgument},
	{errNotFound, connect.CodeNotFound},
	{errNotReady, connect.CodeUnavailable},
	{errTooManyWatchers, connect.CodeResourceExhausted},
	{errLagged, connect.CodeUnavailable},
	{errClosed, connect.CodeUnavailable},
	{context.Canceled, connect.CodeCanceled},
	{context.DeadlineExceeded, connect.CodeDeadlineExceeded},
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errInvalidRequest}, args...)...)
}

// toConnect turns a domain error into the Connect error callers see.
func toConnect(err error) *connect.Error {
	code := connect.CodeInternal
	for _, c := range codes {
		if errors.Is(err, c.err) {
			code = c.code
			break
		}
	}
	return connect.NewError(code, err)
}
