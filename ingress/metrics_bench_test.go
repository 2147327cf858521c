package ingress_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkToolsCallMetrics is one tools/call through the ingress's handler (no network; the
// services are the package's fakes), with metrics off and on: the difference is what the
// metrics add to a call.
func BenchmarkToolsCallMetrics(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			audit := newFakeAudit()
			stop := make(chan struct{})
			defer close(stop)
			go func() { // the fake signals each append on a bounded channel: drain it
				for {
					select {
					case <-audit.appended:
					case <-stop:
						return
					}
				}
			}()
			deps := ingress.Deps{Auth: newFakeAuth(), Policy: fakePolicy{permits: &permitLog{}}, Bridge: newFakeBridge(), Audit: audit,
				Catalog: fakeCatalog{}, Sessions: &fakeSessions{records: map[string]sessionstore.Record{}}}
			if on {
				deps.Metrics = prometheus.NewRegistry()
			}
			cfg := ingress.Config{AllowedHosts: "127.0.0.1,localhost", AuthCacheTTL: time.Minute, MaxBodyBytes: 64 << 10, MaxSessionsPerPrincipal: 8}
			svc, err := ingress.New(cfg, deps, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			defer svc.Close(context.Background())
			svc.SetReady(true)
			h := svc.Handler()
			post := func(body, sid string) *httptest.ResponseRecorder {
				r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1/servers/echo/mcp", strings.NewReader(body))
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("Accept", "application/json, text/event-stream")
				r.Header.Set("Authorization", "Bearer "+tokenAlice)
				if sid != "" {
					r.Header.Set("Mcp-Session-Id", sid)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				return w
			}
			w := post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, "")
			sid := w.Header().Get("Mcp-Session-Id")
			if w.Code != http.StatusOK || sid == "" {
				b.Fatalf("initialize: %d %s", w.Code, w.Body)
			}
			post(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, sid)
			const call = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if w := post(call, sid); w.Code != http.StatusOK {
					b.Fatalf("tools/call: %d %s", w.Code, w.Body)
				}
			}
		})
	}
}
