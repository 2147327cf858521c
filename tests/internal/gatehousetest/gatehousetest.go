// Package gatehousetest builds the gatehouse binary and the example servers once per test
// process and starts real `gatehouse up` processes on free loopback ports.
package gatehousetest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries built for the tests.
const (
	Gatehouse       = "gatehouse"
	EchoServer      = "echo-server"
	EverythingGoSDK = "everything-server"
)

var packages = map[string]string{
	Gatehouse:       "github.com/gatehouse-mcp/gatehouse/cmd/gatehouse",
	EchoServer:      "github.com/gatehouse-mcp/gatehouse/examples/servers/echo",
	EverythingGoSDK: "github.com/modelcontextprotocol/go-sdk/conformance/everything-server",
}

// Main wraps testing.M: it removes the built binaries after the tests.
func Main(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// Bin returns the path of a built binary, building all of them on first use.
func Bin(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "gatehouse-test-bin-")
		if buildErr != nil {
			return
		}
		for n, pkg := range packages {
			args := []string{"build", "-o", filepath.Join(binDir, n)}
			if raceEnabled && n == Gatehouse {
				args = append(args, "-race")
			}
			cmd := exec.Command("go", append(args, pkg)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// RepoRoot is the repository root (the tests module's parent).
func RepoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		if dir == filepath.Dir(dir) {
			t.Fatalf("no go.work above %s", wd)
		}
	}
}

// Gateway is a running `gatehouse up`.
type Gateway struct {
	Base    string // http://127.0.0.1:PORT
	Token   string
	DataDir string
	cmd     *exec.Cmd
	logs    *lockedBuffer
	done    chan struct{}

	raceReported bool
}

// Options configure Start.
type Options struct {
	Config string   // YAML text of the config file
	Args   []string // extra flags for `gatehouse up`
	Env    []string // extra environment (NAME=value), e.g. GATEHOUSE_INTERNAL_TOKEN
}

var upLine = regexp.MustCompile(`Gatehouse is up on (http://\S+)`)

// Start runs `gatehouse up` and waits until it says it is up. The process is stopped (SIGTERM,
// then SIGKILL after 20s) by t.Cleanup.
func Start(t testing.TB, opts Options) *Gateway {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(cfgPath, []byte(opts.Config), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &Gateway{Token: "gh_test_" + strings.Repeat("x", 24), DataDir: filepath.Join(dir, "data"), logs: &lockedBuffer{}, done: make(chan struct{})}
	args := append([]string{"up", "--config", cfgPath, "--listen", "127.0.0.1:0", "--data-dir", g.DataDir,
		"--policy-dir", filepath.Join(RepoRoot(t), "examples", "policies")}, opts.Args...)
	cmd := exec.Command(Bin(t, Gatehouse), args...)
	cmd.Dir = RepoRoot(t)
	// Secrets go in the environment, never on the command line.
	cmd.Env = append(append(os.Environ(), "GATEHOUSE_DEV_TOKEN="+g.Token), opts.Env...)
	cmd.Stderr = g.logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.cmd = cmd
	up := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			g.logs.Write([]byte("stdout: " + line + "\n"))
			if m := upLine.FindStringSubmatch(line); m != nil {
				select {
				case up <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(func() { g.Stop(t) })
	select {
	case g.Base = <-up:
	case <-g.done:
		t.Fatalf("gatehouse exited before it was up:\n%s", g.logs.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("gatehouse not up within 90s:\n%s", g.logs.String())
	}
	return g
}

// Endpoint is the MCP endpoint of a configured server.
func (g *Gateway) Endpoint(server string) string { return g.Base + "/servers/" + server + "/mcp" }

// Logs returns what the gateway has written so far.
func (g *Gateway) Logs() string { return g.logs.String() }

// Stop sends SIGTERM and waits for the process, killing it after 20s.
func (g *Gateway) Stop(t testing.TB) {
	defer func() {
		if logs := g.logs.String(); strings.Contains(logs, "WARNING: DATA RACE") && !g.raceReported {
			g.raceReported = true
			t.Errorf("the race detector reported a data race in gatehouse:\n%s", logs)
		}
	}()
	select {
	case <-g.done:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(20 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
		t.Errorf("gatehouse did not stop within 20s of SIGTERM")
	}
}

// AuthClient returns an HTTP client that sends the gateway's dev token.
func (g *Gateway) AuthClient() *http.Client {
	return &http.Client{Transport: BearerTransport{Token: g.Token, Base: http.DefaultTransport}}
}

// BearerTransport adds an Authorization header to every request.
type BearerTransport struct {
	Token string
	Base  http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (b BearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.Token)
	return b.Base.RoundTrip(r)
}

// WaitFor polls cond until it returns true or the deadline passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Pid is the gateway's process id.
func (g *Gateway) Pid() int { return g.cmd.Process.Pid }

// ChildrenRunning lists the live (not zombie) processes whose parent is pid and whose
// executable is exe.
func ChildrenRunning(pid int, exe string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		var child int
		if _, err := fmt.Sscanf(e.Name(), "%d", &child); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name may hold spaces and parentheses: fields start after the last ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		var state string
		var ppid int
		if _, err := fmt.Sscanf(s[i+1:], " %s %d", &state, &ppid); err != nil || ppid != pid || state == "Z" {
			continue
		}
		if link, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && link == exe {
			out = append(out, child)
		}
	}
	return out
}

// ProcessGone reports whether pid no longer exists: exited and reaped (a zombie still counts
// as present, since its parent has not reaped it yet).
func ProcessGone(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", fmt.Sprint(pid)))
	return os.IsNotExist(err)
}
