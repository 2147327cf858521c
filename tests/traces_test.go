package tests

import (
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpCollector is a tiny OTLP/HTTP trace receiver on loopback: it decodes each export
// request (protobuf, as the OTel SDK's otlptracehttp sends it) and keeps its spans.
type otlpCollector struct {
	URL   string
	mu    sync.Mutex
	spans []collectedSpan
}

// collectedSpan is what the tests read of an exported span.
type collectedSpan struct {
	Service, TraceID, SpanID, Parent, Name string
	Attrs                                  map[string]string
}

func startCollector(t *testing.T) *otlpCollector {
	t.Helper()
	c := &otlpCollector{}
	srv := httptest.NewServer(http.HandlerFunc(c.export))
	t.Cleanup(srv.Close)
	c.URL = srv.URL
	return c
}

func (c *otlpCollector) export(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, 32<<20)
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				attrs := map[string]string{}
				for _, a := range sp.GetAttributes() {
					attrs[a.GetKey()] = a.GetValue().GetStringValue()
				}
				c.spans = append(c.spans, collectedSpan{Service: service, TraceID: hex.EncodeToString(sp.GetTraceId()),
					SpanID: hex.EncodeToString(sp.GetSpanId()), Parent: hex.EncodeToString(sp.GetParentSpanId()), Name: sp.GetName(), Attrs: attrs})
			}
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace is the spans of one trace received so far.
func (c *otlpCollector) trace(id string) []collectedSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []collectedSpan
	for _, s := range c.spans {
		if s.TraceID == id {
			out = append(out, s)
		}
	}
	return out
}

// all is every span received so far.
func (c *otlpCollector) all() []collectedSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.spans)
}

// count is how many spans were received.
func (c *otlpCollector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.spans)
}

// otelEnv points a gateway's processes at the collector: OTLP over HTTP, batches sent every
// 100 ms, and debug logs (each hop logs one line per call at debug level).
func otelEnv(c *otlpCollector) []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + c.URL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_BSP_SCHEDULE_DELAY=100"}
}

// traceServers are the whoami upstreams of the trace tests: the echo server over stdio and
// over Streamable HTTP, each telling which traceparent it received (header and _meta).
func traceServers(echo, echoURL string) string {
	return stdioEntry("trace-stdio", echo, "-whoami") + httpEntry("trace-http", echoURL)
}

// clientSpans are the ingress's spans around its RPCs to the services.
var clientSpans = []string{"policy Check", "audit Append", "bridge Send"}

// traceRun is what checkTraceJoin needs of a running gateway, in either mode.
type traceRun struct {
	endpoint func(server string) string
	token    string
	logs     func() string // every process's log lines
	audit    func() []auditRecord
	spans    *otlpCollector
	// services are the service.name values the spans of one call must come from.
	services []string
	// rpc: the ingress reaches the services over RPC (split mode), so its client spans
	// wrap each hop; in one process it calls the handlers and makes none.
	rpc bool
}

var (
	metaTraceparent   = regexp.MustCompile(`"meta_traceparent":"([^"]*)"`)
	headerTraceparent = regexp.MustCompile(`[{,]"traceparent":"([^"]*)"`)
)

// checkTraceJoin calls whoami on a stdio and an HTTP upstream, the host's trace context
// given once as the traceparent header and once as params._meta.traceparent, and checks
// that one trace id joins the host's request, the upstream's traceparent (header and _meta),
// the audit record, every service's log lines and spans; the upstream's parent is the
// bridge's span, and the gateway's first span is the host's span's child.
func checkTraceJoin(t *testing.T, run traceRun) {
	// A service serves before its first registry snapshot, and answers Unavailable until then.
	testsync.WaitFor(t, 30*time.Second, "the gateway to open a session", func() bool {
		rc := rawClient{t: t, url: run.endpoint("trace-http"), token: run.token}
		return rc.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, nil).status == http.StatusOK
	})
	for _, server := range []string{"trace-stdio", "trace-http"} {
		for _, carrier := range []string{"header", "meta"} {
			t.Run(server+" "+carrier, func(t *testing.T) {
				tid, hostSpan := randHex(t, 16), randHex(t, 8)
				tp := "00-" + tid + "-" + hostSpan + "-01"
				rc := rawClient{t: t, url: run.endpoint(server), token: run.token}
				sid := rc.initialize("2025-06-18")
				h := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
				params := `{"name":"whoami","arguments":{}}`
				if carrier == "header" {
					h["Traceparent"] = tp
				} else {
					params = `{"_meta":{"traceparent":"` + tp + `","progressToken":"p"},"name":"whoami","arguments":{}}`
				}
				r := rc.post(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":`+params+`}`, h)
				m := metaTraceparent.FindSubmatch(r.body)
				if r.status != http.StatusOK || m == nil {
					t.Fatalf("whoami: %d %s\n%s", r.status, r.body, run.logs())
				}
				got := string(m[1])
				if !strings.HasPrefix(got, "00-"+tid+"-") || len(got) != 55 || strings.Contains(got, hostSpan) {
					t.Fatalf("the upstream's _meta.traceparent %q: want trace %s and the gateway's own span", got, tid)
				}
				upstreamParent := got[36:52]
				hm := headerTraceparent.FindSubmatch(r.body)
				switch {
				case server == "trace-http" && (hm == nil || string(hm[1]) != got):
					t.Fatalf("the HTTP upstream's traceparent header %q, want %q (the same span as in _meta): %s", hm, got, r.body)
				case server == "trace-stdio" && hm != nil:
					t.Fatalf("a stdio upstream reported a traceparent header: %s", r.body)
				}

				testsync.WaitFor(t, 20*time.Second, "the call's audit record", func() bool {
					return slices.ContainsFunc(run.audit(), func(a auditRecord) bool {
						return a.TraceID == tid && a.Tool == "whoami" && a.Server == server && a.Phase == "PHASE_OUTCOME" && a.Outcome == "OUTCOME_ALLOWED"
					})
				})
				wantLogs := []string{"ingress", "policy", "audit", "bridge"}
				var logged []string
				testsync.WaitFor(t, 20*time.Second, "every service's log lines with the trace id", func() bool {
					logged = logServices(run.logs(), tid)
					return containsAll(logged, wantLogs)
				})
				wantSpans := []string{"tools/call", "gatehouse.policy.v1.PolicyService/Check",
					"gatehouse.audit.v1.AuditService/Append", "gatehouse.bridge.v1.BridgeService/Send", "tools/call " + server}
				if run.rpc {
					wantSpans = append(wantSpans, clientSpans...)
				}
				if carrier == "header" {
					wantSpans = append(wantSpans, "POST /servers/{name}/mcp")
				}
				var spans []collectedSpan
				defer func() {
					if t.Failed() {
						for _, s := range spans {
							t.Logf("span %s %s %q parent %s %v", s.Service, s.SpanID, s.Name, s.Parent, s.Attrs)
						}
						t.Logf("%d spans received in all", run.spans.count())
					}
				}()
				testsync.WaitFor(t, 20*time.Second, "every service's spans of the trace", func() bool {
					spans = run.spans.trace(tid)
					return containsAll(spanNames(spans), wantSpans) && containsAll(spanServices(spans), run.services)
				})
				for _, s := range spans {
					switch s.Name {
					case "tools/call " + server:
						if s.SpanID != upstreamParent {
							t.Errorf("the upstream's parent is span %s, want the bridge's upstream span %s", upstreamParent, s.SpanID)
						}
					case "POST /servers/{name}/mcp":
						if carrier == "header" && s.Parent != hostSpan {
							t.Errorf("the ingress's request span has parent %s, want the host's span %s", s.Parent, hostSpan)
						}
					case "tools/call":
						// A _meta.traceparent is the call's own parent; a header is the request's.
						if carrier == "meta" && s.Parent != hostSpan {
							t.Errorf("the ingress's call span has parent %s, want the host's span %s", s.Parent, hostSpan)
						}
						if s.Attrs["gatehouse.tool"] != "whoami" || s.Attrs["gatehouse.server"] != server || s.Attrs["enduser.id"] != "dev" ||
							s.Attrs["gatehouse.tenant"] != "default" || s.Attrs["mcp.method"] != "tools/call" ||
							s.Attrs["gatehouse.decision"] != "DECISION_ALLOW" || s.Attrs["gatehouse.outcome"] != "OUTCOME_ALLOWED" {
							t.Errorf("the call span's attributes: %v", s.Attrs)
						}
					}
				}
			})
		}
	}
}

// logServices is the svc of every JSON log line whose trace_id is tid.
func logServices(logs, tid string) []string {
	var out []string
	for line := range strings.SplitSeq(logs, "\n") {
		if !strings.Contains(line, tid) {
			continue
		}
		var l struct {
			Svc     string `json:"svc"`
			TraceID string `json:"trace_id"`
		}
		if i := strings.IndexByte(line, '{'); i >= 0 && json.Unmarshal([]byte(line[i:]), &l) == nil && l.TraceID == tid && !slices.Contains(out, l.Svc) {
			out = append(out, l.Svc)
		}
	}
	return out
}

func spanNames(spans []collectedSpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

func spanServices(spans []collectedSpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Service)
	}
	return out
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestTracesSingleProcess: `gatehouse up` exporting to an OTLP/HTTP collector joins one
// trace id across the host's request, the upstream (stdio and HTTP), the audit record, the
// log lines and the spans of every service.
func TestTracesSingleProcess(t *testing.T) {
	collector := startCollector(t)
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	echoURL := "http://" + gatehousetest.StartServer(t, func(addr string) []string { return []string{echo, "-http", addr, "-whoami"} }) + "/mcp"
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + traceServers(echo, echoURL),
		Args:   []string{"--log-level", "debug"},
		Env:    otelEnv(collector),
	})
	checkTraceJoin(t, traceRun{
		endpoint: g.Endpoint, token: g.Token, logs: g.Logs,
		audit: func() []auditRecord { return auditRecords(t, g.DataDir) },
		spans: collector, services: []string{"gatehouse"},
	})
	t.Run("aggregated lazy open", func(t *testing.T) {
		// The first call of an aggregated session opens its upstream: the initialize the
		// bridge sends it is in that call's trace, under the call's bridge span.
		tid := randHex(t, 16)
		rc := rawClient{t: t, url: g.Base + "/mcp", token: g.Token}
		sid := rc.initialize("2025-06-18")
		h := map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18", "Traceparent": "00-" + tid + "-" + randHex(t, 8) + "-01"}
		if r := rc.post(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"trace-http__whoami","arguments":{}}}`, h); r.status != http.StatusOK || !metaTraceparent.Match(r.body) {
			t.Fatalf("whoami through /mcp: %d %s\n%s", r.status, r.body, g.Logs())
		}
		var spans []collectedSpan
		testsync.WaitFor(t, 20*time.Second, "the upstream's initialize in the call's trace", func() bool {
			spans = collector.trace(tid)
			return containsAll(spanNames(spans), []string{"initialize trace-http", "tools/call trace-http", "gatehouse.bridge.v1.BridgeService/Send"})
		})
		var send string
		for _, s := range spans {
			if s.Name == "gatehouse.bridge.v1.BridgeService/Send" {
				send = s.SpanID
			}
		}
		for _, s := range spans {
			if s.Name == "initialize trace-http" && s.Parent != send {
				t.Errorf("the upstream's initialize has parent %s, want the bridge's Send span %s", s.Parent, send)
			}
		}
	})
	// In one process the ingress calls the handlers, with no RPC for a client span to wrap.
	// Stopping the gateway flushes every span it made, so their absence is a fact, not a
	// batch not yet sent.
	g.Stop(t)
	for _, name := range spanNames(collector.all()) {
		if slices.Contains(clientSpans, name) {
			t.Errorf("span %q in one process: the ingress calls the handlers, no RPC to wrap", name)
		}
	}
}

// TestTracesSplit: the same across the six service binaries, the trace context carried by
// the internal RPCs; each service exports its own spans under its own service.name.
func TestTracesSplit(t *testing.T) {
	collector := startCollector(t)
	env := otelEnv(collector)
	for _, svc := range []string{"AUTH", "POLICY", "REGISTRY", "BRIDGE", "AUDIT", "INGRESS"} {
		env = append(env, fmt.Sprintf("GATEHOUSE_%s_LOG_LEVEL=debug", svc))
	}
	sp := startSplitWith(t, 1, env, traceServers)
	checkTraceJoin(t, traceRun{
		rpc:      true,
		endpoint: func(server string) string { return sp.endpoint("ingress", server) },
		token:    splitDevToken(t, sp),
		logs:     sp.allLogs,
		audit:    func() []auditRecord { return auditRecords(t, sp.state) },
		spans:    collector,
		services: []string{"gatehouse-ingress", "gatehouse-policy", "gatehouse-audit", "gatehouse-bridge"},
	})
}

// splitDevToken is a token of principal dev in tenant default, made by the operator.
func splitDevToken(t *testing.T, sp *split) string {
	t.Helper()
	auth := authv1connect.NewAuthServiceClient(&http.Client{Transport: gatehousetest.BearerTransport{Token: sp.admin, Base: rpcserver.NewClient().Transport}}, rpcserver.BaseURL(sp.addrs["auth"]))
	created, err := auth.CreateToken(context.Background(), connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "dev", Tenant: "default", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER}))
	if err != nil {
		t.Fatalf("CreateToken: %v\n%s", err, sp.allLogs())
	}
	return created.Msg.GetToken()
}
