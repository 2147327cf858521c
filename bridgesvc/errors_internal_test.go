package bridgesvc

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
)

// TestConnectErrorTable: each domain error gets its code; where the table gives a reason, the
// host sees that reason and nothing of the error's own text, which stays reachable in process.
func TestConnectErrorTable(t *testing.T) {
	t.Parallel()
	const detail = "/srv/secret/path http://10.0.0.7/mcp?key=k body"
	for _, c := range codes {
		t.Run(c.err.Error(), func(t *testing.T) {
			t.Parallel()
			err := connectError(fmt.Errorf("%w: %s", c.err, detail))
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != c.code {
				t.Fatalf("code of %v = %v, want %v", err, connect.CodeOf(err), c.code)
			}
			if !errors.Is(err, c.err) {
				t.Fatalf("%v is no longer %v in process", err, c.err)
			}
			if c.reason != "" && ce.Message() != c.reason {
				t.Fatalf("message = %q, want %q", ce.Message(), c.reason)
			}
			if c.reason == "" && !strings.Contains(ce.Message(), detail) {
				t.Fatalf("message = %q, want the error's own text", ce.Message())
			}
		})
	}
	t.Run("unknown error", func(t *testing.T) {
		err := connectError(errors.New(detail))
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeInternal || ce.Message() != internalReason {
			t.Fatalf("unknown error = %v, want Internal %q", err, internalReason)
		}
	})
	t.Run("upstream message over the limit is not a quota", func(t *testing.T) {
		if code := connect.CodeOf(connectError(ErrUpstreamTooLarge)); code == connect.CodeResourceExhausted {
			t.Fatalf("ErrUpstreamTooLarge is %v", code)
		}
	})
}
