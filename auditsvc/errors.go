package auditsvc

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
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
	// errClosed: the service is shutting down.
	errClosed = fmt.Errorf("%w: closed", errUnavailable)
)

// codes maps each domain error to its Connect code; anything else is Internal:
//
//	errInvalidRecord  InvalidArgument
//	errUnavailable    Unavailable (failed write or fsync, disk full, broken until restart, closed)
//	context errors    Canceled, DeadlineExceeded (also while waiting for room in the queue)
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
