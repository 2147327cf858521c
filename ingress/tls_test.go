package ingress_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
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

// certAuth is the fake authsvc, knowing one client certificate's principal too.
type certAuth struct{ *fakeAuth }

func (c certAuth) Authenticate(ctx context.Context, req *connect.Request[authv1.AuthenticateRequest]) (*connect.Response[authv1.AuthenticateResponse], error) {
	if req.Msg.GetCredential() == "" && req.Msg.GetClientCertificate().GetCommonName() == "ops" {
		c.calls.Add(1)
		return connect.NewResponse(&authv1.AuthenticateResponse{Principal: &authv1.Principal{Id: "ops", Tenant: "t1", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE}}), nil
	}
	return c.fakeAuth.Authenticate(ctx, req)
}

// A certificate's principal is cached under a key no bearer token can have: a host that
// sends the certificate's fingerprint (public, in logs) as a token, in the form the cache
// once used, is asked about like any unknown token and refused.
func TestCertificateCacheKeyIsItsOwn(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "ops"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	auth := certAuth{newFakeAuth()}
	cfg := ingress.Config{AllowedHosts: "localhost", AuthCacheTTL: time.Minute, MaxBodyBytes: 64 << 10, MaxSessionsPerPrincipal: 8}
	svc, err := ingress.New(cfg, ingress.Deps{Auth: auth, Policy: fakePolicy{}, Bridge: newFakeBridge(), Audit: newFakeAudit(), Catalog: fakeCatalog{}, Sessions: &fakeSessions{records: map[string]sessionstore.Record{}}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetReady(true)
	h := svc.Handler()
	initialize := func(withCert bool, token string) int {
		r := httptest.NewRequest(http.MethodPost, "http://localhost/servers/echo/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		r.TLS = nil
		if withCert {
			r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}, PeerCertificates: []*x509.Certificate{leaf}}
		}
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if code := initialize(true, ""); code != http.StatusOK {
		t.Fatalf("the certificate's holder: %d", code)
	}
	sum := sha256.Sum256(leaf.Raw)
	for _, forged := range []string{"mtls:" + hex.EncodeToString(sum[:]), hex.EncodeToString(sum[:])} {
		if code := initialize(false, forged); code != http.StatusUnauthorized {
			t.Fatalf("a token %q without the certificate: %d, want 401", forged, code)
		}
	}
}
