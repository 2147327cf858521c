package devcerts_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/devcerts"
)

func TestGenerate(t *testing.T) {
	p, err := devcerts.Generate(t.TempDir() + "/certs")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p.Dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v (%v), want 0700", st.Mode(), err)
	}
	for _, key := range []string{p.ServerKey, p.ClientKey} {
		st, err := os.Stat(key)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v (%v), want 0600", key, st.Mode(), err)
		}
	}
	caPEM, err := os.ReadFile(p.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate")
	}
	tests := []struct {
		name      string
		cert, key string
		usage     x509.ExtKeyUsage
		host      string
	}{
		{"server for 127.0.0.1", p.ServerCert, p.ServerKey, x509.ExtKeyUsageServerAuth, "127.0.0.1"},
		{"server for localhost", p.ServerCert, p.ServerKey, x509.ExtKeyUsageServerAuth, "localhost"},
		{"server as peer client", p.ServerCert, p.ServerKey, x509.ExtKeyUsageClientAuth, ""},
		{"client", p.ClientCert, p.ClientKey, x509.ExtKeyUsageClientAuth, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pair, err := tls.LoadX509KeyPair(tt.cert, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: tt.host, KeyUsages: []x509.ExtKeyUsage{tt.usage}}); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The client certificate must not pass as a server's.
	pair, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("the client certificate verifies as a server certificate")
	}
}
