// Package etcdtest runs a real embedded etcd (devetcd, on a private unix socket) for tests.
// Starting one takes a second or two, so a test package shares one (started in TestMain) and
// its tests keep apart by key prefix.
package etcdtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/devetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Etcd is a running embedded etcd, its data directory and a client connected to it.
type Etcd struct {
	Client *clientv3.Client
	server *devetcd.Etcd
	dir    string
}

// Start starts a single-member etcd with its data in a new temporary directory and waits
// until it serves.
func Start() (*Etcd, error) {
	dir, err := os.MkdirTemp("", "etcdtest-")
	if err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	e, err := start(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return e, nil
}

func start(dir string) (*Etcd, error) {
	e, err := devetcd.Start(context.Background(), devetcd.Config{Dir: dir, Name: "etcdtest", NoFsync: true})
	if err != nil {
		return nil, err
	}
	return &Etcd{Client: e.Client, server: e, dir: dir}, nil
}

// Endpoint is the client endpoint, unix:///path (only this user can connect).
func (e *Etcd) Endpoint() string { return e.Client.Endpoints()[0] }

// Close disconnects, stops etcd and removes its data.
func (e *Etcd) Close() {
	e.server.Close()
	_ = os.RemoveAll(e.dir)
}

// prefixes numbers the prefixes handed out, so a test run twice (-count) starts afresh.
var prefixes atomic.Int64

// Prefix returns a key prefix of the test's own, so tests sharing one etcd never see each
// other's keys. Each call returns a new prefix.
func Prefix(t testing.TB) string {
	return fmt.Sprintf("/test/%d/%s/", prefixes.Add(1), strings.ReplaceAll(t.Name(), "/", "_"))
}

// Main starts etcd for a test package, stores it in *e, runs the tests and stops etcd: call
// it from TestMain as os.Exit(etcdtest.Main(m, &shared)).
func Main(m *testing.M, e **Etcd) int {
	started, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdtest:", err)
		return 1
	}
	defer started.Close()
	*e = started
	return m.Run()
}
