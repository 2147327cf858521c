// Package pgcluster runs a private PostgreSQL cluster from Debian's binaries: made by initdb
// in a directory of its own, served on a loopback port only (no unix socket) with password
// authentication, and stopped by its owner. The tests (internal/pgtest) and the benchmarks
// (bench/) start their databases with it.
//
// PostgreSQL refuses to run as root; when this process is root (CI is), initdb and postgres
// run as nobody (65534) over a directory given to it.
package pgcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// nobody is the uid and gid postgres runs as when this process is root.
const nobody = 65534

// ErrNoBinaries is Bin's error when PostgreSQL is not installed.
var ErrNoBinaries = errors.New("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin, initdb on PATH): install Debian's postgresql")

// Bin returns the directory of Debian's PostgreSQL binaries (the highest version under
// /usr/lib/postgresql), or of initdb on PATH.
func Bin() (string, error) {
	if dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(dirs) > 0 {
		sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
				return d, nil
			}
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrNoBinaries
}

// version is the major version in /usr/lib/postgresql/<v>/bin, 0 if none.
func version(bin string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return v
}

// Options are how a cluster runs.
type Options struct {
	// Fsync keeps PostgreSQL's fsync on. Tests turn it off (they judge what a store commits,
	// not whether a throwaway cluster survives a power cut); a benchmark of a durable
	// store must keep it on.
	Fsync bool
	// Logs receives the server's output; nil: discarded.
	Logs io.Writer
}

// Cluster is a PostgreSQL cluster in a directory of its own. Its superuser is "postgres"
// with a random password.
type Cluster struct {
	dir      string // data in dir/data
	bin      string
	opts     Options
	port     int
	password string
	cmd      *exec.Cmd
	exited   chan struct{}
}

// Init makes a cluster under a new directory in os.TempDir (not a test's TempDir, whose
// parents may be private to root: nobody must reach the data). Remove removes it.
func Init(opts Options) (*Cluster, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgcluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bin: bin, opts: opts}
	if err := c.init(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) init() error {
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return err
	}
	var pw [16]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return err
	}
	c.password = hex.EncodeToString(pw[:])
	pwfile := filepath.Join(c.dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(c.password+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	if err := c.own(pwfile); err != nil {
		return err
	}
	data := filepath.Join(c.dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return err
	}
	if err := c.own(data); err != nil {
		return err
	}
	initdb := c.command(filepath.Join(c.bin, "initdb"), "-D", data, "-U", "postgres", "--pwfile", pwfile,
		"--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	return nil
}

// own gives path to nobody when this process is root.
func (c *Cluster) own(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return os.Chown(path, nobody, nobody)
}

// command is a command that runs as nobody when this process is root.
func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = c.dir
	cmd.Env = []string{"LC_ALL=C", "PATH=" + c.bin + ":/usr/bin:/bin"}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	return cmd
}

// freePort is a loopback port nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start runs postgres (on the port of an earlier Start, if there was one) and waits, at most
// until ctx ends, until it accepts a connection.
func (c *Cluster) Start(ctx context.Context) error {
	if c.cmd != nil {
		return errors.New("pgcluster: Start of a running server")
	}
	if c.port == 0 {
		port, err := freePort()
		if err != nil {
			return err
		}
		c.port = port
	}
	fsync := "off"
	if c.opts.Fsync {
		fsync = "on"
	}
	// No unix socket (-k ''): loopback TCP only.
	cmd := c.command(filepath.Join(c.bin, "postgres"), "-D", filepath.Join(c.dir, "data"),
		"-h", "127.0.0.1", "-p", strconv.Itoa(c.port), "-k", "", "-c", "fsync="+fsync,
		"-c", "max_connections=100", "-c", "log_min_messages=warning")
	cmd.Stdout, cmd.Stderr = c.opts.Logs, c.opts.Logs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	c.cmd, c.exited = cmd, exited
	go func() { _ = cmd.Wait(); close(exited) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if c.ready(ctx) {
			return nil
		}
		select {
		case <-exited:
			c.cmd = nil
			return errors.New("postgres exited before it was ready (see its logs)")
		case <-ctx.Done():
			_ = c.Stop(time.Second)
			return fmt.Errorf("postgres not ready: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// ready reports whether the server accepts a connection now.
func (c *Cluster) ready(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return false
	}
	_ = conn.Close(ctx)
	return true
}

// Stop stops the server: a fast shutdown (SIGINT), then SIGKILL if it is not gone within
// grace, which is then an error. The cluster stays: Start starts it again on the same port.
func (c *Cluster) Stop(grace time.Duration) error {
	if c.cmd == nil {
		return nil
	}
	defer func() { c.cmd = nil }()
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.exited:
		return nil
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("postgres did not stop within %v of SIGINT; killed", grace)
	}
}

// Remove removes the cluster's directory; stop it first.
func (c *Cluster) Remove() error { return os.RemoveAll(c.dir) }

// PID is the postmaster's process id (its backends are its children); 0 when stopped.
func (c *Cluster) PID() int {
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Port is the loopback port it serves on.
func (c *Cluster) Port() int { return c.port }

// DSN is a connection string for database db as the superuser.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/%s?sslmode=disable", c.password, c.port, db)
}

// CreateDatabase creates a new database and returns its DSN.
func (c *Cluster) CreateDatabase(ctx context.Context) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	name := "d_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	return c.DSN(name), nil
}
