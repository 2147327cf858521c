package devetcd_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/devetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// probeEnv makes the test binary a probe instead: it tries to read and write the etcd whose
// client socket the variable names, and exits 0 only if every attempt was refused.
const probeEnv = "DEVETCD_PROBE_SOCKET"

func TestMain(m *testing.M) {
	if sock := os.Getenv(probeEnv); sock != "" {
		os.Exit(probe(sock))
	}
	os.Exit(m.Run())
}

// probe is another local process trying the etcd: gRPC (clientv3) and the v3 JSON gateway
// paths over HTTP. It prints what it saw and exits 0 when all of it was refused.
func probe(sock string) int {
	leaked := 0
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err == nil {
		if _, err := c.Get(ctx, "probe"); err == nil {
			fmt.Println("grpc get: allowed")
			leaked++
		}
		if _, err := c.Put(ctx, "probe", "x"); err == nil {
			fmt.Println("grpc put: allowed")
			leaked++
		}
		_ = c.Close()
	}
	for _, path := range []string{"/v3/kv/range", "/v3/kv/put", "/version"} {
		if code, err := httpOverSocket(ctx, sock, path); err == nil {
			fmt.Printf("http %s: answered %d\n", path, code)
			leaked++
		}
	}
	if leaked > 0 {
		return 1
	}
	return 0
}

// httpOverSocket POSTs a v3 JSON gateway body to path over the unix socket.
func httpOverSocket(ctx context.Context, sock, path string) (int, error) {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://etcd"+path, strings.NewReader(`{"key":"cHJvYmU=","value":"eA=="}`))
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// start starts etcd in a data directory every user may traverse, so that only devetcd's own
// socket directory and socket mode can keep another user out.
func start(t *testing.T) *devetcd.Etcd {
	t.Helper()
	dir, err := os.MkdirTemp("", "devetcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	before, beforeUnix := listeningTCP(t), listeningUnix(t)
	e, err := devetcd.Start(context.Background(), devetcd.Config{Dir: dir, NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if got := newTCPListeners(t, before); len(got) > 0 {
		t.Errorf("etcd opened TCP listeners (socket inodes %v); it must listen on its unix socket only", got)
	}
	// Exactly one new unix listener, its socket (which also shows listeningUnix sees them).
	n := 0
	for inode := range listeningUnix(t) {
		if !beforeUnix[inode] {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d new unix listeners, want the one client socket", n)
	}
	return e
}

func TestSocketOnly(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("own client works", func(t *testing.T) {
		if _, err := e.Client.Put(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(e.Endpoint(), "unix:///") {
			t.Errorf("endpoint %q: want unix:///...", e.Endpoint())
		}
	})

	t.Run("socket and directory modes", func(t *testing.T) {
		st, err := os.Lstat(e.Socket())
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 {
			t.Errorf("socket mode %v, want a socket with 0600", st.Mode())
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() {
			t.Errorf("socket owner %d, want %d", uid, os.Geteuid())
		}
		dst, err := os.Lstat(filepath.Dir(e.Socket()))
		if err != nil {
			t.Fatal(err)
		}
		if !dst.IsDir() || dst.Mode().Perm() != 0o700 {
			t.Errorf("socket dir mode %v, want a directory with 0700", dst.Mode())
		}
		if uid := dst.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() {
			t.Errorf("socket dir owner %d, want %d", uid, os.Geteuid())
		}
	})

	t.Run("no JSON gateway", func(t *testing.T) {
		// Even the owner finds no HTTP/JSON API behind the socket: the gRPC gateway is off.
		for _, path := range []string{"/v3/kv/range", "/v3/kv/put"} {
			code, err := httpOverSocket(ctx, e.Socket(), path)
			if err == nil && code != http.StatusNotFound {
				t.Errorf("POST %s: %d, want 404 (no gateway)", path, code)
			}
		}
	})

	t.Run("default ports closed", func(t *testing.T) {
		for _, addr := range []string{"127.0.0.1:2379", "127.0.0.1:2380", "[::1]:2379", "[::1]:2380"} {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				_ = c.Close()
				t.Errorf("%s accepted a connection", addr)
			}
		}
	})

	t.Run("another user is refused", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to run the probe as another uid")
		}
		bin := probeBinary(t)
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = []string{probeEnv + "=" + e.Socket()}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			t.Fatalf("uid 65534 reached etcd (exit %d):\n%s", exit.ExitCode(), out)
		case err != nil:
			t.Fatalf("run probe: %v\n%s", err, out)
		}
		// The same probe as this user does get through: the probe itself can fail.
		self := exec.CommandContext(ctx, bin)
		self.Env = []string{probeEnv + "=" + e.Socket()}
		if out, err := self.CombinedOutput(); !errors.As(err, &exit) || !strings.Contains(string(out), "grpc put: allowed") {
			t.Fatalf("probe as owner: err %v, output %q; want it to reach etcd", err, out)
		}
	})
}

// probeBinary copies the test binary where uid 65534 can execute it.
func probeBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "devetcd-probe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "probe")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// listeningTCP returns the inodes of this process's sockets that are listening TCP sockets.
func listeningTCP(t *testing.T) map[string]bool {
	t.Helper()
	listening := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local rem st ... inode: st 0A is LISTEN.
			if len(fields) > 9 && fields[3] == "0A" {
				listening[fields[9]] = true
			}
		}
		_ = fh.Close()
	}
	own := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		inode := strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")
		if listening[inode] {
			own[inode] = true
		}
	}
	return own
}

func newTCPListeners(t *testing.T, before map[string]bool) []string {
	var added []string
	for inode := range listeningTCP(t) {
		if !before[inode] {
			added = append(added, inode)
		}
	}
	return added
}

// TestDeepDataDir: a data directory too deep for a unix socket path gets its socket in a
// private temporary directory, removed at Close.
func TestDeepDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	e, err := devetcd.Start(context.Background(), devetcd.Config{Dir: dir, NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	sockDir := filepath.Dir(e.Socket())
	if strings.HasPrefix(sockDir, dir) {
		t.Fatalf("socket %s in the too-deep data dir", e.Socket())
	}
	st, err := os.Lstat(sockDir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("socket dir %s: %v %v, want mode 0700", sockDir, st.Mode(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.Client.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	e.Close()
	if _, err := os.Lstat(sockDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket dir %s left after Close: %v", sockDir, err)
	}
}

func TestSocketDirOfAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, devetcd.SocketDir)
	if err := os.Mkdir(sock, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sock, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := devetcd.Start(context.Background(), devetcd.Config{Dir: dir, NoFsync: true})
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Fatalf("err %v, want a socket dir of another user refused", err)
	}
}

// TestInProcess: in-process etcd opens no listener of any kind, and its client does what the
// gateway needs of etcd: keys, leases with keep-alive, watches.
func TestInProcess(t *testing.T) {
	dir := t.TempDir()
	beforeTCP, beforeUnix := listeningTCP(t), listeningUnix(t)
	e, err := devetcd.Start(context.Background(), devetcd.Config{Dir: dir, NoFsync: true, InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got := newTCPListeners(t, beforeTCP); len(got) > 0 {
		t.Errorf("in-process etcd opened TCP listeners %v", got)
	}
	for inode := range listeningUnix(t) {
		if !beforeUnix[inode] {
			t.Errorf("in-process etcd opened a unix listener (inode %s)", inode)
		}
	}
	if e.Endpoint() != "" || e.Socket() != "" {
		t.Errorf("endpoint %q socket %q, want none", e.Endpoint(), e.Socket())
	}
	if _, err := os.Stat(filepath.Join(dir, devetcd.SocketDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket dir created in-process: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch := e.Client.Watch(ctx, "/w/", clientv3.WithPrefix())
	lease, err := e.Client.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Put(ctx, "/w/k", "v", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	got, err := e.Client.Get(ctx, "/w/k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v" || got.Kvs[0].Lease != int64(lease.ID) {
		t.Fatalf("Get: %v %v", got, err)
	}
	select {
	case w := <-watch:
		if len(w.Events) != 1 || string(w.Events[0].Kv.Key) != "/w/k" {
			t.Fatalf("watch: %+v", w)
		}
	case <-ctx.Done():
		t.Fatal("no watch event")
	}
}

// listeningUnix returns the inodes of this process's listening unix sockets.
func listeningUnix(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Skipf("no /proc/net/unix: %v", err)
	}
	listening := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		// Num RefCount Protocol Flags Type St Inode [Path]; flag 00010000 is a listener.
		if len(f) >= 7 && f[3] == "00010000" {
			listening[f[6]] = true
		}
	}
	own := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if inode := strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"); listening[inode] {
			own[inode] = true
		}
	}
	return own
}
