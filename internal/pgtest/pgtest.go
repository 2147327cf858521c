// Package pgtest runs a real PostgreSQL (Debian's binaries) for tests: a private cluster made
// by initdb in a temporary directory, served on a loopback port with password authentication,
// stopped when the test ends. It imports testing: tests only.
//
// Postgres refuses to run as root; when the test runs as root (CI does), initdb and postgres
// run as nobody (65534) over a directory chowned to it.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/jackc/pgx/v5"
)

// nobody is the uid and gid postgres runs as when the test runs as root.
const nobody = 65534

// Timeouts: initdb and a first start take a few seconds on a busy machine.
const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
)

// Postgres is a running test cluster. Its superuser is "postgres" with a random password.
type Postgres struct {
	dir      string // owned by the test; data in dir/data
	bin      string // the directory of initdb and postgres
	port     int
	password string
	cmd      *exec.Cmd
	exited   chan struct{}
	logs     *testsync.Buffer
}

// Bin returns the directory of Debian's PostgreSQL binaries (the highest version under
// /usr/lib/postgresql), or of initdb on PATH. Without them the test is skipped, except under
// CI=true, where it fails: CI installs the package (.ci/run), so missing binaries are a bug.
func Bin(t testing.TB) string {
	t.Helper()
	if dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(dirs) > 0 {
		sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
				return d
			}
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin, initdb on PATH): install Debian's postgresql")
	}
	t.Skip("PostgreSQL binaries not found (apt-get install postgresql); CI=true fails instead")
	return ""
}

// version is the major version in /usr/lib/postgresql/<v>/bin, 0 if none.
func version(bin string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return v
}

// Start makes a cluster and starts it; it is stopped (and its directory removed) when the
// test ends.
func Start(t testing.TB) *Postgres {
	t.Helper()
	bin := Bin(t)
	// Not t.TempDir: its parents are private to root, and nobody must traverse to the data.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var pw [16]byte
	_, _ = rand.Read(pw[:])
	p := &Postgres{dir: dir, bin: bin, password: hex.EncodeToString(pw[:]), logs: &testsync.Buffer{}}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.own(pwfile); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := p.own(data); err != nil {
		t.Fatal(err)
	}
	initdb := p.command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--pwfile", pwfile,
		"--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	_ = os.Remove(pwfile)
	p.start(t)
	t.Cleanup(func() { p.stop(t) })
	return p
}

// own gives path to nobody when the test runs as root.
func (p *Postgres) own(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return os.Chown(path, nobody, nobody)
}

// command is a command that runs as nobody when the test runs as root.
func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = p.dir
	cmd.Env = []string{"LC_ALL=C", "PATH=" + p.bin + ":/usr/bin:/bin"}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	return cmd
}

// freePort is a loopback port nothing listens on now.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs postgres on a port (the same one again after Stop) and waits until it accepts
// a connection.
func (p *Postgres) start(t testing.TB) {
	t.Helper()
	if p.port == 0 {
		p.port = freePort(t)
	}
	// No unix socket (-k ''): loopback TCP only. fsync off: the tests judge what the store
	// commits, not whether this throwaway cluster survives a power cut.
	p.cmd = p.command(filepath.Join(p.bin, "postgres"), "-D", filepath.Join(p.dir, "data"),
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-k", "", "-c", "fsync=off",
		"-c", "max_connections=100", "-c", "log_min_messages=warning")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	p.exited = make(chan struct{})
	cmd, exited := p.cmd, p.exited
	go func() { _ = cmd.Wait(); close(exited) }()
	testsync.WaitFor(t, readyTimeout, "postgres to accept connections", func() bool {
		select {
		case <-exited:
			t.Fatalf("postgres exited before it was ready:\n%s", p.logs.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err != nil {
			return false
		}
		_ = c.Close(ctx)
		return true
	})
}

// Stop stops the server (a fast shutdown: SIGINT, then SIGKILL if it is not gone within
// 30s). The cluster stays: Restart starts it again on the same port.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	p.stop(t)
}

func (p *Postgres) stop(t testing.TB) {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("postgres did not stop within %v of SIGINT; killed", stopTimeout)
	}
	p.cmd = nil
}

// Restart starts a stopped server again.
func (p *Postgres) Restart(t testing.TB) {
	t.Helper()
	if p.cmd != nil {
		t.Fatal("pgtest: Restart of a running server")
	}
	p.start(t)
}

// Port is the loopback port it serves on.
func (p *Postgres) Port() int { return p.port }

// Logs is what the server wrote so far.
func (p *Postgres) Logs() string { return p.logs.String() }

// DSN is a connection string for database db as the superuser.
func (p *Postgres) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/%s?sslmode=disable", p.password, p.port, db)
}

// CreateDatabase creates a new database of the test's own and returns its DSN.
func (p *Postgres) CreateDatabase(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return p.DSN(name)
}

// WriteDSNFile writes dsn to a file only its owner can read (a secret file, as the services
// take them) in a new temporary directory, and returns its path.
func WriteDSNFile(t testing.TB, dsn string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "postgres-dsn")
	if err := os.WriteFile(path, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
