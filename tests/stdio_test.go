package tests

import (
	"net/http"
	"syscall"
	"testing"
	"time"

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
		gatehousetest.WaitFor(t, 15*time.Second, "the child to be reaped after DELETE", func() bool { return gatehousetest.ProcessGone(pid) })
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
		gatehousetest.WaitFor(t, 30*time.Second, "the child to be reaped after the session expired", func() bool { return gatehousetest.ProcessGone(pid) })
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
		gatehousetest.WaitFor(t, 15*time.Second, "the killed child to be reaped", func() bool { return gatehousetest.ProcessGone(pid) })
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
