package rpcserver

import (
	"crypto/subtle"
	"net/http"
)

// InternalTokenHeader carries the shared secret that internal RPCs require when one is set.
// It keeps the service APIs (which can mint tokens or reach upstreams directly) closed to
// anyone who can merely reach the port, e.g. MCP hosts in single-process mode where every
// service shares the public port.
const InternalTokenHeader = "Gatehouse-Internal-Token"

// RequireToken answers 401 to any request without the internal token. An empty token
// disables the check.
func RequireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get(InternalTokenHeader))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"code":"unauthenticated","message":"internal RPCs need the internal token"}`))
			return
		}
		next.ServeHTTP(w, r)
	})
}

type tokenTransport struct {
	token string
	next  http.RoundTripper
}

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(InternalTokenHeader, t.token)
	return t.next.RoundTrip(r)
}

// WithToken returns a client that sends the internal token on every request.
func WithToken(c *http.Client, token string) *http.Client {
	if token == "" {
		return c
	}
	return &http.Client{Transport: tokenTransport{token: token, next: c.Transport}, Timeout: c.Timeout}
}

type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (t bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.token)
	return t.next.RoundTrip(r)
}

// WithBearer returns a client that sends token as a bearer credential on every request: an
// operator's or another team's own credential, which Guard authenticates.
func WithBearer(c *http.Client, token string) *http.Client {
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	out := *c
	out.Transport = bearerTransport{token: token, next: next}
	return &out
}
