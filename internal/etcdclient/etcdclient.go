// Package etcdclient connects the split-mode binaries to etcd the same way: over TLS with a
// client certificate, or, only when an explicit development flag says so, in plaintext.
//
// etcd is inside the gateway's trust boundary (registry entries become commands the bridge
// runs, token digests become principals), so an etcd that any local process can write is a
// way to root. A service therefore refuses to start against an etcd it cannot authenticate
// to with a certificate unless --etcd-insecure-dev is given, and then says so at WARN on every
// start.
package etcdclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Flag names, shared by every service that talks to etcd.
const (
	FlagEndpoints   = "etcd-endpoints"
	FlagCAFile      = "etcd-ca-file"
	FlagCertFile    = "etcd-cert-file"
	FlagKeyFile     = "etcd-key-file"
	FlagInsecureDev = "etcd-insecure-dev"
)

// maxPEMBytes bounds a certificate or key file.
const maxPEMBytes = 1 << 20

// Config says how to reach etcd.
type Config struct {
	// Endpoints is a comma-separated list: https://host:port, unixs:///path or host:port
	// (TLS when the files are set); http:// and unix:// are plaintext.
	Endpoints string
	// CAFile verifies etcd's server certificate; CertFile and KeyFile are this client's
	// certificate, which etcd started with --client-cert-auth checks.
	CAFile, CertFile, KeyFile string
	// InsecureDev allows plaintext endpoints and no client certificate: development only.
	InsecureDev bool
}

// DefaultEndpoints is the usual local etcd.
const DefaultEndpoints = "127.0.0.1:2379"

// RegisterFlags registers the etcd flags on fs, with c's current values as defaults (so a
// service where etcd is optional leaves Endpoints empty).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Endpoints, FlagEndpoints, c.Endpoints, "comma-separated etcd endpoints (https://host:port, or host:port with the TLS files)")
	fs.StringVar(&c.CAFile, FlagCAFile, c.CAFile, "PEM file of the CA that signed etcd's server certificate")
	fs.StringVar(&c.CertFile, FlagCertFile, c.CertFile, "PEM file of this service's etcd client certificate")
	fs.StringVar(&c.KeyFile, FlagKeyFile, c.KeyFile, "PEM file of the client certificate's key (not readable by group or others)")
	fs.BoolVar(&c.InsecureDev, FlagInsecureDev, c.InsecureDev, "DEVELOPMENT ONLY: allow etcd without TLS client authentication (anyone who can reach etcd can then run commands through the bridge)")
}

// EndpointList returns the configured endpoints, trimmed, without empty entries.
func (c *Config) EndpointList() []string {
	var list []string
	for _, e := range strings.Split(c.Endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			list = append(list, e)
		}
	}
	return list
}

// ErrInsecure is wrapped by Dial's error when etcd would be reached without TLS client
// authentication and InsecureDev is not set.
var ErrInsecure = errors.New("etcd without TLS client authentication refused")

// Dial connects to etcd, with etcd's own logging silenced (the services log through slog).
// Without InsecureDev it requires the three TLS files and refuses plaintext endpoints; with
// it, it logs a warning.
func Dial(c Config, logger *slog.Logger) (*clientv3.Client, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	list := c.EndpointList()
	if len(list) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	anyTLS := c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
	var plaintext []string
	for _, e := range list {
		if strings.HasPrefix(e, "http://") || strings.HasPrefix(e, "unix:") {
			plaintext = append(plaintext, e)
		}
	}
	if !c.InsecureDev {
		switch {
		case len(plaintext) > 0:
			return nil, fmt.Errorf("etcd endpoint %s is plaintext: %w; use https:// with --%s, --%s and --%s, or --%s for development", plaintext[0], ErrInsecure, FlagCAFile, FlagCertFile, FlagKeyFile, FlagInsecureDev)
		case c.CAFile == "" || c.CertFile == "" || c.KeyFile == "":
			return nil, fmt.Errorf("etcd: --%s, --%s and --%s are all required: %w (--%s allows it for development)", FlagCAFile, FlagCertFile, FlagKeyFile, ErrInsecure, FlagInsecureDev)
		}
	} else {
		logger.Warn("DEVELOPMENT MODE: etcd is used without TLS client authentication (--etcd-insecure-dev); any process that can reach it can change the registry and tokens",
			"endpoints", strings.Join(list, ","), "tls", anyTLS)
	}
	cfg := clientv3.Config{Endpoints: list, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if anyTLS {
		tc, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
	}
	kv, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	return kv, nil
}

// tlsConfig loads the CA and the client certificate.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.CAFile == "" || c.CertFile == "" || c.KeyFile == "" {
		return nil, fmt.Errorf("etcd TLS: --%s, --%s and --%s go together", FlagCAFile, FlagCertFile, FlagKeyFile)
	}
	caPEM, err := readPEM(c.CAFile, false)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("etcd CA %s: no PEM certificate in it", c.CAFile)
	}
	certPEM, err := readPEM(c.CertFile, false)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readPEM(c.KeyFile, true)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate %s: %w", c.CertFile, err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}}, nil
}

// readPEM reads a bounded PEM file; a private key must not be readable by group or others.
func readPEM(path string, private bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("etcd TLS: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("etcd TLS: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("etcd TLS: %s is not a regular file", path)
	}
	if private && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("etcd TLS: key %s has mode %v: it must not be readable by group or others (chmod 600)", path, st.Mode().Perm())
	}
	if st.Size() > maxPEMBytes {
		return nil, fmt.Errorf("etcd TLS: %s is %d bytes, more than %d", path, st.Size(), maxPEMBytes)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("etcd TLS: read %s: %w", path, err)
	}
	return data, nil
}
