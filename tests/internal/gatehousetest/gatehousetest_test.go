package gatehousetest_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

// fatalRecorder is a testing.TB whose Fatalf records instead of stopping, so a test can see
// a helper give up.
type fatalRecorder struct {
	testing.TB
	mu    sync.Mutex
	fatal string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fatal = fmt.Sprintf(format, args...)
}

// TestStartServerOwnsThePort: a port another process took between the pick and the server's
// bind is never taken for the server's, though connections to it succeed; the server's exit
// is seen and another port tried, and a server that does listen is accepted.
func TestStartServerOwnsThePort(t *testing.T) {
	t.Run("another process on the port", func(t *testing.T) {
		rec := &fatalRecorder{TB: t}
		tries := 0
		addr := gatehousetest.StartServer(rec, func(addr string) []string {
			tries++
			// Another process takes the port first; our "server" fails to bind and exits
			// a moment later, while connections to the port succeed.
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return []string{"sh", "-c", "sleep 0.3; echo 'listen: address already in use' >&2; exit 1"}
		})
		if addr != "" || !strings.Contains(rec.fatal, "exited before listening") || tries != 3 {
			t.Fatalf("StartServer returned %q after %d tries (fatal %q), want a failure after 3 tries", addr, tries, rec.fatal)
		}
	})
	t.Run("a listening server", func(t *testing.T) {
		echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
		addr := gatehousetest.StartServer(t, func(addr string) []string { return []string{echo, "-http", addr} })
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		conn.Close()
	})
}
