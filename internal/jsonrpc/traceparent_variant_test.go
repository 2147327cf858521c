package jsonrpc_test

import (
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// TestTraceparentVariant: a case variant of _meta.traceparent chooses no parent, and the
// gateway does not add a member a peer would fold into it.
func TestTraceparentVariant(t *testing.T) {
	t.Parallel()
	raw := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"Traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}`
	msgs, _, err := jsonrpc.Parse([]byte(raw), false)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.Traceparent != "" {
		t.Fatalf("a case variant chose the parent %q", m.Traceparent)
	}
	out, ok := jsonrpc.WithTraceparent(m, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if ok || string(out) != raw {
		t.Fatalf("spliced into a message with a variant: %s", out)
	}
}
