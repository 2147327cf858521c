package telemetry

import (
	"crypto/subtle"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are Prometheus metrics (github.com/prometheus/client_golang), served at /metrics by
// every binary and by `gatehouse up`. Each process has one Registry; each service registers
// its own metrics on it (CallMetrics for the ingress, BridgeMetrics, AuditMetrics), so
// `gatehouse up` exposes them all on one port and split mode each on its binary's port.
//
// Every label a caller can influence is bounded (Bounds): past the bound a value is counted
// as Other, so a host that invents tool names, or a flood of tenants, cannot grow the series.

// Other is the label value every value past a bound folds into.
const Other = "other"

// MetricsTokenEnv names the bearer token a scrape of /metrics must carry (or, with _FILE, a
// file holding it); without one /metrics answers loopback peers only.
const MetricsTokenEnv = "GATEHOUSE_METRICS_TOKEN"

// maxLabelBytes is the longest label value kept; longer ones count as Other.
const maxLabelBytes = 128

// Bounds caps the distinct values of each caller-influenced label.
type Bounds struct {
	MaxTenants int
	MaxServers int
	MaxTools   int
	// MaxToolsPerServer is one server's share of MaxTools, so that an upstream listing
	// thousands of tools cannot take every tool label from the others.
	MaxToolsPerServer int
}

// Default bounds: a gateway of a few hundred tenants, servers and tools stays exact.
const (
	DefaultMaxTenants = 100
	DefaultMaxServers = 100
	DefaultMaxTools   = 500
	// DefaultMaxToolsPerServer: a server's first 100 listed tools get labels of their own.
	DefaultMaxToolsPerServer = 100
	maxBound                 = 10000
)

// RegisterFlags binds the bounds to --metrics-max-tenants, --metrics-max-servers and
// --metrics-max-tools.
func (b *Bounds) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&b.MaxTenants, "metrics-max-tenants", DefaultMaxTenants, "distinct tenant labels in metrics; further tenants are counted as \"other\"")
	fs.IntVar(&b.MaxServers, "metrics-max-servers", DefaultMaxServers, "distinct server labels in metrics; further servers are counted as \"other\"")
	fs.IntVar(&b.MaxTools, "metrics-max-tools", DefaultMaxTools, "distinct (server, tool) labels in metrics, taken only from upstreams' tools/list answers; further tools are counted as \"other\"")
	fs.IntVar(&b.MaxToolsPerServer, "metrics-max-tools-per-server", DefaultMaxToolsPerServer, "distinct tool labels of one server, within --metrics-max-tools; its further tools are counted as \"other\"")
}

// withDefaults fills zero bounds (a Config built without flags) and checks the rest.
func (b Bounds) withDefaults() (Bounds, error) {
	for _, f := range []struct {
		v    *int
		def  int
		name string
	}{{&b.MaxTenants, DefaultMaxTenants, "tenants"}, {&b.MaxServers, DefaultMaxServers, "servers"}, {&b.MaxTools, DefaultMaxTools, "tools"}, {&b.MaxToolsPerServer, DefaultMaxToolsPerServer, "tools per server"}} {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 0 || *f.v > maxBound {
			return b, fmt.Errorf("metrics max %s %d: want 1 to %d", f.name, *f.v, maxBound)
		}
	}
	return b, nil
}

// NewRegistry returns a process's registry, holding the Go runtime's and the process's
// metrics besides what services register.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves g in the Prometheus text format. With a token, a scrape must carry
// `Authorization: Bearer <token>`; without one, only loopback peers are answered: the
// metrics name tenants, servers and tools, which a host must not learn from the public port.
func Handler(g prometheus.Gatherer, token string) http.Handler {
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !scrapeAllowed(r, token) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if token != "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse-metrics"`)
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = w.Write([]byte("metrics need the metrics token\n"))
				return
			}
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte("metrics are served to loopback peers only unless " + MetricsTokenEnv + " is set\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func scrapeAllowed(r *http.Request, token string) bool {
	if token != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// WithMetrics serves h, and /metrics (GET) from g in front of it.
func WithMetrics(h http.Handler, g prometheus.Gatherer, token string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler(g, token))
	mux.Handle("/", h)
	return mux
}
