package auditsvc

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// smallBuffers accepts connections with a small send buffer, so that a client that stops
// reading blocks the server's writes after a few records instead of several megabytes.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// TestTailStuckReaderFreesSlot: a Tail whose client stops reading is dropped once a write
// has waited tailSendTimeout, and its slot is freed.
func TestTailStuckReaderFreesSlot(t *testing.T) {
	old := tailSendTimeout
	tailSendTimeout = 200 * time.Millisecond
	t.Cleanup(func() { tailSendTimeout = old })
	svc, err := New(Config{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	rec := &auditv1.Record{Time: timestamppb.Now(), Server: "s", Method: "tools/call", Outcome: auditv1.Outcome_OUTCOME_FAILED, Error: strings.Repeat("x", 8000)}
	// A first record, so that the stream starts at once.
	if _, err := svc.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{Record: rec})); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(rpcserver.NewMux(svc.Handlers()...))
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	body := []byte(`{"fromSequence":"1"}`)
	env := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(env[1:], uint32(len(body)))
	env = append(env, body...)
	fmt.Fprintf(conn, "POST /gatehouse.audit.v1.AuditService/Tail HTTP/1.1\r\nHost: x\r\nContent-Type: application/connect+json\r\nContent-Length: %d\r\n\r\n%s", len(env), env)
	// The response's status line says the stream started; then the client reads no more.
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.Contains(line, "200") {
		t.Fatalf("tail response: %q %v", line, err)
	}
	tails := func() int {
		svc.reads.mu.Lock()
		defer svc.reads.mu.Unlock()
		return svc.reads.total
	}
	if tails() != 1 {
		t.Fatalf("%d tails open, want 1", tails())
	}
	testsync.WaitFor(t, 30*time.Second, "the stuck tail's slot to be freed", func() bool {
		for range 8 {
			if _, err := svc.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{Record: rec})); err != nil {
				t.Fatal(err)
			}
		}
		return tails() == 0
	})
}
