package ingress

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TLS at the edge: the listener may serve HTTPS (--tls-cert, --tls-key) and ask hosts for a
// client certificate from a trust bundle (--client-ca, --client-cert none|optional|require).
// The TLS stack verifies the chain (expiry included) before a request exists, so a
// certificate of another CA, an expired one, or none where one is required ends the
// handshake; a verified leaf is handed to authsvc, which says who it is (mtls.go there).

// Client certificate modes.
const (
	ClientCertNone     = "none"
	ClientCertOptional = "optional"
	ClientCertRequire  = "require"
)

// maxSANs bounds the URI SANs of a leaf that are looked at.
const maxSANs = 16

// tlsConfig builds the listener's TLS configuration from cfg; nil when TLS is off.
func tlsConfig(cfg Config) (*tls.Config, error) {
	mode := cfg.ClientCertMode
	if mode == "" {
		mode = ClientCertNone
	}
	if cfg.TLSCert == "" && cfg.TLSKey == "" {
		if cfg.ClientCA != "" || mode != ClientCertNone {
			return nil, errors.New("ingress: client certificates need TLS: set --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if cfg.TLSCert == "" || cfg.TLSKey == "" {
		return nil, errors.New("ingress: --tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("ingress: TLS certificate: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	switch mode {
	case ClientCertNone:
		if cfg.ClientCA != "" {
			return nil, errors.New("ingress: --client-ca is set but --client-cert is none: say optional or require")
		}
		return tc, nil
	case ClientCertOptional:
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientCertRequire:
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	default:
		return nil, fmt.Errorf("ingress: --client-cert %q: want none, optional or require", mode)
	}
	if cfg.ClientCA == "" {
		return nil, fmt.Errorf("ingress: --client-cert %s needs --client-ca (the trust bundle)", mode)
	}
	pem, err := os.ReadFile(cfg.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("ingress: client CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ingress: client CA bundle %s holds no PEM certificate", cfg.ClientCA)
	}
	tc.ClientCAs = pool
	return tc, nil
}

// HTTPServer is NewHTTPServer for this service's handler h, serving TLS (HTTP/1.1 and
// HTTP/2) when it is configured.
func (s *Service) HTTPServer(h http.Handler) *http.Server {
	srv := NewHTTPServer(h, s.cfg)
	if s.tls != nil {
		srv.TLSConfig = s.tls.Clone()
		srv.Protocols.SetHTTP2(true)
	}
	return srv
}

// clientCertificate is the verified leaf of a TLS request for authsvc; nil without one.
// Only a chain the TLS stack verified against the bundle counts: an unverified peer
// certificate (none is accepted unverified here) is ignored.
func clientCertificate(r *http.Request) *authv1.ClientCertificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	leaf := r.TLS.VerifiedChains[0][0]
	c := &authv1.ClientCertificate{
		CommonName: leaf.Subject.CommonName,
		Subject:    leaf.Subject.String(),
		NotAfter:   timestamppb.New(leaf.NotAfter),
	}
	for i, u := range leaf.URIs {
		if i == maxSANs {
			break
		}
		if strings.EqualFold(u.Scheme, "spiffe") {
			c.SpiffeIds = append(c.SpiffeIds, u.String())
		}
	}
	return c
}
