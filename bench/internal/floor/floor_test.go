package floor_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/floor"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestEcho(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(floor.Echo(1024))
	t.Cleanup(srv.Close)
	tests := []struct {
		name       string
		method     string
		body       string
		wantStatus int
		wantBody   string
	}{
		{name: "post echoes", method: http.MethodPost, body: `{"jsonrpc":"2.0","id":1}`, wantStatus: 200, wantBody: `{"jsonrpc":"2.0","id":1}`},
		{name: "empty post", method: http.MethodPost, body: "", wantStatus: 200, wantBody: ""},
		{name: "get is the probe", method: http.MethodGet, wantStatus: 200},
		{name: "too large", method: http.MethodPost, body: strings.Repeat("x", 1025), wantStatus: http.StatusRequestEntityTooLarge},
		{name: "other method", method: http.MethodPut, body: "x", wantStatus: http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+"/mcp", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.wantStatus == 200 && string(body) != tc.wantBody {
				t.Fatalf("body = %q, want %q", body, tc.wantBody)
			}
		})
	}
}

// TestProxyStreams checks that an SSE event reaches the client while the
// upstream response is still open: a buffering proxy would break Streamable
// HTTP.
func TestProxyStreams(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/mcp" || r.Header.Get("Authorization") != "Bearer t" {
			http.Error(w, "wrong path or header", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: second\n\n")
	}))
	t.Cleanup(upstream.Close)
	target, err := url.Parse(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(floor.Proxy(target, log.New(io.Discard, "", 0)))
	t.Cleanup(proxy.Close)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, proxy.URL+"/mcp", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer t")
	resp, err := proxy.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	r := bufio.NewReader(resp.Body)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("first event did not arrive before the stream ended: %v", err)
	}
	if line != "data: first\n" {
		t.Fatalf("first line = %q", line)
	}
	close(release)
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(rest, []byte("data: second")) {
		t.Fatalf("rest = %q", rest)
	}
}

// TestProxyFullDuplex sends a request body whose end the client holds back
// until it has the response headers, to an upstream that answers before
// reading to EOF (as an MCP server answering over SSE may). A proxy that is
// not full duplex closes the client's body when it flushes the headers, and
// the upstream exchange is cut off.
func TestProxyFullDuplex(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		head := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, head); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: %s\n\n", head)
		w.(http.Flusher).Flush()
		rest, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		fmt.Fprintf(w, "data: %s done\n\n", rest)
	}))
	t.Cleanup(upstream.Close)
	target, err := url.Parse(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(floor.Proxy(target, log.New(io.Discard, "", 0)))
	t.Cleanup(proxy.Close)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	body, bodyWriter := io.Pipe()
	// A proxy that is not full duplex can deadlock here; the deadline ends it.
	stop := context.AfterFunc(ctx, func() { bodyWriter.CloseWithError(ctx.Err()) })
	defer stop()
	// The rest of the body goes out once the response has begun.
	trace := &httptrace.ClientTrace{GotFirstResponseByte: func() {
		go func() {
			bodyWriter.Write([]byte("second"))
			bodyWriter.Close()
		}()
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, proxy.URL+"/mcp", body)
	if err != nil {
		t.Fatal(err)
	}
	go bodyWriter.Write([]byte("first"))
	resp, err := proxy.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("response cut off after %q: %v", got, err)
	}
	if want := "data: first\n\ndata: second done\n\n"; string(got) != want {
		t.Fatalf("response = %q, want %q", got, want)
	}
}

func TestServeRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantSub string
	}{
		{name: "no role", args: []string{"-listen", "127.0.0.1:0"}, wantSub: "-role"},
		{name: "unknown role", args: []string{"-role", "cache", "-listen", "127.0.0.1:0"}, wantSub: "-role"},
		{name: "all interfaces", args: []string{"-role", "echo", "-listen", ":0"}, wantSub: "loopback"},
		{name: "public address", args: []string{"-role", "echo", "-listen", "192.0.2.1:0"}, wantSub: "loopback"},
		{name: "hostname", args: []string{"-role", "echo", "-listen", "localhost:0"}, wantSub: "loopback"},
		{name: "proxy without target", args: []string{"-role", "proxy", "-listen", "127.0.0.1:0"}, wantSub: "-target"},
		{name: "proxy with https target", args: []string{"-role", "proxy", "-listen", "127.0.0.1:0", "-target", "https://127.0.0.1:1"}, wantSub: "-target"},
		{name: "durable proxy without journal", args: []string{"-role", "durable-proxy", "-listen", "127.0.0.1:0", "-target", "http://127.0.0.1:1"}, wantSub: "-journal"},
		{name: "durable proxy without target", args: []string{"-role", "durable-proxy", "-listen", "127.0.0.1:0", "-journal", "/nonexistent/j"}, wantSub: "-target"},
		{name: "journal in a missing directory", args: []string{"-role", "durable-proxy", "-listen", "127.0.0.1:0", "-target", "http://127.0.0.1:1", "-journal", "/nonexistent/dir/j"}, wantSub: "open journal"},
		{name: "stray argument", args: []string{"-role", "echo", "-listen", "127.0.0.1:0", "extra"}, wantSub: "unexpected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := floor.Serve(t.Context(), tc.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.wantSub) {
				t.Fatalf("Serve(%q) = %v, want an error containing %q", tc.args, err, tc.wantSub)
			}
		})
	}
}

func TestServeStops(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := floor.Serve(ctx, []string{"-role", "echo", "-listen", "127.0.0.1:0"}, io.Discard); err != nil {
		t.Fatalf("Serve after cancel = %v, want nil", err)
	}
}

// TestOTLPSink: the OpenTelemetry SDK's own OTLP/HTTP exporter (what a traced gateway uses)
// exports to the sink without an error, and the sink counts what it took.
func TestOTLPSink(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(floor.OTLPSink(1 << 20))
	t.Cleanup(srv.Close)
	exp, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpointURL(srv.URL+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	for i := range 3 {
		_, span := tp.Tracer("bench").Start(t.Context(), fmt.Sprintf("span %d", i))
		span.End() // the syncer exports it now, and fails the export on an error answer
	}
	if err := tp.Shutdown(t.Context()); err != nil {
		t.Fatalf("export: %v", err)
	}
	resp, err := srv.Client().Get(srv.URL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var requests, size, spans int64
	if _, err := fmt.Fscan(resp.Body, &requests, &size, &spans); err != nil {
		t.Fatal(err)
	}
	if requests != 3 || size == 0 || spans != 3 {
		t.Fatalf("sink took %d requests, %d bytes, %d spans; want 3, some bytes and 3", requests, size, spans)
	}
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{http.MethodPost, "/v1/metrics", "x", http.StatusNotFound},
		{http.MethodPut, "/v1/traces", "x", http.StatusNotFound},
		{http.MethodPost, "/v1/traces", "\xff\xff not protobuf", http.StatusBadRequest},
		{http.MethodPost, "/v1/traces", strings.Repeat("x", 2<<20), http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
}
