package auditsvc

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
)

// The domain errors of auditsvc, each mapped to one Connect code in codes.
var (
	// errInvalidRecord: the record is missing, incomplete or oversized.
	errInvalidRecord = errors.New("invalid record")
	// errUnavailable: the record could not be made durable; it is not in the log.
	errUnavailable = errors.New("audit log unavailable")
	// errClosed: the service is shutting down.
	errClosed = fmt.Errorf("%w: closed", errUnavailable)
)

// codes maps each domain error to its Connect code; anything else is Internal.
var codes = []struct {
	err  error
	code connect.Code
}{
	{errInvalidRecord, connect.CodeInvalidArgument},
	{errUnavailable, connect.CodeUnavailable},
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errInvalidRecord}, args...)...)
}

// toConnect turns an error into the Connect error callers see. Context errors keep their
// own codes (Canceled, DeadlineExceeded).
func toConnect(err error) *connect.Error {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return connect.NewError(c.code, err)
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}
