package ingress_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
)

// selfSigned writes a certificate and its key and returns their paths.
func selfSigned(t *testing.T) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gw"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, keyPath
}

// The TLS flags are checked together at start: a combination that would silently not do
// what it says is refused.
func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	cert, key := selfSigned(t)
	notPEM := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		edit func(*ingress.Config)
		want string
	}{
		{"client CA without TLS", func(c *ingress.Config) { c.ClientCA = cert }, "need TLS"},
		{"cert without key", func(c *ingress.Config) { c.TLSCert = cert }, "go together"},
		{"unreadable key pair", func(c *ingress.Config) { c.TLSCert, c.TLSKey = cert, notPEM }, "TLS certificate"},
		{"unknown mode", func(c *ingress.Config) { c.TLSCert, c.TLSKey, c.ClientCertMode = cert, key, "maybe" }, "want none, optional or require"},
		{"require without a bundle", func(c *ingress.Config) { c.TLSCert, c.TLSKey, c.ClientCertMode = cert, key, "require" }, "needs --client-ca"},
		{"bundle but mode none", func(c *ingress.Config) { c.TLSCert, c.TLSKey, c.ClientCA = cert, key, cert }, "say optional or require"},
		{"bundle without PEM", func(c *ingress.Config) {
			c.TLSCert, c.TLSKey, c.ClientCA, c.ClientCertMode = cert, key, notPEM, "optional"
		}, "no PEM certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ingress.Config{MaxBodyBytes: 1 << 20}
			tt.edit(&cfg)
			_, err := ingress.New(cfg, ingress.Deps{Auth: &fakeAuth{}, Policy: fakePolicy{}, Bridge: newFakeBridge(), Audit: newFakeAudit(), Catalog: fakeCatalog{}, Sessions: &fakeSessions{records: map[string]sessionstore.Record{}}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want %q", err, tt.want)
			}
		})
	}
	cfg := ingress.Config{MaxBodyBytes: 1 << 20, TLSCert: cert, TLSKey: key, ClientCA: cert, ClientCertMode: ingress.ClientCertRequire}
	svc, err := ingress.New(cfg, ingress.Deps{Auth: &fakeAuth{}, Policy: fakePolicy{}, Bridge: newFakeBridge(), Audit: newFakeAudit(), Catalog: fakeCatalog{}, Sessions: &fakeSessions{records: map[string]sessionstore.Record{}}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if srv := svc.HTTPServer(svc.Handler()); srv.TLSConfig == nil || srv.TLSConfig.ClientCAs == nil || !srv.Protocols.HTTP2() {
		t.Fatalf("server TLS %+v, want client CAs and HTTP/2", srv.TLSConfig)
	}
}
