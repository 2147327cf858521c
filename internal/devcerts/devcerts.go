// Package devcerts generates the certificates of a development etcd with TLS client
// authentication: a CA, a server certificate for loopback and a client certificate, so that
// deploy/local and tests can run split mode the way production must (etcd refusing clients
// without a certificate of its CA).
package devcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names inside the directory Generate writes.
const (
	CA         = "ca.pem"
	ServerCert = "server.pem"
	ServerKey  = "server-key.pem"
	ClientCert = "client.pem"
	ClientKey  = "client-key.pem"
)

// validity is how long generated certificates are valid: long enough for a development setup.
const validity = 365 * 24 * time.Hour

// Paths are the files of one generated set.
type Paths struct {
	Dir                   string
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// PathsIn names the files of a set in dir.
func PathsIn(dir string) Paths {
	return Paths{
		Dir: dir, CA: filepath.Join(dir, CA),
		ServerCert: filepath.Join(dir, ServerCert), ServerKey: filepath.Join(dir, ServerKey),
		ClientCert: filepath.Join(dir, ClientCert), ClientKey: filepath.Join(dir, ClientKey),
	}
}

// Generate writes a new CA, a server and peer certificate (for localhost, 127.0.0.1 and ::1)
// and a client certificate into dir (created with mode 0700; keys are written with mode 0600). The
// CA's key is not kept: a new set is generated rather than a certificate added. Existing
// files are replaced.
func Generate(dir string) (Paths, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Paths{}, fmt.Errorf("certs dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return Paths{}, fmt.Errorf("certs dir: %w", err)
	}
	p := PathsIn(dir)
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Paths{}, fmt.Errorf("CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "gatehouse development etcd CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return Paths{}, fmt.Errorf("CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Paths{}, fmt.Errorf("CA certificate: %w", err)
	}
	if err := writePEM(p.CA, "CERTIFICATE", caDER, 0o644); err != nil {
		return Paths{}, err
	}
	// The server certificate is also etcd's peer certificate, which it presents as a client.
	leaves := []struct {
		cn        string
		usage     []x509.ExtKeyUsage
		cert, key string
	}{
		{"gatehouse etcd server", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, p.ServerCert, p.ServerKey},
		{"gatehouse services", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, p.ClientCert, p.ClientKey},
	}
	for _, l := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return Paths{}, fmt.Errorf("%s key: %w", l.cn, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: l.cn},
			NotBefore:    now.Add(-time.Minute),
			NotAfter:     now.Add(validity),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  l.usage,
		}
		if l.cert == p.ServerCert {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return Paths{}, fmt.Errorf("%s certificate: %w", l.cn, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return Paths{}, fmt.Errorf("%s key: %w", l.cn, err)
		}
		if err := writePEM(l.key, "PRIVATE KEY", keyDER, 0o600); err != nil {
			return Paths{}, err
		}
		if err := writePEM(l.cert, "CERTIFICATE", der, 0o644); err != nil {
			return Paths{}, err
		}
	}
	return p, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// writePEM replaces path with one PEM block, written to a temporary file of the final mode
// first so the key is never readable by others, even briefly.
func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	err = pem.Encode(f, &pem.Block{Type: kind, Bytes: der})
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
