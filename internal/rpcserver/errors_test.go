package rpcserver_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

func TestErrorCodes(t *testing.T) {
	t.Parallel()
	errA, errB := errors.New("a"), errors.New("b")
	errAB := fmt.Errorf("%w and %w", errA, errB)
	table := rpcserver.ErrorCodes{
		{Err: errA, Code: connect.CodeNotFound},
		{Err: errB, Code: connect.CodeInvalidArgument},
		{Err: context.DeadlineExceeded, Code: connect.CodeUnavailable},
	}
	for _, tt := range []struct {
		name string
		err  error
		want connect.Code
	}{
		{"a row", fmt.Errorf("get: %w", errB), connect.CodeInvalidArgument},
		{"the first matching row wins", errAB, connect.CodeNotFound},
		{"a row overrides the context's code", fmt.Errorf("etcd: %w", context.DeadlineExceeded), connect.CodeUnavailable},
		{"cancellation keeps its code", fmt.Errorf("wait: %w", context.Canceled), connect.CodeCanceled},
		{"anything else is internal", errors.New("boom"), connect.CodeInternal},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := table.Code(tt.err); got != tt.want {
				t.Fatalf("Code(%v) = %v, want %v", tt.err, got, tt.want)
			}
			if ce := table.Error(tt.err); ce.Code() != tt.want || !errors.Is(ce, tt.err) {
				t.Fatalf("Error(%v) = %v", tt.err, ce)
			}
		})
	}
	if got := (rpcserver.ErrorCodes{}).Code(context.DeadlineExceeded); got != connect.CodeDeadlineExceeded {
		t.Fatalf("an empty table's Code(DeadlineExceeded) = %v", got)
	}
}
