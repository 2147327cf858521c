// Package gatehousetest builds the gatehouse binary and the example servers once per test
// process and starts real `gatehouse up` processes on free loopback ports.
package gatehousetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/procnet"
	"github.com/modelcontextprotocol/go-sdk/mcp"
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
	DriftServer     = "drift-server"
)

var packages = map[string]string{
	Gatehouse:       "github.com/gatehouse-mcp/gatehouse/cmd/gatehouse",
	EchoServer:      "github.com/gatehouse-mcp/gatehouse/examples/servers/echo",
	EverythingGoSDK: "github.com/modelcontextprotocol/go-sdk/conformance/everything-server",
	DriftServer:     "github.com/gatehouse-mcp/gatehouse/tests/internal/driftserver",
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
	Token   string // the dev token: principal dev, tenant default
	DataDir string
	// InternalToken is what the internal RPCs on the gateway's port require. The harness sets
	// it (through the environment, never a flag) so tests can call the services directly.
	InternalToken string
	cmd           *exec.Cmd
	logs          *testsync.Buffer
	done          chan struct{}

	raceReported bool
}

// Options configure Start.
type Options struct {
	Config string   // YAML text of the config file
	Args   []string // extra flags for `gatehouse up`
	Env    []string // extra environment (NAME=value), e.g. GATEHOUSE_INTERNAL_TOKEN
	// DataDir is the gateway's --data-dir; empty for a fresh one under the test's temporary
	// directory. A test that restarts a gateway passes the first one's DataDir.
	DataDir string
}

var upLine = regexp.MustCompile(`Gatehouse is up on (https?://\S+)`)

// Start runs `gatehouse up` and waits until it says it is up. The process is stopped (SIGTERM,
// then SIGKILL after 20s) by t.Cleanup.
func Start(t testing.TB, opts Options) *Gateway {
	t.Helper()
	g, err := TryStart(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TryStart is Start that returns an error, with the gateway's logs, when the gateway exits
// before it is up (a port in opts.Args taken by another process, say), so the caller can try
// again.
func TryStart(t testing.TB, opts Options) (*Gateway, error) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(cfgPath, []byte(opts.Config), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &Gateway{Token: "gh_test_" + strings.Repeat("x", 24), InternalToken: "internal-" + randomHex(t, 16),
		DataDir: filepath.Join(dir, "data"), logs: &testsync.Buffer{}, done: make(chan struct{})}
	if opts.DataDir != "" {
		g.DataDir = opts.DataDir
	}
	args := append([]string{"up", "--config", cfgPath, "--listen", "127.0.0.1:0", "--data-dir", g.DataDir,
		"--policy-dir", filepath.Join(RepoRoot(t), "examples", "policies")}, opts.Args...)
	cmd := exec.Command(Bin(t, Gatehouse), args...)
	cmd.Dir = RepoRoot(t)
	// Secrets go in the environment, never on the command line.
	cmd.Env = append(append(os.Environ(), "GATEHOUSE_INTERNAL_TOKEN="+g.InternalToken, "GATEHOUSE_DEV_TOKEN="+g.Token), opts.Env...)
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
		return nil, fmt.Errorf("gatehouse exited before it was up:\n%s", g.logs.String())
	case <-time.After(90 * time.Second):
		return nil, fmt.Errorf("gatehouse not up within 90s:\n%s", g.logs.String())
	}
	return g, nil
}

// Endpoint is the MCP endpoint of a configured server.
func (g *Gateway) Endpoint(server string) string { return g.Base + "/servers/" + server + "/mcp" }

// Connect opens an MCP session on server's endpoint as the dev principal, with the official
// Go SDK client; a failure ends the test with the gateway's logs. The caller closes it.
func (g *Gateway) Connect(t testing.TB, ctx context.Context, server string) *mcp.ClientSession {
	t.Helper()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: g.Endpoint(server), HTTPClient: g.AuthClient()}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, g.Logs())
	}
	return cs
}

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

// Kill sends SIGKILL, as a crash would, and waits until the process is gone. The gateway gets
// no chance to stop its children or close its logs.
func (g *Gateway) Kill(t testing.TB) {
	t.Helper()
	select {
	case <-g.done:
		t.Fatalf("gatehouse had already exited:\n%s", g.logs.String())
	default:
	}
	if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL gatehouse: %v", err)
	}
	select {
	case <-g.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("gatehouse still running 20s after SIGKILL")
	}
}

// ClientTimeout bounds every request of the harness's HTTP clients, so a gateway that never
// answers fails the test instead of hanging it until the go test timeout.
const ClientTimeout = 60 * time.Second

// AuthClient returns an HTTP client that sends the gateway's dev token. It bounds the wait
// for each response's headers rather than whole exchanges, since SDK clients hold SSE streams
// open for as long as their session lasts; the SDK calls themselves run under the test's
// contexts.
func (g *Gateway) AuthClient() *http.Client {
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.ResponseHeaderTimeout = ClientTimeout
	return &http.Client{Transport: BearerTransport{Token: g.Token, Base: base}}
}

// AdminClient is an HTTP client of an operator: it presents the dev token (whose principal
// is in the group the shipped policies let administer), as `gatehouse token` does.
func (g *Gateway) AdminClient() *http.Client {
	return &http.Client{Transport: BearerTransport{Token: g.Token, Base: http.DefaultTransport}, Timeout: ClientTimeout}
}

// NewToken mints an API token for principal in tenant through authsvc's CreateToken on the
// gateway's port (with the internal token), as an operator would.
func (g *Gateway) NewToken(t testing.TB, principal, tenant string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := authv1connect.NewAuthServiceClient(g.AdminClient(), g.Base)
	resp, err := client.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{
		PrincipalId: principal, Tenant: tenant, Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER,
	}))
	if err != nil {
		t.Fatalf("create a token for %s in %s: %v", principal, tenant, err)
	}
	if resp.Msg.GetToken() == "" {
		t.Fatalf("CreateToken for %s in %s returned no token", principal, tenant)
	}
	return resp.Msg.GetToken()
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
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

// Bounds of StartServer.
const (
	serverStartTries   = 3
	serverStartTimeout = 30 * time.Second
)

// StartServer runs the program argv(addr) returns, which must listen on addr, on a free
// loopback port, and returns addr once that very process listens there. The port is found by
// binding and releasing it, so another process may take it before the server binds: the
// server then exits (or never listens on it, which the ownership check sees), and another port
// is tried. The process group is killed by t.Cleanup.
func StartServer(t testing.TB, argv func(addr string) []string) string {
	t.Helper()
	var errs []string
	for range serverStartTries {
		addr, err := startServerOnce(t, argv)
		if err == nil {
			return addr
		}
		errs = append(errs, err.Error())
	}
	t.Fatalf("start a server: %s", strings.Join(errs, "; "))
	return ""
}

func startServerOnce(t testing.TB, argv func(addr string) []string) (string, error) {
	t.Helper()
	port, err := procnet.FreePort()
	if err != nil {
		return "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	args := argv(addr)
	if len(args) == 0 {
		return "", errors.New("no command")
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &testsync.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", args[0], err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	kill := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	deadline := time.NewTimer(serverStartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok, err := procnet.Listening(cmd.Process.Pid, port); err == nil && ok {
			t.Cleanup(func() {
				kill()
				if t.Failed() {
					t.Logf("%s output:\n%s", args[0], out.String())
				}
			})
			return addr, nil
		}
		select {
		case <-exited:
			return "", fmt.Errorf("%s on port %d: exited before listening (%v): %s", args[0], port, waitErr, out.String())
		case <-deadline.C:
			kill()
			return "", fmt.Errorf("%s on port %d: not listening within %s: %s", args[0], port, serverStartTimeout, out.String())
		case <-tick.C:
		}
	}
}
