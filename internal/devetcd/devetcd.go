// Package devetcd runs an embedded single-member etcd on free loopback ports: the etcd of
// single-process mode, and of tests.
package devetcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a running embedded etcd and a client connected to it.
type Etcd struct {
	server *embed.Etcd
	Client *clientv3.Client
}

// Config says where etcd keeps its data and how.
type Config struct {
	Dir  string
	Name string // the member name; "gatehouse" when empty
	// NoFsync trades durability for speed: for tests only.
	NoFsync bool
}

// Start starts etcd on free loopback ports and waits until it serves.
func Start(ctx context.Context, c Config) (*Etcd, error) {
	clientURL, err := freeURL()
	if err != nil {
		return nil, err
	}
	peerURL, err := freeURL()
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	if cfg.Name == "" {
		cfg.Name = "gatehouse"
	}
	cfg.Dir = c.Dir
	cfg.UnsafeNoFsync = c.NoFsync
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	timer := time.NewTimer(60 * time.Second)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-timer.C:
		e.Close()
		return nil, errors.New("embedded etcd did not become ready within 60s")
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{clientURL.Host},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("connect to embedded etcd: %w", err)
	}
	return &Etcd{server: e, Client: client}, nil
}

// Endpoint is the client address, host:port.
func (e *Etcd) Endpoint() string { return e.Client.Endpoints()[0] }

// Close disconnects and stops etcd.
func (e *Etcd) Close() {
	_ = e.Client.Close()
	e.server.Close()
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
