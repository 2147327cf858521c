// Package etcdtest runs a real embedded etcd on free loopback ports for tests. Starting one
// takes a second or two, so a test package shares one (started in TestMain) and its tests
// keep apart by key prefix.
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a running embedded etcd, its data directory and a client connected to it.
type Etcd struct {
	Client *clientv3.Client
	server *embed.Etcd
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
	clientURL, err := freeURL()
	if err != nil {
		return nil, err
	}
	peerURL, err := freeURL()
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	srv, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	timer := time.NewTimer(60 * time.Second)
	defer timer.Stop()
	select {
	case <-srv.Server.ReadyNotify():
	case err := <-srv.Err():
		srv.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-timer.C:
		srv.Close()
		return nil, errors.New("embedded etcd did not become ready within 60s")
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{clientURL.Host},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("connect to embedded etcd: %w", err)
	}
	return &Etcd{Client: client, server: srv, dir: dir}, nil
}

// Endpoint is the client address, host:port.
func (e *Etcd) Endpoint() string { return e.Client.Endpoints()[0] }

// Close disconnects, stops etcd and removes its data.
func (e *Etcd) Close() {
	_ = e.Client.Close()
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

func freeURL() (*url.URL, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pick a port for etcd: %w", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return &url.URL{Scheme: "http", Host: addr}, nil
}
