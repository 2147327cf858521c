// Package bridgesvc is the bridge service: it owns every upstream MCP connection. Each
// (session, server) pair gets its own upstream, started by the first message for it: a stdio
// child process or a Streamable HTTP client session. JSON-RPC messages cross the service as raw
// bytes; only the members needed to route them (id, method, progress token) are read.
package bridgesvc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"

	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1/bridgev1connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"github.com/gatehouse-mcp/gatehouse/internal/upstreamtoken"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/breaker"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/stdio"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/streamable"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/tokenexchange"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
	"go.opentelemetry.io/otel/trace"
)

// Defaults of the configuration.
const (
	DefaultListen          = "127.0.0.1:7104"
	DefaultStdioGrace      = 2 * time.Second
	DefaultMaxChildren     = 256
	DefaultMaxMessageBytes = 16 << 20
)

// DefaultMaxChildrenPerTenant and DefaultMaxChildrenPerPrincipal keep one tenant, or one
// principal, from taking every stdio child.
const (
	DefaultMaxChildrenPerTenant    = 64
	DefaultMaxChildrenPerPrincipal = 16
)

const (
	// maxKey bounds session ids and server names.
	maxKey = 256
	// maxEnded bounds the remembered ended sessions (a late message for one is refused
	// instead of starting an upstream nobody will end).
	maxEnded = 1 << 16
	// rpcOverhead is what a Connect message may carry beyond the JSON-RPC message itself.
	rpcOverhead = 64 << 10
)

// Config configures the bridge.
type Config struct {
	// Listen is the address split mode serves on.
	Listen string
	// RegistryAddr is the registry service's host:port (split mode follows its catalogue).
	RegistryAddr string
	// AuthAddr is authsvc's host:port, which mints the tokens of gateway-jwt servers (split
	// mode); empty: such servers cannot be called.
	AuthAddr string
	// StdioGrace is each wait of a stdio child's shutdown: close stdin, wait, SIGTERM, wait,
	// SIGKILL.
	StdioGrace time.Duration
	// MaxChildren bounds the stdio children of this bridge; beyond it Send fails with
	// RESOURCE_EXHAUSTED.
	MaxChildren int
	// MaxChildrenPerTenant and MaxChildrenPerPrincipal bound the stdio children of one
	// tenant and of one principal (of a tenant): per-principal ≤ per-tenant ≤ MaxChildren.
	// Zero takes the default, lowered to the cap above it. A Send that names no principal or
	// tenant counts under the empty ones, which share these caps like any other.
	MaxChildrenPerTenant    int
	MaxChildrenPerPrincipal int
	// StateDir, when set, holds the record of the live stdio children, so that a start
	// after a crash ends those the crashed run left (see docs/architecture.md).
	StateDir string
	// MaxMessageBytes bounds one message either way. An upstream message (or stdout line) over
	// it fails the call; a stdio child that writes one is killed.
	MaxMessageBytes int
	// DefaultCallTimeout bounds a request's wait for its response when the server sets no
	// call_timeout; past it the call fails with ErrCallTimeout and is cancelled upstream.
	DefaultCallTimeout time.Duration
	// AuditAddr is auditsvc's host:port, where split mode records the breakers' transitions;
	// empty: they are logged only.
	AuditAddr string
	// The circuit breakers' defaults (breaker.go); a server's `breaker:` overrides them.
	// BreakerFailures 0 turns the breakers off.
	BreakerFailures int
	BreakerWindow   time.Duration
	BreakerCooldown time.Duration
	BreakerProbes   int
	// MetricsMaxServers bounds the server label of the breaker metrics (past it: "other").
	MetricsMaxServers int
}

// RegisterFlags registers the configuration's flags on fs with their defaults. Environment
// fallbacks (GATEHOUSE_BRIDGE_<FLAG>) are svcmain's, applied to every flag alike.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", DefaultListen, "address to serve the bridge service on")
	fs.StringVar(&c.RegistryAddr, "registry-addr", "", "host:port of the registry service")
	fs.StringVar(&c.AuthAddr, "auth-addr", "", "host:port of authsvc, which mints the tokens of gateway-jwt servers (empty: none)")
	fs.DurationVar(&c.StdioGrace, "stdio-grace", DefaultStdioGrace, "each wait of a stdio child's shutdown (stdin close, then SIGTERM, then SIGKILL)")
	fs.IntVar(&c.MaxChildren, "max-children", DefaultMaxChildren, "maximum stdio children of this bridge")
	fs.IntVar(&c.MaxChildrenPerTenant, "max-children-per-tenant", DefaultMaxChildrenPerTenant, "maximum stdio children of one tenant (at most -max-children)")
	fs.IntVar(&c.MaxChildrenPerPrincipal, "max-children-per-principal", DefaultMaxChildrenPerPrincipal, "maximum stdio children of one principal (at most -max-children-per-tenant)")
	fs.StringVar(&c.StateDir, "state-dir", "", "directory recording the live stdio children, so that a start after a crash ends them (empty: none)")
	fs.IntVar(&c.MaxMessageBytes, "max-message-bytes", DefaultMaxMessageBytes, "maximum size of one JSON-RPC message or stdout line")
	fs.DurationVar(&c.DefaultCallTimeout, "call-timeout", DefaultCallTimeout, "how long a call waits for the upstream's answer when its server sets no timeout (at most 1h)")
	fs.StringVar(&c.AuditAddr, "audit-addr", "", "host:port of auditsvc, which records the circuit breakers' transitions (empty: logged only)")
	c.registerBreakerFlags(fs)
	fs.IntVar(&c.MetricsMaxServers, "metrics-max-servers", telemetry.DefaultMaxServers, "distinct server labels in the breaker metrics; further servers are counted as \"other\"")
}

func (c *Config) validate() error {
	if c.StdioGrace == 0 {
		c.StdioGrace = DefaultStdioGrace
	}
	if c.MaxChildren == 0 {
		c.MaxChildren = DefaultMaxChildren
	}
	if c.MaxChildrenPerTenant == 0 {
		c.MaxChildrenPerTenant = min(DefaultMaxChildrenPerTenant, c.MaxChildren)
	}
	if c.MaxChildrenPerPrincipal == 0 {
		c.MaxChildrenPerPrincipal = min(DefaultMaxChildrenPerPrincipal, c.MaxChildrenPerTenant)
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.DefaultCallTimeout == 0 {
		c.DefaultCallTimeout = DefaultCallTimeout
	}
	switch {
	case c.StdioGrace < 0 || c.StdioGrace > time.Minute:
		return fmt.Errorf("stdio-grace %v: must be between 0 and 1m", c.StdioGrace)
	case c.MaxChildren < 0:
		return fmt.Errorf("max-children %d: must be positive", c.MaxChildren)
	case c.MaxChildrenPerTenant < 0 || c.MaxChildrenPerTenant > c.MaxChildren:
		return fmt.Errorf("max-children-per-tenant %d: must be between 1 and max-children (%d)", c.MaxChildrenPerTenant, c.MaxChildren)
	case c.MaxChildrenPerPrincipal < 0 || c.MaxChildrenPerPrincipal > c.MaxChildrenPerTenant:
		return fmt.Errorf("max-children-per-principal %d: must be between 1 and max-children-per-tenant (%d)", c.MaxChildrenPerPrincipal, c.MaxChildrenPerTenant)
	case c.MaxMessageBytes < 1<<10 || c.MaxMessageBytes > 1<<30:
		return fmt.Errorf("max-message-bytes %d: must be between 1 KiB and 1 GiB", c.MaxMessageBytes)
	case c.DefaultCallTimeout < 0 || c.DefaultCallTimeout > MaxCallTimeout:
		return fmt.Errorf("call-timeout %v: must be more than 0 and at most %v", c.DefaultCallTimeout, MaxCallTimeout)
	}
	return c.validateBreaker()
}

// Catalog resolves server names; internal/catalog.Catalog satisfies it. When it also has
// Ready() <-chan struct{}, an unknown name before the first snapshot is reported as the
// catalogue not being loaded rather than as an unknown server.
type Catalog interface {
	Server(name string) (*registryv1.Server, bool)
}

// Service implements bridgev1connect.BridgeServiceHandler.
type Service struct {
	cfg     Config
	servers Catalog
	ready   <-chan struct{}
	log     *slog.Logger
	sup     *stdio.Supervisor
	http    *streamable.Client
	// Upstream identity (identity.go): secrets the config names, gateway-jwt tokens (nil
	// without WithUpstreamTokens), exchanged tokens.
	secrets  *secrets
	tokens   *upstreamtoken.Cache
	exchange *tokenexchange.Client
	// The circuit breakers (breaker.go) and the audit log of their transitions (nil without
	// WithAudit).
	breakers    *breaker.Set
	now         func() time.Time
	audit       AuditAppender
	transitions *transitionLog
	stopLog     sync.Once
	// metrics: nil without WithMetrics (metrics.go).
	metricsReg prometheus.Registerer
	metrics    *telemetry.BridgeMetrics

	mu       sync.Mutex
	sessions map[string]*session
	ended    tombstones
	closed   bool
}

var _ bridgev1connect.BridgeServiceHandler = (*Service)(nil)

// session is the bridge's state for one gateway session.
type session struct {
	id     string
	ctx    context.Context // ends with the session
	cancel context.CancelFunc
	// upstreams and changed are guarded by Service.mu. changed is closed (and replaced)
	// whenever an upstream is added, for Listen streams waiting for one.
	upstreams map[string]*entry
	changed   chan struct{}
	// started names the servers this session has had a live upstream for: once one ends, a
	// new one starts only with an initialize (a fresh upstream would not know the session).
	started map[string]bool
}

// entry is one upstream; ready is closed once conn or err is set.
type entry struct {
	ready chan struct{}
	conn  upstream.Conn
	err   error
}

// New returns the bridge.
func New(cfg Config, servers Catalog, logger *slog.Logger, opts ...Option) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("bridge config: %w", err)
	}
	if servers == nil {
		return nil, errors.New("bridge: nil catalog")
	}
	if logger == nil {
		logger = slog.Default()
	}
	sup, err := stdio.NewSupervisor(stdio.Options{
		Grace:                   cfg.StdioGrace,
		MaxChildren:             cfg.MaxChildren,
		MaxChildrenPerTenant:    cfg.MaxChildrenPerTenant,
		MaxChildrenPerPrincipal: cfg.MaxChildrenPerPrincipal,
		StateDir:                cfg.StateDir,
		MaxLine:                 cfg.MaxMessageBytes,
		Logger:                  logger,
	})
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	s := &Service{
		cfg:     cfg,
		servers: servers,
		log:     logger,
		sup:     sup,
		http: streamable.NewClient(streamable.Options{
			MaxMessage:   cfg.MaxMessageBytes,
			CloseTimeout: cfg.StdioGrace,
			Logger:       logger,
		}),
		sessions: map[string]*session{},
		ended:    tombstones{set: map[string]struct{}{}},
		secrets:  newSecrets(),
		exchange: tokenexchange.New(tokenexchange.Options{}),
		now:      time.Now,
	}
	for _, o := range opts {
		o(s)
	}
	s.breakers = breaker.New(breaker.Options{Now: s.now, OnTransition: s.onTransition})
	s.transitions = newTransitionLog()
	if s.audit != nil {
		go s.runTransitionLog()
	}
	if r, ok := servers.(interface{ Ready() <-chan struct{} }); ok {
		s.ready = r.Ready()
	}
	if err := s.registerMetrics(); err != nil {
		return nil, err
	}
	return s, nil
}

// Handlers returns the bridge's Connect handler for mounting.
func (s *Service) Handlers() []rpcserver.Handler {
	limit := s.cfg.MaxMessageBytes + rpcOverhead
	path, h := bridgev1connect.NewBridgeServiceHandler(s, connect.WithReadMaxBytes(limit), connect.WithSendMaxBytes(limit))
	return []rpcserver.Handler{{Service: bridgev1connect.BridgeServiceName, Path: path, Handler: h}}
}

// Send delivers one host message to the session's upstream for a server, starting the
// upstream on the first message, and streams back what belongs to it.
func (s *Service) Send(ctx context.Context, req *connect.Request[bridgev1.SendRequest], stream *connect.ServerStream[bridgev1.SendResponse]) error {
	return s.Deliver(ctx, req.Msg, stream.Send)
}

// Deliver is Send for an in-process caller (single-process mode): emit receives each message
// that belongs to the request, the last one marked final. Errors are *connect.Error.
func (s *Service) Deliver(ctx context.Context, r *bridgev1.SendRequest, emit func(*bridgev1.SendResponse) error) error {
	return s.deliver(ctx, r, nil, emit)
}

// DeliverParsed is Deliver for an in-process caller that has already read r.Message with
// jsonrpc.Parse (the host's edge, whose rules are stricter than the bridge's): m is that
// reading, and the message is not scanned a second time. m.Raw must be r.Message itself (the
// same bytes, not a copy), or the request is refused.
func (s *Service) DeliverParsed(ctx context.Context, r *bridgev1.SendRequest, m *jsonrpc.Message, emit func(*bridgev1.SendResponse) error) error {
	if m == nil || len(m.Raw) == 0 || len(m.Raw) != len(r.GetMessage()) || &m.Raw[0] != &r.GetMessage()[0] {
		return connectError(fmt.Errorf("%w: the parsed message is not the request's message", ErrInvalidArgument))
	}
	return s.deliver(ctx, r, m, emit)
}

// deliver validates r and sends its message, read from r.Message unless parsed is given.
func (s *Service) deliver(ctx context.Context, r *bridgev1.SendRequest, parsed *jsonrpc.Message, emit func(*bridgev1.SendResponse) error) (err error) {
	ctx, span := telemetry.StartHandler(ctx, tracerScope, bridgev1connect.BridgeServiceSendProcedure)
	var m upstream.Message
	upstreamError := false
	defer func() {
		s.logFailure(ctx, "send", r.GetSessionId(), r.GetServer(), err)
		s.endSend(ctx, span, r, &m, upstreamError, err)
	}()
	if err := checkKey(r.GetSessionId(), r.GetServer()); err != nil {
		return connectError(err)
	}
	if err := checkOwner(r.GetPrincipal(), r.GetTenant(), r.GetGroups()); err != nil {
		return connectError(err)
	}
	if pv := r.GetProtocolVersion(); pv != "" && !upstream.ValidProtocolVersion(pv) {
		return connectError(fmt.Errorf("%w: protocol_version %.40q", ErrInvalidArgument, pv))
	}
	if n := len(r.GetMessage()); n > s.cfg.MaxMessageBytes {
		return connectError(fmt.Errorf("%w: the message is %d bytes, over the %d-byte limit", ErrMessageTooLarge, n, s.cfg.MaxMessageBytes))
	}
	if parsed != nil {
		m = *parsed
	} else if m, err = jsonrpc.Peek(r.GetMessage()); err != nil {
		return connectError(err)
	}
	if id := r.GetRequestId(); len(id) > 0 && (m.Kind != upstream.KindRequest || jsonrpc.IDKey(id) != jsonrpc.IDKey(m.ID)) {
		return connectError(fmt.Errorf("%w: request_id does not match the message's id", ErrInvalidArgument))
	}
	srv, err := s.server(r.GetServer())
	if err != nil {
		return connectError(err)
	}
	who := owner{principal: r.GetPrincipal(), tenant: r.GetTenant(), groups: r.GetGroups()}
	// An open breaker refuses the call before anything reaches the upstream.
	ticket, err := s.admit(r.GetServer(), srv, m, who)
	if err != nil {
		return connectError(err)
	}
	// The host's token, for a server that exchanges it, goes no further than this call.
	ctx = withSubject(ctx, r.GetSubjectToken())
	var conn upstream.Conn
	if init := r.GetInitialize(); len(init) > 0 {
		// An aggregated session: its upstream opens on the first request for the server.
		if conn, err = s.lazyConn(ctx, r.GetSessionId(), r.GetServer(), srv, m, init, who); conn == nil && err == nil {
			return nil // a notification or response for an upstream not open: nobody to tell
		}
	} else {
		conn, err = s.conn(ctx, r.GetSessionId(), r.GetServer(), srv, m.Method == "initialize", who, nil)
	}
	if err != nil {
		ticket.Done(breakerResult(ctx, err))
		return connectError(err)
	}
	if pv := r.GetProtocolVersion(); pv != "" {
		conn.SetProtocolVersion(pv)
	}
	err = s.sendTimed(ctx, conn, r.GetSessionId(), r.GetServer(), s.callTimeout(srv), m, func(out upstream.Message) error {
		resp := &bridgev1.SendResponse{Message: out.Raw}
		if out.IsResponseTo(m.ID) {
			resp.Final, resp.Error = true, out.IsError
			upstreamError = out.IsError
		}
		if v, ok := upstream.InitializeResult(&m, &out); ok {
			resp.ProtocolVersion = v
		}
		return emit(resp)
	})
	ticket.Done(breakerResult(ctx, err))
	return connectError(err)
}

// Listen streams the upstream messages of a session that belong to no request until the
// session ends. It outlives upstreams: when a stdio child dies it waits for the next one.
func (s *Service) Listen(ctx context.Context, req *connect.Request[bridgev1.ListenRequest], stream *connect.ServerStream[bridgev1.ListenResponse]) error {
	// Send the response headers at once: the caller's Listen returns once it has them, while
	// the first message may be long in coming.
	return s.Subscribe(ctx, req.Msg, func() error { return stream.Send(nil) }, stream.Send)
}

// Subscribe is Listen for an in-process caller: ready is called once the session is known,
// then emit with each message that belongs to no request, until the session or ctx ends.
func (s *Service) Subscribe(ctx context.Context, r *bridgev1.ListenRequest, ready func() error, emit func(*bridgev1.ListenResponse) error) (err error) {
	defer func() { s.logFailure(ctx, "listen", r.GetSessionId(), r.GetServer(), err) }()
	if err := checkKey(r.GetSessionId(), r.GetServer()); err != nil {
		return connectError(err)
	}
	pv := r.GetProtocolVersion()
	if pv != "" && !upstream.ValidProtocolVersion(pv) {
		return connectError(fmt.Errorf("%w: protocol_version %.40q", ErrInvalidArgument, pv))
	}
	if _, err := s.server(r.GetServer()); err != nil {
		return connectError(err)
	}
	s.mu.Lock()
	sess, err := s.sessionLocked(r.GetSessionId())
	s.mu.Unlock()
	if err != nil {
		return connectError(err)
	}
	// From here on the session's end completes the stream.
	if err := ready(); err != nil {
		return err
	}
	forward := func(m upstream.Message) error {
		return emit(&bridgev1.ListenResponse{Message: m.Raw})
	}
	ctx = withSubject(ctx, r.GetSubjectToken())
	for {
		conn, err := s.await(ctx, sess, r.GetServer())
		if err != nil {
			if sess.ctx.Err() != nil {
				return nil
			}
			return connectError(err)
		}
		if pv != "" {
			conn.SetProtocolVersion(pv)
		}
		lctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(sess.ctx, cancel)
		err = conn.Listen(lctx, forward)
		stop()
		cancel()
		switch {
		case sess.ctx.Err() != nil:
			return nil
		case ctx.Err() != nil:
			return connectError(ctx.Err())
		}
		select {
		case <-conn.Done():
			continue // that upstream is gone; keep listening for the next one
		default:
		}
		return connectError(err)
	}
}

// CloseSession ends every upstream the session holds and returns once they are released. The
// shutdown runs its full course even when the caller stops waiting.
func (s *Service) CloseSession(_ context.Context, req *connect.Request[bridgev1.CloseSessionRequest]) (*connect.Response[bridgev1.CloseSessionResponse], error) {
	id := req.Msg.GetSessionId()
	if id == "" || len(id) > maxKey {
		return nil, connectError(fmt.Errorf("%w: session_id must be 1 to %d bytes", ErrInvalidArgument, maxKey))
	}
	s.EndSession(id)
	return connect.NewResponse(&bridgev1.CloseSessionResponse{}), nil
}

// EndSession ends every upstream of the session: stdio children are shut down and reaped, HTTP
// upstream sessions deleted, Listen streams completed. Later messages for the session are
// refused. It blocks until all that is done (at most about twice the stdio grace), so a
// watch loop should call it in a goroutine. Ending an unknown session is not an error.
func (s *Service) EndSession(id string) { s.endSession(context.Background(), id) }

func (s *Service) endSession(ctx context.Context, id string) {
	s.mu.Lock()
	s.ended.add(id)
	sess := s.sessions[id]
	delete(s.sessions, id)
	var entries []*entry
	if sess != nil {
		for _, e := range sess.upstreams {
			entries = append(entries, e)
		}
	}
	s.mu.Unlock()
	if sess == nil {
		return
	}
	sess.cancel()
	var wg sync.WaitGroup
	for _, e := range entries {
		wg.Go(func() {
			<-e.ready
			if e.conn != nil {
				_ = e.conn.Close(ctx)
			}
		})
	}
	wg.Wait()
	if len(entries) > 0 {
		s.log.Info("session ended", "session", tag(id), "upstreams", len(entries))
	}
}

// Close ends every session and reaps every child; when ctx ends first, the children left are
// killed at once. Messages after Close are refused.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() { s.endSession(ctx, id) })
	}
	wg.Wait()
	err := s.sup.Close(ctx)
	s.http.CloseIdleConnections()
	s.closeTransitionLog(ctx)
	return err
}

func checkKey(sessionID, server string) error {
	switch {
	case sessionID == "" || len(sessionID) > maxKey:
		return fmt.Errorf("%w: session_id must be 1 to %d bytes", ErrInvalidArgument, maxKey)
	case server == "" || len(server) > maxKey:
		return fmt.Errorf("%w: server must be 1 to %d bytes", ErrInvalidArgument, maxKey)
	}
	return nil
}

// owner is who an upstream is started for: a stdio child counts against its principal and
// tenant, and an upstream told who calls (gateway-jwt) is told this caller.
type owner struct {
	principal, tenant string
	groups            []string
}

// maxGroups bounds the groups a request names.
const maxGroups = 64

// checkOwner accepts an absent principal or tenant (callers that do not say) or an ident id,
// and groups that are ident ids.
func checkOwner(principal, tenant string, groups []string) error {
	switch {
	case principal != "" && !ident.ValidID(principal):
		return fmt.Errorf("%w: principal is not a valid id", ErrInvalidArgument)
	case tenant != "" && !ident.ValidID(tenant):
		return fmt.Errorf("%w: tenant is not a valid id", ErrInvalidArgument)
	case len(groups) > maxGroups:
		return fmt.Errorf("%w: %d groups, more than %d", ErrInvalidArgument, len(groups), maxGroups)
	}
	for _, g := range groups {
		if !ident.ValidID(g) {
			return fmt.Errorf("%w: a group is not a valid id", ErrInvalidArgument)
		}
	}
	return nil
}

func (s *Service) server(name string) (*registryv1.Server, error) {
	if srv, ok := s.servers.Server(name); ok {
		return srv, nil
	}
	if s.ready != nil {
		select {
		case <-s.ready:
		default:
			return nil, ErrCatalogNotReady
		}
	}
	return nil, fmt.Errorf("%w: %.64q", ErrUnknownServer, name)
}

// sessionLocked returns the session's state, creating it. s.mu must be held.
func (s *Service) sessionLocked(id string) (*session, error) {
	switch {
	case s.closed:
		return nil, ErrShuttingDown
	case s.ended.has(id):
		return nil, ErrSessionEnded
	}
	sess := s.sessions[id]
	if sess == nil {
		ctx, cancel := context.WithCancel(context.Background())
		sess = &session{id: id, ctx: ctx, cancel: cancel, upstreams: map[string]*entry{}, changed: make(chan struct{})}
		s.sessions[id] = sess
	}
	return sess, nil
}

// conn returns the session's upstream for a server (srv, the catalogue's entry for name),
// starting it when there is none.
func (s *Service) conn(ctx context.Context, sessionID, name string, srv *registryv1.Server, create bool, who owner, init *upstream.Message) (upstream.Conn, error) {
	s.mu.Lock()
	sess, err := s.sessionLocked(sessionID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	e := sess.upstreams[name]
	if e != nil && isDone(e.ready) && e.conn != nil && isDone(e.conn.Done()) {
		// It ended (a crash, a lost HTTP session) and forget has not run yet.
		delete(sess.upstreams, name)
		e = nil
	}
	start := e == nil
	if start && !create && sess.started[name] {
		s.mu.Unlock()
		return nil, ErrNoUpstream
	}
	if start {
		if sess.started == nil {
			sess.started = map[string]bool{}
		}
		sess.started[name] = true
		e = &entry{ready: make(chan struct{})}
		sess.upstreams[name] = e
		close(sess.changed)
		sess.changed = make(chan struct{})
	}
	s.mu.Unlock()
	if start {
		s.start(sess, name, srv, e, who, init, trace.SpanContextFromContext(ctx))
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if e.err != nil {
		if start {
			// It never became live (spawn failed, limit reached): the next message may try again.
			s.mu.Lock()
			delete(sess.started, name)
			s.mu.Unlock()
		}
		return nil, e.err
	}
	return e.conn, nil
}

// start starts the upstream of e. A session that ends meanwhile closes it: endSession waits
// for e.ready. by is the span of the call that opens it: an aggregated session's initialize
// goes upstream in that call's trace.
func (s *Service) start(sess *session, name string, srv *registryv1.Server, e *entry, who owner, init *upstream.Message, by trace.SpanContext) {
	logger := s.log.With("session", tag(sess.id), "server", name)
	var (
		conn upstream.Conn
		err  error
	)
	switch t := srv.GetTransport(); t {
	case registryv1.Transport_TRANSPORT_STDIO:
		var c *stdio.Child
		var env map[string]string
		if env, err = s.childEnv(srv); err != nil {
			break
		}
		if c, err = s.sup.Start(stdio.Spec{Argv: srv.GetCommand(), Env: env, Dir: srv.GetDir(), Logger: logger, Principal: who.principal, Tenant: who.tenant}); err == nil {
			conn = c
		}
	case registryv1.Transport_TRANSPORT_STREAMABLE_HTTP:
		var c *streamable.Conn
		if c, err = s.http.Dial(srv.GetUrl(), logger, s.credential(srv, who)); err == nil {
			conn = c
		}
	default:
		err = fmt.Errorf("%w: server %q uses transport %v", ErrUnsupportedTransport, name, t)
	}
	if err == nil && init != nil {
		// Opened on behalf of an aggregated session: initialized before anyone else may use
		// it (they wait on e.ready).
		if err = s.initialize(sess, name, srv, conn, *init, by); err != nil {
			_ = conn.Close(context.Background())
			conn = nil
		}
	}
	if err != nil {
		logger.Warn("cannot start upstream", "err", err)
	}
	s.mu.Lock()
	e.conn, e.err = conn, err
	if err != nil && sess.upstreams[name] == e {
		delete(sess.upstreams, name)
	}
	close(e.ready)
	s.mu.Unlock()
	if err == nil {
		go s.forget(sess, name, e)
	}
}

// forget drops an upstream that ended on its own, so the next message starts a new one.
func (s *Service) forget(sess *session, name string, e *entry) {
	<-e.conn.Done()
	s.mu.Lock()
	if sess.upstreams[name] == e {
		delete(sess.upstreams, name)
	}
	s.mu.Unlock()
}

// await returns the session's live upstream for a server, waiting for one to be started. It
// fails when ctx ends or the session ends.
func (s *Service) await(ctx context.Context, sess *session, name string) (upstream.Conn, error) {
	for {
		s.mu.Lock()
		e, changed := sess.upstreams[name], sess.changed
		s.mu.Unlock()
		if e != nil {
			select {
			case <-e.ready:
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-sess.ctx.Done():
				return nil, ErrSessionEnded
			}
			if e.conn != nil && !isDone(e.conn.Done()) {
				return e.conn, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-sess.ctx.Done():
			return nil, ErrSessionEnded
		}
	}
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// tag names a session in logs without writing its id (a bearer value at the gateway edge).
func tag(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:6])
}

// tombstones remembers the most recent ended sessions, oldest evicted first.
type tombstones struct {
	set  map[string]struct{}
	ring []string
	next int
}

func (t *tombstones) add(id string) {
	if _, ok := t.set[id]; ok {
		return
	}
	if len(t.ring) < maxEnded {
		t.ring = append(t.ring, id)
	} else {
		delete(t.set, t.ring[t.next])
		t.ring[t.next] = id
		t.next = (t.next + 1) % maxEnded
	}
	t.set[id] = struct{}{}
}

func (t *tombstones) has(id string) bool {
	_, ok := t.set[id]
	return ok
}
