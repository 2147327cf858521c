// Package rpcserver serves Connect handlers with health and reflection over h2c, and builds
// the HTTP clients services use to call each other.
package rpcserver

import (
	"context"
	"errors"
	"fmt"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
)

// Handler is one mounted Connect service: the path prefix its generated constructor returned,
// the handler, and its fully-qualified service name (for health and reflection).
type Handler struct {
	Service string
	Path    string
	Handler http.Handler
}

// Mux holds the mounted handlers of one listener plus health and reflection for them.
type Mux struct {
	*http.ServeMux
	Health   *grpchealth.StaticChecker
	services []string
}

// ServeHTTP serves the mounted handlers, each request with the caller's trace context (its
// traceparent header) as the parent of the handler's span.
func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Traceparent") != "" {
		r = r.WithContext(telemetry.Extract(r.Context(), r.Header))
	}
	m.ServeMux.ServeHTTP(w, r)
}

// NotServing marks every mounted service (and the server as a whole) NOT_SERVING, the first
// step of a graceful stop: load balancers and discovery stop sending new work.
func (m *Mux) NotServing() {
	m.Health.SetStatus("", grpchealth.StatusNotServing)
	for _, s := range m.services {
		m.Health.SetStatus(s, grpchealth.StatusNotServing)
	}
}

// NewMux mounts the handlers, a gRPC health service that reports each of them SERVING, and
// gRPC reflection (v1 and v1alpha) for them.
func NewMux(handlers ...Handler) *Mux {
	mux := http.NewServeMux()
	names := make([]string, 0, len(handlers))
	for _, h := range handlers {
		mux.Handle(h.Path, h.Handler)
		names = append(names, h.Service)
	}
	health := grpchealth.NewStaticChecker(names...)
	mux.Handle(grpchealth.NewHandler(health))
	reflector := grpcreflect.NewStaticReflector(names...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	return &Mux{ServeMux: mux, Health: health, services: names}
}

// Protocols returns HTTP/1.1 plus unencrypted HTTP/2 with prior knowledge (h2c), so plain
// grpc-go clients, Connect clients and MCP hosts share one port.
func Protocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

// NewServer returns an http.Server with conservative limits for h.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		Protocols:         Protocols(),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       2 * time.Minute,
	}
}

// Shutdown is the order in which ServeUntil stops.
type Shutdown struct {
	// Mux, when set, has every service marked NOT_SERVING first, so health checks and load
	// balancers stop sending new work.
	Mux *Mux
	// Stopping runs next, before the drain: it ends long-lived streams (which would hold
	// the drain to its deadline) and marks the service not ready.
	Stopping func()
	// Drain is how long in-flight requests then get; what is left is closed.
	Drain time.Duration
}

// ServeUntil serves srv on ln until ctx ends, then stops in the order of s: NOT_SERVING,
// Stopping, no new connections and a drain of in-flight requests with a hard deadline, after
// which every connection left is closed.
func ServeUntil(ctx context.Context, ln net.Listener, srv *http.Server, s Shutdown, logger *slog.Logger) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil && len(srv.TLSConfig.Certificates) > 0 {
			errc <- srv.ServeTLS(ln, "", "") // the certificates are in TLSConfig
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	if s.Mux != nil {
		s.Mux.NotServing()
	}
	if s.Stopping != nil {
		s.Stopping()
	}
	logger.Info("draining", "addr", ln.Addr().String(), "deadline", s.Drain)
	sctx, cancel := context.WithTimeout(context.Background(), s.Drain)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		logger.Warn("drain deadline passed: closing the connections left", "addr", ln.Addr().String())
		err = srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// NewClient returns an HTTP client for service-to-service Connect calls over h2c; each call
// carries the trace context of its context (traceparent), which Mux reads on the other side.
func NewClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Protocols = new(http.Protocols)
	t.Protocols.SetUnencryptedHTTP2(true)
	t.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: telemetry.Transport(t)}
}

// BaseURL turns a host:port into the URL Connect clients take.
func BaseURL(addr string) string { return "http://" + addr }
