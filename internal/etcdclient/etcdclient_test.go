package etcdclient_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/etcdclient"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

var (
	plain  *etcdtest.Etcd
	secure *etcdtest.TLSEtcd
)

func TestMain(m *testing.M) {
	var err error
	if secure, err = etcdtest.StartTLS(); err != nil {
		panic(err)
	}
	code := etcdtest.Main(m, &plain)
	secure.Close()
	os.Exit(code)
}

func TestRefusesWithoutClientAuth(t *testing.T) {
	certs := secure.Certs
	tests := []struct {
		name string
		cfg  etcdclient.Config
		want string
	}{
		{"http endpoint", etcdclient.Config{Endpoints: "http://127.0.0.1:2379"}, "plaintext"},
		{"unix endpoint", etcdclient.Config{Endpoints: plain.Endpoint()}, "plaintext"},
		{"http endpoint with certs", etcdclient.Config{Endpoints: "http://127.0.0.1:2379", CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}, "plaintext"},
		{"no certs", etcdclient.Config{Endpoints: secure.Endpoint}, "are all required"},
		{"no key", etcdclient.Config{Endpoints: secure.Endpoint, CAFile: certs.CA, CertFile: certs.ClientCert}, "are all required"},
		{"no endpoints", etcdclient.Config{Endpoints: " , "}, "no endpoints"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv, err := etcdclient.Dial(tt.cfg, nil)
			if err == nil {
				kv.Close()
				t.Fatal("Dial succeeded, want a refusal")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %q, want it to mention %q", err, tt.want)
			}
			if tt.want != "no endpoints" && !errors.Is(err, etcdclient.ErrInsecure) {
				t.Errorf("err %v, want ErrInsecure", err)
			}
		})
	}
}

func TestInsecureDevWarns(t *testing.T) {
	var logs bytes.Buffer
	kv, err := etcdclient.Dial(etcdclient.Config{Endpoints: plain.Endpoint(), InsecureDev: true}, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := kv.Put(ctx, etcdtest.Prefix(t)+"k", "v"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), "--etcd-insecure-dev") {
		t.Errorf("logs %q: want a WARN naming --etcd-insecure-dev", logs.String())
	}
}

func TestTLSClientAuth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	certs := secure.Certs

	t.Run("with a client certificate", func(t *testing.T) {
		kv, err := etcdclient.Dial(etcdclient.Config{Endpoints: secure.Endpoint, CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer kv.Close()
		if _, err := kv.Put(ctx, "/tls/k", "v"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("without a client certificate etcd refuses", func(t *testing.T) {
		caPEM, err := os.ReadFile(certs.CA)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		kv, err := clientv3.New(clientv3.Config{
			Endpoints: []string{secure.Endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop(),
			TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		})
		if err != nil {
			return // refused at dial: what we want
		}
		defer kv.Close()
		short, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := kv.Get(short, "/tls/k"); err == nil {
			t.Fatal("a client without a certificate read etcd")
		}
	})

	t.Run("without a client certificate the HTTP gateway paths refuse", func(t *testing.T) {
		caPEM, err := os.ReadFile(certs.CA)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
		for _, path := range []string{"/v3/kv/range", "/v3/kv/put"} {
			resp, err := client.Post(secure.Endpoint+path, "application/json", strings.NewReader(`{"key":"L3Rscy9r","value":"eA=="}`))
			if err == nil {
				resp.Body.Close()
				t.Errorf("POST %s without a client certificate: %d, want the TLS handshake refused", path, resp.StatusCode)
			}
		}
	})

	t.Run("key readable by others", func(t *testing.T) {
		key, err := os.ReadFile(certs.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		loose := t.TempDir() + "/key.pem"
		if err := os.WriteFile(loose, key, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = etcdclient.Dial(etcdclient.Config{Endpoints: secure.Endpoint, CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: loose}, nil)
		if err == nil || !strings.Contains(err.Error(), "must not be readable") {
			t.Fatalf("err %v, want the key's mode refused", err)
		}
	})
}

func TestRegisterFlags(t *testing.T) {
	t.Run("own endpoints flag", func(t *testing.T) {
		c := etcdclient.Config{Endpoints: etcdclient.DefaultEndpoints}
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		c.RegisterFlags(fs)
		if def := fs.Lookup("etcd-endpoints").DefValue; def != etcdclient.DefaultEndpoints {
			t.Errorf("default %q, want %q", def, etcdclient.DefaultEndpoints)
		}
		if err := fs.Parse([]string{"-etcd-endpoints", "a:1, b:2", "-etcd-insecure-dev"}); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(c.EndpointList(), ","); got != "a:1,b:2" || !c.InsecureDev {
			t.Errorf("endpoints %q insecure %v", got, c.InsecureDev)
		}
	})
}
