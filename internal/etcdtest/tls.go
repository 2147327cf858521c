package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/devcerts"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// TLSEtcd is an embedded etcd on loopback that requires TLS client certificates, as split
// mode's etcd must: what deploy/local runs, for tests of the services' etcd dial.
type TLSEtcd struct {
	// Endpoint is https://127.0.0.1:port.
	Endpoint string
	// Certs are the CA, server and client certificate files it was started with.
	Certs  devcerts.Paths
	server *embed.Etcd
	dir    string
}

// StartTLS starts a single-member etcd with --client-cert-auth on a free loopback port, with
// a new set of certificates in its temporary directory.
func StartTLS() (*TLSEtcd, error) {
	dir, err := os.MkdirTemp("", "etcdtest-tls-")
	if err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	e, err := startTLS(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return e, nil
}

func startTLS(dir string) (*TLSEtcd, error) {
	certs, err := devcerts.Generate(filepath.Join(dir, "certs"))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pick a port for etcd: %w", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	clientURL := url.URL{Scheme: "https", Host: addr}
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest-tls"
	cfg.Dir = filepath.Join(dir, "data")
	cfg.UnsafeNoFsync = true
	cfg.EnableGRPCGateway = false
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = nil
	cfg.AdvertisePeerUrls = []url.URL{{Scheme: "unix", Path: filepath.Join(dir, "peer-unused")}}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ClientTLSInfo.CertFile = certs.ServerCert
	cfg.ClientTLSInfo.KeyFile = certs.ServerKey
	cfg.ClientTLSInfo.TrustedCAFile = certs.CA
	cfg.ClientTLSInfo.ClientCertAuth = true
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start TLS etcd: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("TLS etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, errors.New("TLS etcd did not become ready within 60s")
	}
	return &TLSEtcd{Endpoint: clientURL.String(), Certs: certs, server: e, dir: dir}, nil
}

// Close stops etcd and removes its data and certificates.
func (e *TLSEtcd) Close() {
	e.server.Close()
	_ = os.RemoveAll(e.dir)
}
