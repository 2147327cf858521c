// Package floor provides the servers that set the floors a gateway is
// compared with: a raw HTTP echo (floor 0, the cost of a loopback HTTP round
// trip), a bare net/http/httputil reverse proxy (floor 2, the least any
// gateway hop can add) and that proxy with one durable append per call made
// before forwarding it (floor 3, the least a gateway that records every call
// write-ahead can add). The benchmark runs each as its own process, like the
// gateway, so their CPU time can be read and they do not share a scheduler
// with the load generator.
package floor

import (
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// MaxBody bounds what the raw echo server accepts.
const MaxBody = 32 << 20

// Echo is the floor-0 handler: it answers a POST with its body (at most
// maxBody bytes), as JSON, and a GET with 200 (the readiness probe).
func Echo(maxBody int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			w.WriteHeader(http.StatusOK)
		case http.MethodPost:
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
			if err != nil {
				http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	})
}

// Proxy is the floor-2 handler: a reverse proxy to target with no logic of
// its own. It flushes every write at once so SSE streams pass through, and
// keeps enough idle upstream connections that concurrent sessions do not
// churn them.
//
// It enables full duplex on each HTTP/1.1 request. Without it, flushing the
// upstream's SSE headers to the client can close the client's request body
// while the proxy's transport is still finishing its upload to the upstream
// (it reads on to EOF); the transport then fails the write and drops the
// upstream connection mid-response, and the client sees its call end without
// an answer. With 16 KiB bodies that happened to about 2 % of calls.
func Proxy(target *url.URL, errorLog *log.Logger) http.Handler {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = 1024
	transport.MaxIdleConnsPerHost = 1024
	transport.DisableCompression = true
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
		},
		FlushInterval: -1,
		Transport:     transport,
		ErrorLog:      errorLog,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Not supported on HTTP/2, where it is not needed.
		_ = http.NewResponseController(w).EnableFullDuplex()
		proxy.ServeHTTP(w, r)
	})
}

// OTLPSink is where a traced gateway exports its spans in the benchmark: it takes OTLP/HTTP
// export requests (POST /v1/traces, protobuf, gzip or not, at most maxBody bytes each),
// counts them and their spans, and answers each with an empty ExportTraceServiceResponse,
// as a collector that accepted every span does. GET /stats answers "requests bytes spans";
// any other GET 200 (the readiness probe).
func OTLPSink(maxBody int64) http.Handler {
	var requests, size, spans atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/traces":
			body, err := readExport(w, r, maxBody)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			var req collectortrace.ExportTraceServiceRequest
			if err := proto.Unmarshal(body, &req); err != nil {
				http.Error(w, "not an ExportTraceServiceRequest", http.StatusBadRequest)
				return
			}
			n := 0
			for _, rs := range req.GetResourceSpans() {
				for _, ss := range rs.GetScopeSpans() {
					n += len(ss.GetSpans())
				}
			}
			requests.Add(1)
			size.Add(int64(len(body)))
			spans.Add(int64(n))
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.WriteHeader(http.StatusOK) // an empty message is the whole response
		case r.Method == http.MethodGet && r.URL.Path == "/stats":
			fmt.Fprintf(w, "%d %d %d\n", requests.Load(), size.Load(), spans.Load())
		case r.Method == http.MethodGet:
			w.WriteHeader(http.StatusOK)
		default:
			http.Error(w, "not an OTLP/HTTP trace export", http.StatusNotFound)
		}
	})
}

// readExport reads an export request's body, gunzipped when it says so, at most maxBody
// bytes either way.
func readExport(w http.ResponseWriter, r *http.Request, maxBody int64) ([]byte, error) {
	var body io.Reader = http.MaxBytesReader(w, r.Body, maxBody)
	if r.Header.Get("Content-Encoding") == "gzip" {
		z, err := gzip.NewReader(body)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		defer z.Close()
		body = z
	}
	b, err := io.ReadAll(io.LimitReader(body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if int64(len(b)) > maxBody {
		return nil, fmt.Errorf("body over %d bytes", maxBody)
	}
	return b, nil
}

// Serve runs one floor server until ctx ends: args are
// "-role echo|proxy|durable-proxy|otlp-sink -listen 127.0.0.1:PORT [-target URL]
// [-journal FILE]".
func Serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	role := fs.String("role", "", "echo, proxy, durable-proxy or otlp-sink")
	listen := fs.String("listen", "", "loopback host:port to serve on")
	targetFlag := fs.String("target", "", "URL the proxy forwards to (scheme and host; the request path is kept)")
	journalPath := fs.String("journal", "", "durable-proxy: the file each call is appended to and fdatasynced in before it is forwarded")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := checkLoopback(*listen); err != nil {
		return err
	}
	errorLog := log.New(stderr, "floor: ", log.LstdFlags)
	var handler http.Handler
	switch *role {
	case "echo":
		handler = Echo(MaxBody)
	case "otlp-sink":
		handler = OTLPSink(MaxBody)
	case "proxy", "durable-proxy":
		target, err := url.Parse(*targetFlag)
		if err != nil || target.Scheme != "http" || target.Host == "" {
			return fmt.Errorf("-target %q: want an http:// URL", *targetFlag)
		}
		if *role == "proxy" {
			handler = Proxy(target, errorLog)
			break
		}
		if *journalPath == "" {
			return errors.New("-journal: durable-proxy needs a file to append to")
		}
		j, err := OpenJournal(*journalPath)
		if err != nil {
			return err
		}
		defer j.Close()
		handler = DurableProxy(target, j, errorLog)
	default:
		return fmt.Errorf("-role %q: want echo, proxy, durable-proxy or otlp-sink", *role)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errorLog}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// SSE streams through the proxy never end on their own; give requests a
	// moment, then cut them.
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen %q: want a loopback IP address", addr)
	}
	return nil
}
