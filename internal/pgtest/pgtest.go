// Package pgtest runs a real PostgreSQL (Debian's binaries, internal/pgcluster) for tests: a
// private cluster served on a loopback port with password authentication and fsync off,
// stopped and removed when the test ends. It imports testing: tests only.
package pgtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/pgcluster"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

// Timeouts: initdb and a first start take a few seconds on a busy machine.
const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
)

// Postgres is a running test cluster. Its superuser is "postgres" with a random password.
type Postgres struct {
	*pgcluster.Cluster
	logs *testsync.Buffer
}

// Bin returns the directory of Debian's PostgreSQL binaries. Without them the test is
// skipped, except under CI=true, where it fails: CI installs the package (.ci/run), so
// missing binaries are a bug.
func Bin(t testing.TB) string {
	t.Helper()
	bin, err := pgcluster.Bin()
	if err == nil {
		return bin
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(err)
	}
	t.Skip(err.Error() + "; CI=true fails instead")
	return ""
}

// Start makes a cluster and starts it; it is stopped (and its directory removed) when the
// test ends.
func Start(t testing.TB) *Postgres {
	t.Helper()
	Bin(t)
	logs := &testsync.Buffer{}
	c, err := pgcluster.Init(pgcluster.Options{Logs: logs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Remove() })
	p := &Postgres{Cluster: c, logs: logs}
	p.start(t)
	t.Cleanup(func() {
		if err := c.Stop(stopTimeout); err != nil {
			t.Error(err)
		}
	})
	return p
}

func (p *Postgres) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := p.Cluster.Start(ctx); err != nil {
		t.Fatalf("%v\n%s", err, p.logs.String())
	}
}

// Stop stops the server (a fast shutdown: SIGINT, then SIGKILL if it is not gone within
// 30s). The cluster stays: Restart starts it again on the same port.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if err := p.Cluster.Stop(stopTimeout); err != nil {
		t.Error(err)
	}
}

// Restart starts a stopped server again.
func (p *Postgres) Restart(t testing.TB) {
	t.Helper()
	if p.PID() != 0 {
		t.Fatal(errors.New("pgtest: Restart of a running server"))
	}
	p.start(t)
}

// Logs is what the server wrote so far.
func (p *Postgres) Logs() string { return p.logs.String() }

// CreateDatabase creates a new database of the test's own and returns its DSN.
func (p *Postgres) CreateDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, err := p.Cluster.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
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
