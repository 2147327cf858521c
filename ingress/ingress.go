// Package ingress is Gatehouse's public MCP surface, built in rooms: the edge of the
// Streamable HTTP transport for the session-era revisions (edge.go: guard, CORS, limits,
// header checks, the principal, the revision check), sessions (sessions.go), POST (post.go),
// the GET stream (stream.go), and the call (call.go), which owns one invocation from the
// policy decision through the write-ahead audit record and the bridge to its outcome. Every
// refusal is a row of one table (errors.go). Rooms for other transports and revisions feed
// the same call.
package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
)

// Supported lists the protocol revisions the Streamable HTTP surface accepts, oldest first.
var Supported = []string{"2025-03-26", "2025-06-18", "2025-11-25"}

// Config is the ingress configuration.
type Config struct {
	Listen         string
	AuthAddr       string
	PolicyAddr     string
	RegistryAddr   string
	BridgeAddr     string
	AuditAddr      string
	AllowedHosts   string
	AllowedOrigins string
	MaxBodyBytes   int64
	SessionTTL     time.Duration
	AuthCacheTTL   time.Duration
	MaxBatch       int
	// MaxSessionsPerPrincipal bounds the live sessions (and so stdio children per server) one
	// principal may hold; 0 means no limit.
	MaxSessionsPerPrincipal int
	// StrictAudit makes a call's answer wait for its outcome record to be durable (and
	// withholds the answer when it cannot be); by default the outcome is appended after the
	// answer is written, the decision record having been made durable before the upstream
	// saw the call.
	StrictAudit bool
	// MaxStreamsPerPrincipal bounds the GET streams one principal holds on this replica
	// (each session has at most one); 0 means no limit.
	MaxStreamsPerPrincipal int
	// StreamQueueBytes bounds the bytes queued between the bridge and one GET stream's
	// writer; a reader that falls further behind is disconnected.
	StreamQueueBytes int64
	// StreamWriteTimeout bounds each write to an SSE stream.
	StreamWriteTimeout time.Duration
	// HTTP server limits (NewHTTPServer). There is deliberately no write timeout: SSE
	// streams live long; each of their writes has StreamWriteTimeout instead.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// AuthFailRate and AuthFailBurst throttle failed authentications per source address
	// (429 with Retry-After beyond); AuthFailRate 0 disables the throttle.
	AuthFailRate  float64
	AuthFailBurst int
	// TLS of the listener (tls.go): a certificate and key, and optionally client
	// certificates from a trust bundle, none, optional or required.
	TLSCert        string
	TLSKey         string
	ClientCA       string
	ClientCertMode string
	// RevocationHeartbeat is how often authsvc's revocation stream shows it is alive (whole
	// seconds, 1s to 60s); a stream silent for three heartbeats is taken for broken.
	RevocationHeartbeat time.Duration
	// ListPageSize bounds the items of one page of the aggregated endpoint's lists (0: each
	// page merges one page of every server, however long); ListTimeout bounds each server's
	// part of a list, past which the server is left out of the answer.
	ListPageSize int
	ListTimeout  time.Duration
	// QuotaAuditWindow is how long refusals by quota are counted into one audit record per
	// principal and server before it is written (quota.go).
	QuotaAuditWindow time.Duration
	// Metrics bounds the labels of the call metrics (--metrics-max-*).
	Metrics telemetry.Bounds
}

// Defaults of the limits: the flags' defaults, and what New fills in for a Config built
// without RegisterFlags.
const (
	defaultMaxBatch           = 64
	defaultStreamQueueBytes   = 4 << 20
	defaultStreamWriteTimeout = 10 * time.Second
	defaultReadHeaderTimeout  = 10 * time.Second
	defaultReadTimeout        = 30 * time.Second
	defaultIdleTimeout        = 120 * time.Second
	defaultMaxHeaderBytes     = 64 << 10
	defaultListTimeout        = 10 * time.Second
	maxListPageSize           = 10000
)

// RegisterFlags binds the configuration to flags with their defaults. Environment fallbacks
// (GATEHOUSE_INGRESS_<FLAG>) are svcmain's, applied to every flag alike.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "address to serve MCP on")
	fs.StringVar(&c.AuthAddr, "auth-addr", "127.0.0.1:7101", "authsvc address")
	fs.StringVar(&c.PolicyAddr, "policy-addr", "127.0.0.1:7102", "policysvc address")
	fs.StringVar(&c.RegistryAddr, "registry-addr", "127.0.0.1:7103", "registrysvc address")
	fs.StringVar(&c.BridgeAddr, "bridge-addr", "127.0.0.1:7104", "bridgesvc address")
	fs.StringVar(&c.AuditAddr, "audit-addr", "127.0.0.1:7105", "auditsvc address")
	c.RegisterGuardFlags(fs)
}

// RegisterGuardFlags binds the settings shared by split and single-process mode.
func (c *Config) RegisterGuardFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.AllowedHosts, "allowed-hosts", "localhost,127.0.0.1,::1", "host names accepted in the Host header (DNS-rebinding guard)")
	fs.StringVar(&c.AllowedOrigins, "allowed-origins", "", "extra browser origins accepted besides those on allowed hosts, e.g. https://app.example.com")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", 4<<20, "largest request body accepted (413 beyond)")
	fs.DurationVar(&c.SessionTTL, "session-ttl", 30*time.Minute, "idle timeout of a session")
	fs.DurationVar(&c.AuthCacheTTL, "auth-cache-ttl", 30*time.Second, "how long an authenticated credential is cached")
	fs.IntVar(&c.MaxBatch, "max-batch", defaultMaxBatch, "most messages in one JSON-RPC batch (2025-03-26 only)")
	fs.IntVar(&c.MaxSessionsPerPrincipal, "max-sessions-per-principal", 64, "live sessions one principal may hold (503 beyond; 0: no limit)")
	fs.BoolVar(&c.StrictAudit, "strict-audit", false, "make each answer wait until its audit outcome record is durable")
	fs.IntVar(&c.MaxStreamsPerPrincipal, "max-streams-per-principal", 16, "GET streams one principal may hold on this replica (503 beyond; 0: no limit)")
	fs.Int64Var(&c.StreamQueueBytes, "stream-queue-bytes", defaultStreamQueueBytes, "bytes queued for one GET stream before its reader is disconnected")
	fs.DurationVar(&c.StreamWriteTimeout, "stream-write-timeout", defaultStreamWriteTimeout, "longest a write to an SSE stream may take")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", defaultReadHeaderTimeout, "longest a host may take to send request headers")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", defaultReadTimeout, "longest a host may take to send a request (headers and body)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", defaultIdleTimeout, "how long an idle keep-alive connection is kept")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", defaultMaxHeaderBytes, "largest request header block accepted")
	fs.Float64Var(&c.AuthFailRate, "auth-fail-rate", 10, "failed authentications per second allowed per source address (429 beyond; 0: no throttle)")
	fs.IntVar(&c.AuthFailBurst, "auth-fail-burst", 20, "burst of failed authentications per source address")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate (chain) to serve HTTPS with (empty: plain HTTP)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.ClientCA, "client-ca", "", "PEM bundle of the CAs whose client certificates identify hosts (mTLS)")
	fs.StringVar(&c.ClientCertMode, "client-cert", ClientCertNone, "client certificates: none, optional (verified when given) or require")
	fs.IntVar(&c.ListPageSize, "list-page-size", 0, "most items in one page of the aggregated endpoint's lists (0: one page of every server merged)")
	fs.DurationVar(&c.ListTimeout, "list-timeout", defaultListTimeout, "longest one server's part of an aggregated list may take (the server is left out beyond)")
	fs.DurationVar(&c.QuotaAuditWindow, "quota-audit-window", DefaultQuotaAuditWindow, "refusals by quota are audited as one record per principal and server for each such window (1s to 1h), with their count")
	c.Metrics.RegisterFlags(fs)
	fs.DurationVar(&c.RevocationHeartbeat, "revocation-heartbeat", defaultRevocationHeartbeat, "how often authsvc's revocation stream must show it is alive (1s to 60s); three missed heartbeats count as a broken stream")
}

// withDefaults fills the limits a Config built without RegisterFlags leaves zero.
func (c Config) withDefaults() Config {
	if c.ListTimeout <= 0 {
		c.ListTimeout = defaultListTimeout
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = defaultMaxBatch
	}
	if c.StreamQueueBytes <= 0 {
		c.StreamQueueBytes = defaultStreamQueueBytes
	}
	if c.StreamWriteTimeout <= 0 {
		c.StreamWriteTimeout = defaultStreamWriteTimeout
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = defaultReadHeaderTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = defaultReadTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = defaultIdleTimeout
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	if c.RevocationHeartbeat <= 0 {
		c.RevocationHeartbeat = defaultRevocationHeartbeat
	}
	if c.QuotaAuditWindow <= 0 {
		c.QuotaAuditWindow = DefaultQuotaAuditWindow
	}
	if c.AuthFailRate > 0 && c.AuthFailBurst <= 0 {
		c.AuthFailBurst = 1
	}
	return c
}

// NewHTTPServer returns the HTTP server for the ingress handler (alone or on a mux with
// other handlers): HTTP/1.1 and h2c, with the header, read and idle timeouts of cfg. It sets
// no WriteTimeout, which would cut every SSE stream; the ingress bounds each stream write
// itself. ReadTimeout bounds reading a request (headers and body): net/http clears the read
// deadline once the body is read, so a long call or a GET stream outlives it.
func NewHTTPServer(h http.Handler, cfg Config) *http.Server {
	cfg = cfg.withDefaults()
	srv := rpcserver.NewServer(h)
	srv.ReadHeaderTimeout = cfg.ReadHeaderTimeout
	srv.ReadTimeout = cfg.ReadTimeout
	srv.IdleTimeout = cfg.IdleTimeout
	srv.MaxHeaderBytes = cfg.MaxHeaderBytes
	return srv
}

// Catalog is the local snapshot of the registry the ingress routes by.
type Catalog interface {
	Server(name string) (*registryv1.Server, bool)
	// Servers returns every server in configuration order.
	Servers() []*registryv1.Server
}

// Sessions is where host sessions live: *sessionstore.Store.
type Sessions interface {
	Create(ctx context.Context, rec sessionstore.Record, limit int) (sessionstore.Record, error)
	Update(ctx context.Context, rec sessionstore.Record) error
	Get(ctx context.Context, id string) (sessionstore.Record, error)
	Touch(ctx context.Context, id string) error
	End(ctx context.Context, id string) error
	// List returns the live sessions of a principal (on every replica).
	List(ctx context.Context, tenant, principal string) ([]sessionstore.Record, error)
}

// Auditor appends audit records: auditv1connect.AuditServiceClient, or auditsvc's service
// itself in one process.
type Auditor interface {
	Append(context.Context, *connect.Request[auditv1.AppendRequest]) (*connect.Response[auditv1.AppendResponse], error)
}

// Deps are the services the ingress calls.
type Deps struct {
	Auth     Auth
	Policy   policyv1connect.PolicyServiceClient
	Bridge   Bridge
	Audit    Auditor
	Catalog  Catalog
	Sessions Sessions
	// Registry takes reports of pinned servers' tools (pins.go); nil hides every tool of a
	// pinned server that is not already pinned.
	Registry Registry
	// Metrics, when set, is where the call metrics are registered (served at /metrics by the
	// binary); nil counts nothing.
	Metrics prometheus.Registerer
	// InProcess says Policy, Bridge and Audit are this process's own handlers (gatehouse
	// up), not RPC clients: the ingress then starts no client span around a call to them,
	// since there is no RPC for it to time, and each handler's own span is the hop.
	InProcess bool
}

// Service serves the MCP surface.
type Service struct {
	cfg     Config
	deps    Deps
	logger  *slog.Logger
	guard   guard
	auth    *authCache
	limiter *authLimiter
	streams *streamRegistry
	meta    *resourceMeta
	jwks    *jwksCache
	// resources: which server listed each resource URI of an aggregated session.
	resources resourceIndex
	// pinReports: the last report of each pinned server's unpinned tools (pins.go).
	pinReports pinReports
	tls        *tls.Config // nil: plain HTTP
	now        func() time.Time
	maxBody    int64
	ready      atomic.Bool
	metrics    *telemetry.CallMetrics // nil: metrics off
	// refusals counts refusals by quota into one audit record per principal and window
	// (quota.go), flushed by a goroutine that Close stops.
	refusals  refusalTally
	tallyStop chan struct{}
	tallyDone chan struct{}
	closeOnce sync.Once
	// draining ends when the gateway stops taking traffic: standalone SSE streams close.
	draining    context.Context
	endDraining context.CancelFunc
}

// SetReady says whether the gateway takes traffic: until it is ready (and again while it
// drains) /healthz answers 503 and MCP requests get 503 with Retry-After.
func (s *Service) SetReady(ready bool) {
	s.ready.Store(ready)
	if !ready {
		s.endDraining()
	}
}

// New validates the configuration and returns the ingress.
func New(cfg Config, deps Deps, logger *slog.Logger) (*Service, error) {
	if deps.Auth == nil || deps.Policy == nil || deps.Bridge == nil || deps.Audit == nil || deps.Catalog == nil || deps.Sessions == nil {
		return nil, errors.New("ingress: every dependency is required")
	}
	if cfg.MaxBodyBytes <= 0 {
		return nil, fmt.Errorf("ingress: max body bytes must be positive, got %d", cfg.MaxBodyBytes)
	}
	cfg = cfg.withDefaults()
	if cfg.ListPageSize < 0 || cfg.ListPageSize > maxListPageSize {
		return nil, fmt.Errorf("ingress: list page size %d: want 0 to %d", cfg.ListPageSize, maxListPageSize)
	}
	if h := cfg.RevocationHeartbeat; h < time.Second || h > time.Minute || h%time.Second != 0 {
		return nil, fmt.Errorf("ingress: revocation heartbeat %s: want whole seconds from 1s to 60s", h)
	}
	g, err := newGuard(splitList(cfg.AllowedHosts), splitList(cfg.AllowedOrigins))
	if err != nil {
		return nil, err
	}
	if w := cfg.QuotaAuditWindow; w < minQuotaAuditWindow || w > maxQuotaAuditWindow {
		return nil, fmt.Errorf("ingress: quota audit window %s: want %s to %s", w, minQuotaAuditWindow, maxQuotaAuditWindow)
	}
	tc, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, deps: deps, logger: logger, guard: g, tls: tc, now: time.Now, maxBody: cfg.MaxBodyBytes}
	if deps.Metrics != nil {
		if err := s.registerMetrics(deps.Metrics); err != nil {
			return nil, fmt.Errorf("ingress: %w", err)
		}
	}
	s.draining, s.endDraining = context.WithCancel(context.Background())
	s.tallyStop, s.tallyDone = make(chan struct{}), make(chan struct{})
	go s.tallyRefusals(cfg.QuotaAuditWindow)
	s.auth = newAuthCache(deps.Auth, cfg.AuthCacheTTL, s.now)
	s.limiter = newAuthLimiter(cfg.AuthFailRate, cfg.AuthFailBurst, s.now)
	s.streams = newStreamRegistry(cfg.MaxStreamsPerPrincipal, cfg.StreamQueueBytes)
	s.meta = &resourceMeta{client: deps.Auth, now: s.now, onFail: func(err error) {
		logger.Warn("authsvc did not say what to publish as resource metadata", "err", err)
	}}
	s.jwks = &jwksCache{client: deps.Auth, now: s.now, onFail: func(err error) {
		logger.Warn("authsvc did not give the upstream tokens' key set", "err", err)
	}}
	return s, nil
}

// Handler returns the MCP surface: /servers/{name}/mcp, the protected resource metadata
// (RFC 9728) under /.well-known/oauth-protected-resource, the key set of the tokens minted
// for upstreams at /.well-known/jwks.json, and /healthz.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wellKnownResource, s.serveResourceMetadata)
	mux.HandleFunc("GET "+wellKnownResource+"/", s.serveResourceMetadata)
	mux.HandleFunc("GET "+wellKnownJWKS, s.serveJWKS)
	mux.HandleFunc("/servers/{name}/mcp", func(w http.ResponseWriter, r *http.Request) {
		s.serveMCP(w, r, false)
	})
	mux.HandleFunc(aggregatedPath, func(w http.ResponseWriter, r *http.Request) {
		s.serveMCP(w, r, true)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
