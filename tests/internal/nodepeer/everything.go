package nodepeer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/procnet"
)

// Transports of @modelcontextprotocol/server-everything (the first argument of its dist/index.js).
const (
	EverythingStdio          = "stdio"
	EverythingStreamableHTTP = "streamableHttp"
	EverythingSSE            = "sse"
)

// How long a started server-everything gets to accept connections, and to exit when stopped.
const (
	everythingStartTimeout = 30 * time.Second
	everythingStopTimeout  = 5 * time.Second
	everythingStartTries   = 3
)

// Everything is a server-everything ready for a test.
type Everything struct {
	// URL is the endpoint of a started HTTP server: http://127.0.0.1:PORT/mcp for
	// streamableHttp, http://127.0.0.1:PORT/sse for the legacy HTTP+SSE transport (which posts
	// to /message). Empty for stdio.
	URL string
	// Argv launches the server on stdio: [node22, .../dist/index.js, "stdio"], absolute paths,
	// nothing else needed on PATH. Set for stdio only; the caller (the bridge) spawns it.
	Argv []string
}

// StartEverything prepares @modelcontextprotocol/server-everything in mode (EverythingStdio,
// EverythingStreamableHTTP or EverythingSSE).
//
// For stdio it starts nothing and returns the argv. For the HTTP modes it starts the server on
// a free port (PORT env) and waits until it accepts connections; t.Cleanup stops it. The
// server itself always listens on every interface; it is started with tests/node/loopback.mjs
// preloaded, which makes its listen bind 127.0.0.1 only. Its environment holds only PATH, HOME
// and PORT (its get-env tool prints the environment).
func StartEverything(t testing.TB, mode string) Everything {
	t.Helper()
	node := Node22(t)
	dir := PeerDir(t)
	entry := filepath.Join(dir, "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js")
	if _, err := os.Stat(entry); err != nil {
		t.Fatalf("nodepeer: server-everything: %v: %s", err, installHint)
	}
	var path string
	switch mode {
	case EverythingStdio:
		return Everything{Argv: []string{node, entry, EverythingStdio}}
	case EverythingStreamableHTTP:
		path = "/mcp"
	case EverythingSSE:
		path = "/sse"
	default:
		t.Fatalf("nodepeer: unknown server-everything mode %q", mode)
	}
	preload := (&url.URL{Scheme: "file", Path: filepath.Join(dir, "loopback.mjs")}).String()
	var errs []error
	// The free port is found by binding and releasing it, so another process may take it before
	// the server binds; the server then exits (EADDRINUSE) and another port is tried.
	for range everythingStartTries {
		port, err := procnet.FreePort()
		if err != nil {
			t.Fatalf("nodepeer: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err = startEverythingOn(t, node, preload, entry, mode, dir, port, addr)
		if err == nil {
			return Everything{URL: "http://" + addr + path}
		}
		errs = append(errs, err)
	}
	t.Fatalf("nodepeer: start server-everything %s: %v", mode, errors.Join(errs...))
	return Everything{}
}

func startEverythingOn(t testing.TB, node, preload, entry, mode, dir string, port int, addr string) error {
	t.Helper()
	cmd := exec.Command(node, "--import", preload, entry, mode)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "PORT=" + strconv.Itoa(port)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	output := NewCappedBuffer(256 << 10)
	cmd.Stdout, cmd.Stderr = output, output
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", node, err)
	}
	// exited is closed once the process has been reaped; waitErr is then its exit status.
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		select {
		case <-exited:
			return
		default:
		}
		// Signal the whole process group; the server has no children today, but must not
		// leave any behind if it grows some.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(everythingStopTimeout):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), everythingStartTimeout)
	defer cancel()
	if err := waitListening(ctx, cmd.Process.Pid, port, exited); err != nil {
		stop()
		if errors.Is(err, errExited) {
			err = fmt.Errorf("%w: %v", err, waitErr)
		}
		return fmt.Errorf("port %d: %w\n%s", port, err, output.String())
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("server-everything %s output:\n%s", mode, output.String())
		}
	})
	return nil
}

// errExited reports a server that exited before it accepted connections.
var errExited = errors.New("exited before accepting connections")

// waitListening polls until process pid itself listens on port (a connection that succeeds
// may reach another process that took the port), exited is closed or ctx ends.
func waitListening(ctx context.Context, pid, port int, exited <-chan struct{}) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok, err := procnet.Listening(pid, port); err == nil && ok {
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("not listening on port %d: %w", port, ctx.Err())
		case <-tick.C:
		}
	}
}

// EverythingDoc returns the text of one of server-everything's documentation files (e.g.
// "architecture.md"), which it serves as demo://resource/static/document/<name>: what a read
// of that resource must return, exactly.
func EverythingDoc(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(PeerDir(t), "node_modules", "@modelcontextprotocol", "server-everything", "dist", "docs", name))
	if err != nil {
		t.Fatalf("nodepeer: server-everything document: %v: %s", err, installHint)
	}
	return string(b)
}
