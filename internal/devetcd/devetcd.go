// Package devetcd runs an embedded single-member etcd that only its own process can reach:
// the etcd of single-process mode, and of tests.
//
// etcd holds what the gateway trusts (registry entries whose commands the bridge runs, token
// digests, sessions), so it listens on no TCP port at all, has no peer listener and no
// HTTP/JSON gRPC gateway. In-process (single-process mode) it has no client listener either:
// the gateway's client calls the server directly, so no other process can connect, not even
// one of the same user (a stdio child). Otherwise (tests, whose split-mode binaries need an
// endpoint) its one listener is a unix socket with mode 0600 in a directory with mode 0700
// inside the data directory. Both were chosen over loopback TCP with client certificates:
// no key material on disk, no port another process could take first.
package devetcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
)

// SocketDir is the directory inside Config.Dir that holds etcd's sockets.
const SocketDir = "sock"

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is 108 bytes with its
// terminating NUL).
const maxSocketPath = 107

// Etcd is a running embedded etcd and a client connected to it.
type Etcd struct {
	server *embed.Etcd
	Client *clientv3.Client
	socket string
	// tempDir is the socket's directory when it is not in the data directory.
	tempDir string
}

// Config says where etcd keeps its data and how.
type Config struct {
	// Dir holds etcd's data and, in Dir/sock, its sockets.
	Dir  string
	Name string // the member name; "gatehouse" when empty
	// NoFsync trades durability for speed: for tests only.
	NoFsync bool
	// InProcess starts etcd with no listener at all: Client calls the server in-process
	// (etcd's v3client), so nothing outside this process can reach it, not even processes of
	// the same user. Single-process mode uses it; tests, whose split-mode binaries need an
	// endpoint, use the socket.
	InProcess bool
}

// Start starts etcd on a unix socket in c.Dir/sock and waits until it serves.
func Start(ctx context.Context, c Config) (*Etcd, error) {
	if c.Dir == "" {
		return nil, errors.New("embedded etcd: a data directory is required")
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	if c.InProcess {
		return startInProcess(ctx, c, dir)
	}
	sockDir := filepath.Join(dir, SocketDir)
	tempSockDir := ""
	if len(filepath.Join(sockDir, "client")) > maxSocketPath {
		// A unix socket path has at most 107 bytes: a deep data directory gets its socket in
		// a private temporary directory instead (mode 0700, random name, removed by Close).
		if tempSockDir, err = os.MkdirTemp("", "gatehouse-etcd-"); err != nil {
			return nil, fmt.Errorf("embedded etcd: socket dir: %w", err)
		}
		sockDir = tempSockDir
	}
	if err := privateDir(sockDir); err != nil {
		removeAll(tempSockDir)
		return nil, err
	}
	clientSock := filepath.Join(sockDir, "client")
	peerSock := filepath.Join(sockDir, "peer")
	if len(clientSock) > maxSocketPath {
		removeAll(tempSockDir)
		return nil, fmt.Errorf("embedded etcd: socket path %s is longer than %d bytes: set TMPDIR or the data directory shorter", clientSock, maxSocketPath)
	}
	clientURL := url.URL{Scheme: "unix", Path: clientSock}
	peerURL := url.URL{Scheme: "unix", Path: peerSock}

	cfg := newConfig(c, dir, peerURL)
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		removeAll(tempSockDir)
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	started := &Etcd{server: e, socket: clientSock, tempDir: tempSockDir}
	fail := func(err error) (*Etcd, error) {
		started.Close()
		return nil, err
	}
	// The directory already keeps everyone else out; the sockets' own mode says so twice.
	if err := os.Chmod(clientSock, 0o600); err != nil {
		return fail(fmt.Errorf("embedded etcd: socket mode: %w", err))
	}
	if err := waitReady(ctx, e); err != nil {
		return fail(err)
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"unix://" + clientSock},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return fail(fmt.Errorf("connect to embedded etcd: %w", err))
	}
	started.Client = client
	return started, nil
}

// newConfig is the embedded configuration common to both modes: one member, no peer
// listener, no JSON gateway, no metrics listener, etcd's own logging silenced.
func newConfig(c Config, dir string, peerURL url.URL) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	if cfg.Name == "" {
		cfg.Name = "gatehouse"
	}
	cfg.Dir = dir
	cfg.UnsafeNoFsync = c.NoFsync
	cfg.EnableGRPCGateway = false
	// A single member has no peers to hear from: no peer listener at all. The advertised
	// peer URL only names the member in the cluster's configuration; nothing listens there.
	cfg.ListenPeerUrls = nil
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	return cfg
}

// startInProcess starts etcd with no client listener and an in-process client.
func startInProcess(ctx context.Context, c Config, dir string) (*Etcd, error) {
	cfg := newConfig(c, dir, url.URL{Scheme: "unix", Path: filepath.Join(dir, "no-peer-listener")})
	cfg.ListenClientUrls = nil
	cfg.AdvertiseClientUrls = nil
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	started := &Etcd{server: e}
	if err := waitReady(ctx, e); err != nil {
		started.Close()
		return nil, err
	}
	started.Client = v3client.New(e.Server)
	return started, nil
}

// waitReady waits until e serves, at most 60 s.
func waitReady(ctx context.Context, e *embed.Etcd) error {
	timer := time.NewTimer(60 * time.Second)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("embedded etcd: %w", err)
	case <-timer.C:
		return errors.New("embedded etcd did not become ready within 60s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// privateDir creates dir with mode 0700, or checks that an existing one is a directory of
// this user and makes its mode 0700.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("embedded etcd: socket dir: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("embedded etcd: socket dir: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("embedded etcd: socket dir %s is not a directory", dir)
	}
	if uid, ok := ownerOf(st); ok && uid != os.Geteuid() {
		return fmt.Errorf("embedded etcd: socket dir %s belongs to uid %d, not this process's %d", dir, uid, os.Geteuid())
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("embedded etcd: socket dir: %w", err)
	}
	return nil
}

// Endpoint is the client endpoint, unix:///path/to/socket: only this process's user can
// connect to it. It is empty in-process.
func (e *Etcd) Endpoint() string {
	if e.socket == "" {
		return ""
	}
	return "unix://" + e.socket
}

// Socket is the path of the client socket ("" in-process).
func (e *Etcd) Socket() string { return e.socket }

// Close disconnects, stops etcd and removes a temporary socket directory.
func (e *Etcd) Close() {
	if e.Client != nil {
		_ = e.Client.Close()
	}
	e.server.Close()
	removeAll(e.tempDir)
}

func removeAll(dir string) {
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
}
