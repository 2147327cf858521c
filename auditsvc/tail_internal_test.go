package auditsvc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"google.golang.org/protobuf/encoding/protojson"
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

// TestLegacyCheckpointsVerify: checkpoints written before they were chained (v1, index 0)
// still verify, with a note; the first chained one after them continues from them.
func TestLegacyCheckpointsVerify(t *testing.T) {
	dir := t.TempDir()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "audit-signing.pem")
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir, SigningKeyFile: keyFile, CheckpointRecords: 10}
	svc, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &auditv1.Record{Time: timestamppb.Now(), Server: "s", Method: "tools/call", Outcome: auditv1.Outcome_OUTCOME_ALLOWED}
	for range 3 {
		if _, err := svc.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{Record: rec})); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Rewrite the checkpoints as an older gatehouse signed them: v1, no index.
	path := filepath.Join(dir, CheckpointsFileName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var c auditv1.Checkpoint
		if err := protojson.Unmarshal([]byte(line), &c); err != nil {
			t.Fatal(err)
		}
		old := signCheckpoint(key, c.GetSequence(), c.GetHash(), c.GetSegment(), c.GetTime().AsTime(), 0, "")
		j, _ := protojson.Marshal(old)
		var buf bytes.Buffer
		_ = json.Compact(&buf, j)
		out = append(append(out, buf.Bytes()...), '\n')
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	// A run after them chains its checkpoints to the last old one.
	if svc, err = New(cfg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{Record: rec})); err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, err := VerifyDir(context.Background(), dir, VerifyOptions{PublicKey: key.Public().(ed25519.PublicKey), CheckpointRecords: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetProblems()) != 0 || len(resp.GetNotes()) != 1 || !strings.Contains(resp.GetNotes()[0], "before checkpoints were chained") {
		t.Fatalf("problems %v, notes %v; want none and a note on the old checkpoints", resp.GetProblems(), resp.GetNotes())
	}
}
