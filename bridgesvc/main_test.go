package bridgesvc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1/bridgev1connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/stdio/stdiotest"
)

var binDir string

// builds are the programs built for the tests, once each per test binary.
var builds sync.Map // name → *build

type build struct {
	once sync.Once
	path string
	err  error
}

// built builds the Go package pkg into binDir/name the first time it is asked for.
func built(t *testing.T, name, pkg string) string {
	t.Helper()
	v, _ := builds.LoadOrStore(name, &build{})
	b := v.(*build)
	b.once.Do(func() {
		b.path = filepath.Join(binDir, name)
		if out, err := exec.Command("go", "build", "-o", b.path, pkg).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func TestMain(m *testing.M) {
	stdiotest.Run()
	dir, err := os.MkdirTemp("", "bridgesvc-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// bridge is a Service mounted on a loopback HTTP server with a Connect client in front.
type bridge struct {
	svc    *bridgesvc.Service
	client bridgev1connect.BridgeServiceClient
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newBridge(t *testing.T, cfg bridgesvc.Config, cat bridgesvc.Catalog) *bridge {
	t.Helper()
	if cfg.StdioGrace == 0 {
		cfg.StdioGrace = 200 * time.Millisecond
	}
	svc, err := bridgesvc.New(cfg, cat, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rpcserver.NewMux(svc.Handlers()...))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := svc.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		srv.Close()
	})
	return &bridge{svc: svc, client: bridgev1connect.NewBridgeServiceClient(srv.Client(), srv.URL)}
}

// helperServer is a stdio server running this test binary in a stdiotest mode.
func helperServer(t *testing.T, name, mode string) *registryv1.Server {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &registryv1.Server{Name: name, Transport: registryv1.Transport_TRANSPORT_STDIO, Command: []string{exe}, Env: map[string]string{stdiotest.EnvMode: mode}}
}

// exchange sends one message and collects the messages streamed back. onMessage, when set,
// sees each message as it arrives (to answer server requests).
func (b *bridge) exchange(ctx context.Context, session, server, msg string, onMessage func(*bridgev1.SendResponse)) ([]*bridgev1.SendResponse, error) {
	req := &bridgev1.SendRequest{SessionId: session, Server: server, Message: []byte(msg)}
	stream, err := b.client.Send(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var out []*bridgev1.SendResponse
	for stream.Receive() {
		out = append(out, stream.Msg())
		if onMessage != nil {
			onMessage(stream.Msg())
		}
	}
	return out, stream.Err()
}

func (b *bridge) send(t *testing.T, session, server, msg string) ([]*bridgev1.SendResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return b.exchange(ctx, session, server, msg, nil)
}

func (b *bridge) endSession(t *testing.T, session string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.client.CloseSession(ctx, connect.NewRequest(&bridgev1.CloseSessionRequest{SessionId: session})); err != nil {
		t.Fatalf("CloseSession: %v", err)
	}
}

func toolCall(id int, name, args string) string {
	if args == "" {
		args = "{}"
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, id, name, args)
}

func wantCode(t *testing.T, err error, code connect.Code, contains string) {
	t.Helper()
	if connect.CodeOf(err) != code || !strings.Contains(err.Error(), contains) {
		t.Fatalf("error = %v (%v), want %v containing %q", err, connect.CodeOf(err), code, contains)
	}
}

// resultText returns the first text content of a tools/call result.
func resultText(t *testing.T, msg []byte) string {
	t.Helper()
	s := string(msg)
	i := strings.Index(s, `"text":"`)
	if i < 0 {
		t.Fatalf("no text content in %s", msg)
	}
	s = s[i+len(`"text":"`):]
	return s[:strings.IndexByte(s, '"')]
}

// pidOf asks a stdiotest server for its pid.
func (b *bridge) pidOf(t *testing.T, session, server string) int {
	t.Helper()
	out, err := b.send(t, session, server, toolCall(99, "pid", ""))
	if err != nil || len(out) != 1 {
		t.Fatalf("pid = %v, %v", out, err)
	}
	pid, err := strconv.Atoi(resultText(t, out[0].GetMessage()))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// reinitialize sends an initialize, which starts a new upstream for a session whose upstream
// ended.
func (b *bridge) reinitialize(t *testing.T, session, server string) {
	t.Helper()
	init := `{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	if _, err := b.send(t, session, server, init); err != nil {
		t.Fatalf("initialize: %v", err)
	}
}

// assertReaped checks that pid is gone and was reaped (no zombie left): kill(pid, 0) fails
// with ESRCH.
func assertReaped(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("kill(%d, 0) = %v, want ESRCH: the child is still there", pid, err)
	}
}

// childrenWith returns the pids of this process's children whose environment holds marker.
func childrenWith(t *testing.T, marker string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err == nil && bytes.Contains(env, []byte(marker)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func static(servers ...*registryv1.Server) *catalog.Catalog { return catalog.Static(servers...) }
