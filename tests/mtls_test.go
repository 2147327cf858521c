package tests

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Hosts identified by client certificates (mTLS): the gateway serves HTTPS and requires a
// certificate from its trust bundle; a SPIFFE ID maps to its principal by trust domain, a
// plain certificate by its subject's common name. A certificate from another CA, an expired
// one and none at all end the TLS handshake; a trusted one nobody mapped is a 401.

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf certificate; edit adjusts its template (names, validity, usage).
func (ca *testCA) issue(t *testing.T, edit func(*x509.Certificate)) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func spiffeID(t *testing.T, id string) func(*x509.Certificate) {
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *x509.Certificate) { c.URIs = []*url.URL{u} }
}

func writePEM(t *testing.T, dir, name string, blocks ...*pem.Block) string {
	t.Helper()
	var b []byte
	for _, bl := range blocks {
		b = append(b, pem.EncodeToMemory(bl)...)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, strangerCA := newTestCA(t, "server CA"), newTestCA(t, "client CA"), newTestCA(t, "stranger CA")
	server := serverCA.issue(t, func(c *x509.Certificate) {
		c.Subject.CommonName = "gatehouse"
		c.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	keyDER, err := x509.MarshalPKCS8PrivateKey(server.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile := writePEM(t, dir, "server.pem", &pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate[0]})
	keyFile := writePEM(t, dir, "server-key.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	caFile := filepath.Join(dir, "clients.pem")
	if err := os.WriteFile(caFile, clientCA.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	identity := filepath.Join(dir, "identity.yaml")
	if err := os.WriteFile(identity, []byte(`mtls:
  spiffe:
    - trust_domain: test.example
      tenant: default
      groups: [agents]
  subjects:
    - common_name: build-bot
      principal: build-bot
      tenant: default
`), 0o600); err != nil {
		t.Fatal(err)
	}
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	echoAddr := gatehousetest.StartServer(t, func(addr string) []string { return []string{echo, "-http", addr} })
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + httpEntry("echo", "http://"+echoAddr+"/mcp"),
		Args:   []string{"--tls-cert", certFile, "--tls-key", keyFile, "--client-ca", caFile, "--client-cert", "require", "--identity-config", identity},
	})
	if !strings.HasPrefix(g.Base, "https://") {
		t.Fatalf("gateway base %s, want https", g.Base)
	}
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	clientWith := func(certs ...tls.Certificate) *http.Client {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, Certificates: certs}
		tr.ResponseHeaderTimeout = gatehousetest.ClientTimeout
		return &http.Client{Transport: tr}
	}

	for _, tt := range []struct {
		name      string
		cert      tls.Certificate
		principal string
	}{
		{"spiffe id", clientCA.issue(t, spiffeID(t, "spiffe://test.example/agents/alpha")), "agents.alpha"},
		{"subject", clientCA.issue(t, func(c *x509.Certificate) { c.Subject.CommonName = "build-bot" }), "build-bot"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			client := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, nil)
			cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.Endpoint("echo"), HTTPClient: clientWith(tt.cert)}, nil)
			if err != nil {
				t.Fatalf("connect: %v\n%s", err, g.Logs())
			}
			defer cs.Close()
			text := "hello " + tt.principal
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}})
			if err != nil {
				t.Fatalf("tools/call: %v", err)
			}
			if tc, ok := res.Content[0].(*mcp.TextContent); res.IsError || !ok || tc.Text != text {
				t.Fatalf("tools/call result %#v", res.Content)
			}
			rec := waitAudit(t, g.DataDir, "the call of "+tt.principal, func(r auditRecord) bool {
				return r.Method == "tools/call" && r.Principal == tt.principal
			})
			if rec.Tenant != "default" {
				t.Fatalf("audit record %+v, want tenant default", rec)
			}
		})
	}

	initialize := func(client *http.Client) (*http.Response, error) {
		req, err := http.NewRequest(http.MethodPost, g.Endpoint("echo"), strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	for _, tt := range []struct {
		name   string
		client *http.Client
	}{
		{"another CA", clientWith(strangerCA.issue(t, spiffeID(t, "spiffe://test.example/agents/alpha")))},
		{"expired", clientWith(clientCA.issue(t, func(c *x509.Certificate) {
			spiffeID(t, "spiffe://test.example/agents/alpha")(c)
			c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
		}))},
		{"none", clientWith()},
	} {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			resp, err := initialize(tt.client)
			// The server ends the handshake: the client sees the TLS alert, or the reset that
			// follows it, depending on timing; either way no request was served.
			if err == nil {
				t.Fatalf("the handshake succeeded: %s", resp.Status)
			}
		})
	}
	t.Run("refused/trusted but not mapped", func(t *testing.T) {
		resp, err := initialize(clientWith(clientCA.issue(t, spiffeID(t, "spiffe://other.example/agents/alpha"))))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "trust domain is not accepted") {
			t.Fatalf("%s %q, want 401 naming the trust domain", resp.Status, resp.Header.Get("WWW-Authenticate"))
		}
	})
}
