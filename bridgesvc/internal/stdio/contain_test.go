package stdio_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/stdio"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/stdio/stdiotest"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// envTag marks every process a test starts (children and their descendants inherit it), so
// that the test can count what of theirs still runs.
const envTag = "GATEHOUSE_STDIOTEST_TAG"

// Owner mode: the test binary re-executed as a bridge that owns children (see runOwner).
const (
	envOwner         = "GATEHOUSE_STDIOTEST_OWNER" // the state directory
	envOwnerNoCgroup = "GATEHOUSE_STDIOTEST_OWNER_NOCGROUP"
)

func newTag() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// tagged lists the live (not zombie) processes that carry tag.
func tagged(tag string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || gone(pid) {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && bytes.Contains(env, []byte("\x00"+envTag+"="+tag+"\x00")) {
			out = append(out, pid)
		}
	}
	return out
}

func waitNoneTagged(t *testing.T, tag, after string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := tagged(tag)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v still run %s", left, after)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitReapedBy waits until pid is no longer a child (zombie or not) of parent.
func waitReapedBy(t *testing.T, pid, parent int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(parent) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d (state %s) not reaped by %d", pid, f[0], parent)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startTree starts a stubborn child (it ignores stdin EOF and SIGTERM) with two grandchildren:
// one in its process group, one that called setsid. It returns the child and the pids.
func startTree(t *testing.T, s *stdio.Supervisor, tag string) (*stdio.Child, []int) {
	t.Helper()
	c, err := s.Start(stdio.Spec{Argv: []string{self(t)}, Env: map[string]string{stdiotest.EnvMode: "stubborn", envTag: tag}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	pids := []int{c.Pid()}
	for i, tool := range []string{"spawn", "setsid"} {
		got, err := call(t, c, toolCall(i+1, tool, ""))
		if err != nil || len(got) != 1 {
			t.Fatalf("%s = %s, %v", tool, raws(got), err)
		}
		pids = append(pids, pidIn(t, got[0]))
	}
	if n := len(tagged(tag)); n != 3 {
		t.Fatalf("%d tagged processes running, want 3", n)
	}
	return c, pids
}

// inCgroup reports whether pid runs in a per-child cgroup of the bridge.
func inCgroup(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	return err == nil && strings.Contains(string(b), "/gatehouse-stdio-")
}

// containments are the two mechanisms; the cgroup one is skipped where the machine has no
// writable cgroup2 hierarchy (CI runs as root and has one).
var containments = []struct {
	name     string
	noCgroup bool
}{
	{name: "cgroup"},
	{name: "subreaper", noCgroup: true},
}

func TestTreeEndsWithTheChild(t *testing.T) {
	t.Parallel()
	for _, mode := range containments {
		for _, end := range []string{"close", "child exits"} {
			t.Run(mode.name+"/"+end, func(t *testing.T) {
				t.Parallel()
				s := newSupervisor(t, stdio.Options{NoCgroup: mode.noCgroup})
				tag := newTag()
				c, pids := startTree(t, s, tag)
				if in := inCgroup(pids[2]); in != !mode.noCgroup {
					if !mode.noCgroup {
						t.Skip("no writable cgroup2 hierarchy on this machine")
					}
					t.Fatalf("setsid grandchild in a bridge cgroup: %v", in)
				}
				switch end {
				case "close":
					closeChild(t, c)
				case "child exits":
					if _, err := call(t, c, toolCall(9, "crash", "")); !errors.Is(err, upstream.ErrExited) {
						t.Fatalf("crash = %v", err)
					}
					reaped(t, c)
				}
				waitNoneTagged(t, tag, "after the child ended")
				if mode.noCgroup {
					// The grandchildren were orphaned to this process (the subreaper): it
					// must reap them too, not leave zombies.
					for _, pid := range pids[1:] {
						waitReapedBy(t, pid, os.Getpid())
					}
				}
			})
		}
	}
}

func TestCapsPerPrincipalAndTenant(t *testing.T) {
	t.Parallel()
	s := newSupervisor(t, stdio.Options{MaxChildren: 7, MaxChildrenPerTenant: 4, MaxChildrenPerPrincipal: 2})
	startAs := func(tenant, principal string) (*stdio.Child, error) {
		return s.Start(stdio.Spec{Argv: []string{self(t)}, Env: map[string]string{stdiotest.EnvMode: "server"}, Tenant: tenant, Principal: principal})
	}
	mustStart := func(tenant, principal string) *stdio.Child {
		t.Helper()
		c, err := startAs(tenant, principal)
		if err != nil {
			t.Fatalf("Start as %s/%s: %v", tenant, principal, err)
		}
		return c
	}
	refused := func(tenant, principal, cap string) {
		t.Helper()
		if _, err := startAs(tenant, principal); !errors.Is(err, upstream.ErrTooMany) || !strings.Contains(err.Error(), cap) {
			t.Fatalf("Start as %s/%s = %v, want ErrTooMany naming the %s", tenant, principal, err, cap)
		}
	}

	// Many concurrent starts by one principal: exactly its cap gets through.
	const n = 24
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		started []*stdio.Child
		other   []error
	)
	for range n {
		wg.Go(func() {
			c, err := startAs("t1", "alice")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				started = append(started, c)
			case !errors.Is(err, upstream.ErrTooMany) || !strings.Contains(err.Error(), "per-principal cap"):
				other = append(other, err)
			}
		})
	}
	wg.Wait()
	if len(started) != 2 || len(other) != 0 {
		t.Fatalf("%d of %d concurrent starts by one principal succeeded (want 2); other errors: %v", len(started), n, other)
	}
	// The same principal name in another tenant is another principal.
	mustStart("t2", "alice")
	// With alice at her cap, another principal of her tenant still starts children, up to
	// the tenant's cap; then the tenant is full for everyone in it, but not for others.
	mustStart("t1", "bob")
	mustStart("t1", "bob")
	refused("t1", "carol", "per-tenant cap")
	mustStart("t2", "dave")
	mustStart("", "") // a caller that names nobody counts under the empty ones
	refused("t3", "erin", "maximum of 7")
	// A reaped child gives its place back.
	closeChild(t, started[0])
	mustStart("t1", "alice")
	if n := s.Len(); n != 7 {
		t.Fatalf("Len = %d, want 7", n)
	}
}

func TestIdleChildBuffers(t *testing.T) {
	t.Parallel()
	c := start(t, newSupervisor(t, stdio.Options{MaxLine: 1 << 20, MaxStderrLine: 4 << 10}), "server")
	if _, err := call(t, c, toolCall(1, "echo", `{"text":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	const idle = 8 << 10 // 4 KiB for stdout, 4 KiB for stderr
	if n := c.BufferBytes(); n > idle {
		t.Fatalf("an idle child holds %d buffer bytes, want at most %d", n, idle)
	}
	// A long line grows the buffer; once it is read the buffer goes back to its resting size.
	got, err := call(t, c, toolCall(2, "big", `{"size":300000}`))
	if err != nil || len(got) != 1 || len(got[0].Raw) < 300000 {
		t.Fatalf("big = %d messages, %v", len(got), err)
	}
	if n := c.BufferBytes(); n > idle {
		t.Fatalf("after a 300 KB line the child holds %d buffer bytes, want at most %d", n, idle)
	}
	closeChild(t, c)
}

func TestStateDir(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Run("corrupt file is ignored", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "stdio-children.json"), []byte(`{"version":1,"children":[{"pid":`), 0o600); err != nil {
			t.Fatal(err)
		}
		s := newSupervisor(t, stdio.Options{StateDir: dir})
		closeChild(t, start(t, s, "server"))
	})
	t.Run("one bridge per directory", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		newSupervisor(t, stdio.Options{StateDir: dir})
		if _, err := stdio.NewSupervisor(stdio.Options{StateDir: dir, Logger: quiet}); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("second Supervisor on the state dir = %v, want in use", err)
		}
	})
	t.Run("records live children only", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s := newSupervisor(t, stdio.Options{StateDir: dir})
		c := start(t, s, "server")
		b, err := os.ReadFile(filepath.Join(dir, "stdio-children.json"))
		if err != nil || !strings.Contains(string(b), fmt.Sprintf(`"pid":%d`, c.Pid())) {
			t.Fatalf("state file = %s, %v; want the child's pid", b, err)
		}
		closeChild(t, c)
		b, err = os.ReadFile(filepath.Join(dir, "stdio-children.json"))
		if err != nil || strings.Contains(string(b), "pid") {
			t.Fatalf("state file after reaping = %s, %v", b, err)
		}
	})
}

// TestRestartEndsTheCrashedRunsChildren: a bridge process owning a stubborn child with a
// setsid grandchild is SIGKILLed; the child dies with it (parent-death signal), the setsid
// grandchild does not, and a new Supervisor on the same state directory ends it.
func TestRestartEndsTheCrashedRunsChildren(t *testing.T) {
	t.Parallel()
	for _, mode := range containments {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			dir, tag := t.TempDir(), newTag()
			owner := exec.Command(self(t))
			owner.Env = append(os.Environ(), envOwner+"="+dir, envTag+"="+tag)
			if mode.noCgroup {
				owner.Env = append(owner.Env, envOwnerNoCgroup+"=1")
			}
			out, err := owner.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			owner.Stderr = os.Stderr
			if err := owner.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = owner.Process.Kill(); _ = owner.Wait() })
			line, err := bufio.NewReader(out).ReadString('\n')
			var child, grandchild, inCg int
			if _, serr := fmt.Sscanf(line, "ready %d %d %d", &child, &grandchild, &inCg); err != nil || serr != nil {
				t.Fatalf("owner said %q, %v", line, err)
			}
			if !mode.noCgroup && inCg == 0 {
				t.Skip("no writable cgroup2 hierarchy on this machine")
			}
			if err := owner.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = owner.Wait()
			waitGone(t, child) // the parent-death signal
			if gone(grandchild) {
				t.Fatal("the setsid grandchild died with the bridge: nothing left for the restart to end")
			}
			newSupervisor(t, stdio.Options{StateDir: dir, NoCgroup: mode.noCgroup})
			waitNoneTagged(t, tag, "after a restart on the state dir")
		})
	}
}

// runOwner is the owner process of TestRestartEndsTheCrashedRunsChildren: it starts the tree,
// says "ready CHILD SETSID-GRANDCHILD IN-CGROUP" and waits to be killed.
func runOwner(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "owner:", err)
		os.Exit(1)
	}
	exe, err := os.Executable()
	if err != nil {
		fail(err)
	}
	s, err := stdio.NewSupervisor(stdio.Options{StateDir: dir, NoCgroup: os.Getenv(envOwnerNoCgroup) != "", Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		fail(err)
	}
	c, err := s.Start(stdio.Spec{Argv: []string{exe}, Env: map[string]string{stdiotest.EnvMode: "stubborn", envTag: os.Getenv(envTag)}})
	if err != nil {
		fail(err)
	}
	var gc string
	m, err := jsonrpc.Peek([]byte(toolCall(1, "setsid", "")))
	if err != nil {
		fail(err)
	}
	if err := c.Send(context.Background(), m, func(out upstream.Message) error {
		s := string(out.Raw)
		if i := strings.Index(s, `"text":"`); i >= 0 {
			gc, _, _ = strings.Cut(s[i+len(`"text":"`):], `"`)
		}
		return nil
	}); err != nil {
		fail(err)
	}
	pid, err := strconv.Atoi(gc)
	if err != nil {
		fail(fmt.Errorf("setsid answered %q", gc))
	}
	in := 0
	if inCgroup(pid) {
		in = 1
	}
	fmt.Printf("ready %d %d %d\n", c.Pid(), pid, in)
	for {
		time.Sleep(time.Hour)
	}
}
