package tests

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestInstalledUpAnywhere: `go install` the gatehouse binary, run `gatehouse up` with no
// config and no policy flags from an empty directory outside the repository, call the
// embedded default's echo server (which the binary serves itself) with the printed dev token,
// then SIGTERM: nothing of it may be left running.
func TestInstalledUpAnywhere(t *testing.T) {
	gobin := t.TempDir()
	install := exec.Command("go", "install", "./cmd/gatehouse")
	install.Dir = gatehousetest.RepoRoot(t)
	install.Env = append(os.Environ(), "GOBIN="+gobin)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("go install: %v\n%s", err, out)
	}
	bin := filepath.Join(gobin, "gatehouse")

	work := t.TempDir() // empty: no examples/, no policies, no config
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GATEHOUSE_") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(bin, "up", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(t.TempDir(), "data"))
	cmd.Dir = work
	cmd.Env = env
	var logs testsync.Buffer
	cmd.Stderr = &logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	upRE := regexp.MustCompile(`Gatehouse is up on (http://\S+)`)
	tokenRE := regexp.MustCompile(`dev token \(principal dev, tenant default[^)]*\): (\S+)`)
	var base, token string
	deadline := time.After(90 * time.Second)
	for base == "" || token == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("gatehouse exited before it was up:\n%s", logs.String())
			}
			if m := upRE.FindStringSubmatch(line); m != nil {
				base = m[1]
			}
			if m := tokenRE.FindStringSubmatch(line); m != nil {
				token = m[1]
			}
		case <-deadline:
			t.Fatalf("not up within 90s:\n%s", logs.String())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "install-test", Version: "v0"}, nil)
	transport := &mcp.StreamableClientTransport{
		Endpoint:   base + "/servers/echo/mcp",
		HTTPClient: &http.Client{Timeout: 60 * time.Second, Transport: gatehousetest.BearerTransport{Token: token, Base: http.DefaultTransport}},
	}
	cs, err := client.Connect(ctx, transport, nil)
	if err != nil {
		t.Fatalf("initialize: %v\n%s", err, logs.String())
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "from anywhere"}})
	if err != nil {
		t.Fatalf("tools/call: %v\n%s", err, logs.String())
	}
	if res.IsError || len(res.Content) != 1 {
		t.Fatalf("tools/call result %+v", res)
	}
	if text, ok := res.Content[0].(*mcp.TextContent); !ok || text.Text != "from anywhere" {
		t.Fatalf("echo answered %#v, want the text back", res.Content[0])
	}
	// The gateway listens on one TCP port, the one it printed, and on no unix socket: its
	// etcd has no listener at all.
	ports, unix := listeningPorts(t, cmd.Process.Pid)
	if len(ports) != 1 || !strings.HasSuffix(base, ":"+ports[0]) {
		t.Errorf("gateway TCP listeners on ports %v, want only the printed %s", ports, base)
	}
	if unix != 0 {
		t.Errorf("gateway has %d unix listeners, want none", unix)
	}
	children := processesOf(t, bin)
	if len(children) < 2 {
		t.Errorf("want the gateway and its echo child running from %s, found pids %v", bin, children)
	}
	_ = cs.Close()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("gatehouse did not exit within 30s of SIGTERM:\n%s", logs.String())
	}
	testsync.WaitFor(t, 20*time.Second, "every process of the installed binary to end", func() bool {
		return len(processesOf(t, bin)) == 0
	})
	if entries, err := os.ReadDir(work); err != nil || len(entries) != 0 {
		t.Errorf("gatehouse wrote into its working directory: %v %v", entries, err)
	}
}

// processesOf lists the pids of live (not zombie) processes running the executable bin.
func processesOf(t *testing.T, bin string) []string {
	t.Helper()
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var pids []string
	for _, p := range procs {
		if p.Name()[0] < '0' || p.Name()[0] > '9' {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", p.Name(), "exe"))
		if err != nil || strings.TrimSuffix(exe, " (deleted)") != bin {
			continue
		}
		if pid, err := strconv.Atoi(p.Name()); err == nil && isLive(pid) {
			pids = append(pids, p.Name())
		}
	}
	return pids
}

// listeningPorts lists the ports (decimal) of the TCP sockets pid listens on, and counts its
// listening unix sockets.
func listeningPorts(t *testing.T, pid int) (ports []string, unix int) {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	inodes := map[string]bool{}
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		t.Skipf("no /proc fds: %v", err)
	}
	for _, fd := range fds {
		if link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	if data, err := os.ReadFile(filepath.Join(dir, "net", "unix")); err == nil {
		for _, line := range strings.Split(string(data), "\n")[1:] {
			// Num RefCount Protocol Flags Type St Inode [Path]; flag 00010000 is a listener.
			if f := strings.Fields(line); len(f) >= 7 && f[3] == "00010000" && inodes[f[6]] {
				unix++
			}
		}
	}
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(filepath.Join(dir, "net", table))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st ... inode; st 0A is LISTEN.
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			if i := strings.LastIndexByte(f[1], ':'); i >= 0 {
				if p, err := strconv.ParseUint(f[1][i+1:], 16, 16); err == nil {
					ports = append(ports, strconv.FormatUint(p, 10))
				}
			}
		}
	}
	return ports, unix
}
