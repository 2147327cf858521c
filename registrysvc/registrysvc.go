// Package registrysvc is the catalogue of the MCP servers Gatehouse fronts. Servers live in
// etcd (one key per server), seeded from configuration; every replica keeps a local cache fed
// by one etcd watch and answers GetServer, ListServers and WatchServers from it, so reads
// never touch etcd and watchers share a single etcd watch.
package registrysvc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults of the configuration.
const (
	DefaultListen      = "127.0.0.1:7103"
	DefaultKeyPrefix   = "/gatehouse/registry/"
	DefaultMaxWatchers = 1024
)

const (
	// maxRequestBytes bounds a request message: the largest are a ReportTools of
	// MaxPinnedTools tools (under 500 KiB) and an ImportServers of config.MaxServers specs.
	maxRequestBytes = 1 << 20
	// maxTenantBytes bounds the tenant of a ListServers request.
	maxTenantBytes = 128
	// watchBuffer is how many events a watcher may be behind before it is dropped (it then
	// reconnects and starts over from a snapshot).
	watchBuffer = 64
	// readyWait is how long a request waits for the first snapshot before Unavailable.
	readyWait = 5 * time.Second
)

// Config is the registry service's configuration.
type Config struct {
	// Listen is the address the standalone binary serves on.
	Listen string
	// KeyPrefix is where the registry keeps its keys in etcd; servers are under
	// KeyPrefix + "servers/". Empty means DefaultKeyPrefix.
	KeyPrefix string
	// ServersFile is an optional YAML file (config.Parse) the standalone binary seeds from.
	ServersFile string
	// MaxWatchers bounds concurrent WatchServers streams; 0 means DefaultMaxWatchers.
	MaxWatchers int
	// AuthAddr and PolicyAddr are authsvc's and policysvc's addresses, where the standalone
	// binary authenticates other teams' callers and asks which tenants they may list
	// (empty: the internal token only).
	AuthAddr   string
	PolicyAddr string
	// AuditAddr is auditsvc's address, where the standalone binary records quarantines,
	// approvals and imports (empty: they are logged only).
	AuditAddr string
	// Audit records quarantines, approvals and imports; nil logs them only. Not a flag: the
	// binary makes it from AuditAddr, single-process mode passes its auditsvc.
	Audit Auditor
	// Authorize decides other teams' callers (api/registry.list on a tenant) and operators'
	// admin requests (admin/servers.approve, admin/servers.import); nil refuses them. Not a flag: the binary makes it from PolicyAddr, single-process mode from its
	// policysvc.
	Authorize rpcserver.Authorizer
}

// RegisterFlags binds the configuration to flags with their defaults. Environment fallbacks
// (GATEHOUSE_REGISTRY_<FLAG>) are svcmain's, applied to every flag alike.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", DefaultListen, "address to serve on")
	fs.StringVar(&c.KeyPrefix, "key-prefix", DefaultKeyPrefix, "etcd key prefix of the registry")
	fs.StringVar(&c.ServersFile, "servers", "", "YAML file of servers to seed the registry from at start (the file is the source of truth: servers it does not list are removed)")
	fs.IntVar(&c.MaxWatchers, "max-watchers", DefaultMaxWatchers, "most concurrent WatchServers streams")
	fs.StringVar(&c.AuthAddr, "auth-addr", "127.0.0.1:7101", "authsvc address, to authenticate other teams' services calling GetServer and ListServers with their own credential (empty: internal token only)")
	fs.StringVar(&c.PolicyAddr, "policy-addr", "127.0.0.1:7102", "policysvc address, which decides which tenants such callers may list and which operators may approve and import servers")
	fs.StringVar(&c.AuditAddr, "audit-addr", "127.0.0.1:7105", "auditsvc address, where quarantines, approvals and imports are recorded (empty: logged only)")
}

// Etcd is what the registry needs of an etcd client (*clientv3.Client has it).
type Etcd interface {
	clientv3.KV
	clientv3.Watcher
}

// Service serves the registry from its watch-fed cache.
type Service struct {
	kv             Etcd
	root           string // KeyPrefix, ending in "/"
	prefix         string // root + "servers/": the configuration's servers (Seed's)
	importedPrefix string // root + "imported/": servers ImportServers added
	pinsPrefix     string // root + "pins/": each pinned server's pins
	audit          Auditor
	now            func() time.Time
	logger         *slog.Logger
	maxWatchers    int
	authorize      rpcserver.Authorizer

	mu       sync.RWMutex
	st       *state                        // what etcd holds; immutable messages
	servers  map[string]*registryv1.Server // the catalogue: st's effective servers
	rev      int64                         // every change up to rev is in servers
	changed  chan struct{}                 // closed and replaced whenever rev moves
	watchCtx context.Context               // the running etcd watch's context, or nil
	subs     map[*subscriber]struct{}

	ready     chan struct{} // closed at the first snapshot
	readyOnce sync.Once
	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{} // closed when the watch loop has returned
}

// New starts the registry's watch of etcd in the background and returns at once; requests
// wait (briefly) for the first snapshot. kv stays the caller's to close, after Close.
func New(cfg Config, kv Etcd, logger *slog.Logger) (*Service, error) {
	if kv == nil {
		return nil, errors.New("registrysvc: an etcd client is required")
	}
	if cfg.MaxWatchers < 0 {
		return nil, fmt.Errorf("registrysvc: max watchers must not be negative (%d)", cfg.MaxWatchers)
	}
	prefix := cfg.KeyPrefix
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		kv:             kv,
		root:           prefix,
		prefix:         prefix + "servers/",
		importedPrefix: prefix + "imported/",
		pinsPrefix:     prefix + "pins/",
		audit:          cfg.Audit,
		now:            time.Now,
		st:             newState(),
		logger:         logger,
		maxWatchers:    orDefault(cfg.MaxWatchers, DefaultMaxWatchers),
		authorize:      cfg.Authorize,
		servers:        map[string]*registryv1.Server{},
		changed:        make(chan struct{}),
		subs:           map[*subscriber]struct{}{},
		ready:          make(chan struct{}),
		closing:        make(chan struct{}),
		cancel:         cancel,
		done:           make(chan struct{}),
	}
	go s.run(ctx)
	return s, nil
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Validate checks one server spec (see config.Validate); Seed applies it to every server.
func Validate(s *registryv1.Server) error { return config.Validate(s) }

// Handlers returns the RegistryService handler to mount.
func (s *Service) Handlers() []rpcserver.Handler {
	path, h := registryv1connect.NewRegistryServiceHandler(s, connect.WithReadMaxBytes(maxRequestBytes))
	return []rpcserver.Handler{{Service: registryv1connect.RegistryServiceName, Path: path, Handler: h}}
}

// Close stops the etcd watch and ends every WatchServers stream (Unavailable: watchers
// reconnect elsewhere). GetServer and ListServers keep answering from the last snapshot, so
// in-flight requests drain normally.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.cancel()
	})
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop registry watch: %w", ctx.Err())
	}
}

// GetServer implements registryv1connect.RegistryServiceHandler.
func (s *Service) GetServer(ctx context.Context, req *connect.Request[registryv1.GetServerRequest]) (*connect.Response[registryv1.GetServerResponse], error) {
	name := req.Msg.GetName()
	if name == "" {
		return nil, toConnect(invalid("name is required"))
	}
	if !ident.ValidServerName(name) {
		return nil, toConnect(invalid("name %.64q is not a server name ([a-z0-9][a-z0-9._-]{0,62})", name))
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, toConnect(err)
	}
	s.mu.RLock()
	srv, ok := s.servers[name]
	s.mu.RUnlock()
	// Another team's caller sees a server approved for a tenant it may list, and no other:
	// one it may not see is answered as one that does not exist.
	if ok && !s.mayList(ctx, srv.GetTenants()...) {
		ok = false
	}
	if !ok {
		return nil, toConnect(fmt.Errorf("%w: %q", errNotFound, name))
	}
	resp := &registryv1.GetServerResponse{Server: srv}
	if c, ok := rpcserver.CallerFrom(ctx); !ok || c.Principal == nil || s.operator(ctx) {
		s.mu.RLock()
		resp.Pins = s.st.pins[name]
		s.mu.RUnlock()
	}
	return connect.NewResponse(resp), nil
}

// ListServers implements registryv1connect.RegistryServiceHandler: every server, or only
// those approved for the tenant when one is given, sorted by name.
func (s *Service) ListServers(ctx context.Context, req *connect.Request[registryv1.ListServersRequest]) (*connect.Response[registryv1.ListServersResponse], error) {
	tenant := req.Msg.GetTenant()
	if len(tenant) > maxTenantBytes {
		return nil, toConnect(invalid("tenant is longer than %d bytes", maxTenantBytes))
	}
	if c, ok := rpcserver.CallerFrom(ctx); ok && c.Principal != nil {
		if tenant == "" && !s.operator(ctx) {
			return nil, toConnect(fmt.Errorf("%w: name the tenant to list", errCallerDenied))
		}
		if tenant != "" && !s.mayList(ctx, tenant) {
			return nil, toConnect(fmt.Errorf("%w: %s may not list tenant %s", errCallerDenied, c.Principal.GetId(), tenant))
		}
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, toConnect(err)
	}
	s.mu.RLock()
	out := make([]*registryv1.Server, 0, len(s.servers))
	for _, srv := range s.servers {
		if tenant == "" || slices.Contains(srv.GetTenants(), tenant) {
			out = append(out, srv)
		}
	}
	s.mu.RUnlock()
	sortByName(out)
	return connect.NewResponse(&registryv1.ListServersResponse{Servers: out}), nil
}

// WatchServers implements registryv1connect.RegistryServiceHandler: a snapshot, then every
// change, until the client goes away. A watcher that falls more than watchBuffer events
// behind, or the registry shutting down, ends the stream with Unavailable; the client
// reconnects and starts again from a snapshot.
func (s *Service) WatchServers(ctx context.Context, _ *connect.Request[registryv1.WatchServersRequest], stream *connect.ServerStream[registryv1.WatchServersResponse]) error {
	if err := s.waitReady(ctx); err != nil {
		return toConnect(err)
	}
	sub, snapshot, err := s.subscribe()
	if err != nil {
		return toConnect(err)
	}
	defer s.unsubscribe(sub)
	if err := stream.Send(snapshot); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return toConnect(errClosed)
		case <-sub.lagged:
			return toConnect(errLagged)
		case ev := <-sub.events:
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

// waitReady waits for the first snapshot, for at most readyWait.
func (s *Service) waitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	default:
	}
	t := time.NewTimer(readyWait)
	defer t.Stop()
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing:
		return errClosed
	case <-t.C:
		return errNotReady
	}
}

func sortByName(servers []*registryv1.Server) {
	slices.SortFunc(servers, func(a, b *registryv1.Server) int { return strings.Compare(a.GetName(), b.GetName()) })
}

// actionList is what another team's caller needs on a tenant to see its servers.
const actionList = "api/registry.list"

// mayList reports whether the caller in ctx may see servers of one of tenants: the gateway's
// own services (and calls within the process) always; another team's caller when policy
// lets it list one of them.
func (s *Service) mayList(ctx context.Context, tenants ...string) bool {
	c, ok := rpcserver.CallerFrom(ctx)
	if !ok || c.Principal == nil {
		return true
	}
	if s.authorize == nil {
		return false
	}
	if s.operator(ctx) {
		return true
	}
	for _, t := range tenants {
		if s.authorize(ctx, c.Principal, actionList, t) == nil {
			return true
		}
	}
	return false
}

// actionAdminList is what an operator needs to read the whole catalogue and its pins
// (gatehouse servers list and show).
const actionAdminList = "admin/servers.list"

// operator reports whether the caller in ctx is a principal policy lets read the whole
// catalogue.
func (s *Service) operator(ctx context.Context) bool {
	c, ok := rpcserver.CallerFrom(ctx)
	if !ok || c.Principal == nil || s.authorize == nil {
		return false
	}
	return s.authorize(ctx, c.Principal, actionAdminList, "") == nil
}
