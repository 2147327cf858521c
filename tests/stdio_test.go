package tests

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

// TestStdioChildReaped shows that a session's stdio child is gone after the session's DELETE,
// after the session expires with no request at all, and after the gateway stops.
func TestStdioChildReaped(t *testing.T) {
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	// A session TTL far beyond the test: only DELETE (or the child's death, or the stop) can
	// reap a child here. Expiry has a gateway of its own with a short TTL.
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntry("echo", echo),
		Args:   []string{"--session-ttl", "1h", "--stdio-grace", "500ms"},
	})
	c := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	oneChild := func(t *testing.T) int {
		t.Helper()
		kids := gatehousetest.ChildrenRunning(g.Pid(), echo)
		if len(kids) != 1 {
			t.Fatalf("want exactly one echo child of the gateway, have %v", kids)
		}
		return kids[0]
	}

	t.Run("DELETE", func(t *testing.T) {
		c := c
		c.t = t
		sid := c.initialize("2025-06-18")
		pid := oneChild(t)
		if r := c.do(http.MethodDelete, nil, map[string]string{"Mcp-Session-Id": sid}); r.status != http.StatusOK {
			t.Fatalf("DELETE: %d %s", r.status, r.body)
		}
		testsync.WaitFor(t, 15*time.Second, "the child to be reaped after DELETE", func() bool { return gatehousetest.ProcessGone(pid) })
	})

	t.Run("expiry", func(t *testing.T) {
		short := gatehousetest.Start(t, gatehousetest.Options{
			Config: "servers:\n" + stdioEntry("echo", echo),
			Args:   []string{"--session-ttl", "2s", "--stdio-grace", "500ms"},
		})
		c := rawClient{t: t, url: short.Endpoint("echo"), token: short.Token}
		sid := c.initialize("2025-06-18")
		kids := gatehousetest.ChildrenRunning(short.Pid(), echo)
		if len(kids) != 1 {
			t.Fatalf("want exactly one echo child of the gateway, have %v", kids)
		}
		pid := kids[0]
		testsync.WaitFor(t, 30*time.Second, "the child to be reaped after the session expired", func() bool { return gatehousetest.ProcessGone(pid) })
		if r := c.post(echoCall, map[string]string{"Mcp-Session-Id": sid}); r.status != http.StatusNotFound {
			t.Fatalf("expired session answered %d, want 404", r.status)
		}
	})

	t.Run("child killed", func(t *testing.T) {
		c := c
		c.t = t
		sid := c.initialize("2025-06-18")
		pid := oneChild(t)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testsync.WaitFor(t, 15*time.Second, "the killed child to be reaped", func() bool { return gatehousetest.ProcessGone(pid) })
		// A new child would not know the session: the session ends, the host starts over.
		h := map[string]string{"Mcp-Session-Id": sid}
		if r := c.post(echoCall, h); r.status != http.StatusNotFound {
			t.Fatalf("call after the child died: %d %s, want 404", r.status, r.body)
		}
		if r := c.post(echoCall, h); r.status != http.StatusNotFound {
			t.Fatalf("the session survived its upstream: %d %s", r.status, r.body)
		}
		if kids := gatehousetest.ChildrenRunning(g.Pid(), echo); len(kids) != 0 {
			t.Fatalf("children %v started for a dead session", kids)
		}
	})

	t.Run("gateway stop", func(t *testing.T) {
		c := c
		c.t = t
		c.initialize("2025-06-18")
		pid := oneChild(t)
		g.Stop(t)
		if !gatehousetest.ProcessGone(pid) {
			t.Fatalf("child %d still running after the gateway stopped", pid)
		}
	})
}

// TestStdioTreeEnds: a stdio server that ignores stdin EOF and SIGTERM, with a grandchild that
// called setsid, leaves no process behind after DELETE, after the session expires, and after
// the gateway is SIGKILLed and started again on the same data directory. Each server entry
// carries its own marker argument, which the server and its grandchild keep; the test counts
// the live processes with it.
func TestStdioTreeEnds(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "stubborn")
	build := exec.Command("go", "build", "-o", bin, "github.com/gatehouse-mcp/gatehouse/tests/internal/stubbornserver")
	build.Dir = filepath.Join(gatehousetest.RepoRoot(t), "tests")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	markers := map[string]string{}
	cfg := "servers:\n"
	for _, name := range []string{"deleted", "expired", "crashed"} {
		var b [8]byte
		_, _ = rand.Read(b[:])
		markers[name] = "--marker=" + hex.EncodeToString(b[:])
		cfg += stdioEntry(name, bin, markers[name])
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	args := []string{"--session-ttl", "2s", "--stdio-grace", "300ms", "--data-dir", dataDir}
	g := gatehousetest.Start(t, gatehousetest.Options{Config: cfg, Args: args})
	// start opens a session on the server and waits for the server and its grandchild.
	start := func(t *testing.T, name string) (rawClient, string) {
		t.Helper()
		c := rawClient{t: t, url: g.Endpoint(name), token: g.Token}
		sid := c.initialize("2025-06-18")
		testsync.WaitFor(t, 15*time.Second, "the server and its setsid grandchild", func() bool { return len(marked(markers[name])) == 2 })
		return c, sid
	}
	noneLeft := func(t *testing.T, name, after string) {
		t.Helper()
		testsync.WaitFor(t, 30*time.Second, "no process of the server's left "+after, func() bool { return len(marked(markers[name])) == 0 })
	}

	t.Run("DELETE", func(t *testing.T) {
		c, sid := start(t, "deleted")
		if r := c.do(http.MethodDelete, nil, map[string]string{"Mcp-Session-Id": sid}); r.status != http.StatusOK {
			t.Fatalf("DELETE: %d %s", r.status, r.body)
		}
		noneLeft(t, "deleted", "after DELETE")
	})
	t.Run("expiry", func(t *testing.T) {
		start(t, "expired")
		noneLeft(t, "expired", "after the session expired")
	})
	t.Run("gateway SIGKILLed and started again", func(t *testing.T) {
		start(t, "crashed")
		server := gatehousetest.ChildrenRunning(g.Pid(), bin)
		if len(server) != 1 {
			t.Fatalf("want one server child of the gateway, have %v", server)
		}
		g.Kill(t)
		// The server dies with the gateway (parent-death signal); its setsid grandchild does
		// not, and is left for the next start to end.
		testsync.WaitFor(t, 15*time.Second, "the server to die with the gateway", func() bool { return !isLive(server[0]) })
		if left := marked(markers["crashed"]); len(left) != 1 {
			t.Fatalf("after the gateway died, processes %v of the server run; want its setsid grandchild alone", left)
		}
		gatehousetest.Start(t, gatehousetest.Options{Config: cfg, Args: args})
		noneLeft(t, "crashed", "after the gateway started again")
	})
}

// marked lists the live (not zombie) processes with arg among their arguments.
func marked(arg string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !isLive(pid) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte("\x00"+arg+"\x00")) {
			out = append(out, pid)
		}
	}
	return out
}

// isLive reports whether pid exists and is not a zombie.
func isLive(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}
