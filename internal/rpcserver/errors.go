package rpcserver

import (
	"context"
	"errors"

	"connectrpc.com/connect"
)

// ErrorCode is one row of a service's error table: a domain error and its Connect code.
type ErrorCode struct {
	Err  error
	Code connect.Code
}

// ErrorCodes is a service's error table, declared once in its errors.go. Every service maps
// its errors to Connect codes through it, the same way.
type ErrorCodes []ErrorCode

// Code is the code of the first row err matches (errors.Is); failing that, the caller's
// cancellation or deadline keeps its own code, and anything else is Internal.
func (t ErrorCodes) Code(err error) connect.Code {
	for _, c := range t {
		if errors.Is(err, c.Err) {
			return c.Code
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	}
	return connect.CodeInternal
}

// Error is err as the Connect error callers see, with its code from the table.
func (t ErrorCodes) Error(err error) *connect.Error {
	return connect.NewError(t.Code(err), err)
}
