// Package policysvc decides whether a principal may perform an MCP method on a server, tool,
// resource or prompt: Cedar policies, evaluated against entities built from the request and
// the registry's local snapshot, plus per-tenant quotas on tools/call. The policies are a
// bundle applied through ApplyBundle and kept in etcd, which every replica watches and
// switches to atomically; without one, the bundle in a directory read at start.
package policysvc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
)

// Limits on a CheckRequest: every field comes from another service, but is still bounded.
const (
	maxRequestBytes = 64 << 10
	maxIDBytes      = 512
	maxTenantBytes  = 256
	maxKindBytes    = 64
	maxGroups       = 256
	maxGroupBytes   = 256
	maxActionBytes  = 128
	maxServerBytes  = 256
	maxNameBytes    = 4096
)

// toolsCall is the one action quotas apply to.
const toolsCall = "tools/call"

// kindAnonymous is rpcserver.KindName of an anonymous principal: its quotas are its source
// address's, never its tenant's.
const kindAnonymous = "anonymous"

// Config is the policy service's configuration.
type Config struct {
	// Listen is the address the standalone binary serves on.
	Listen string
	// AuthAddr is authsvc's address, where the standalone binary authenticates callers that
	// present a credential of their own to Check (empty: the internal token only).
	AuthAddr string
	// PolicyDir holds the *.cedar policies and, optionally, one *.cedarschema. With etcd, it is
	// the fallback used while etcd holds no applied bundle (unless ApplyDir).
	PolicyDir string
	// KeyPrefix is where the applied bundle lives in etcd (KeyPrefix + "bundle"). Empty means
	// DefaultKeyPrefix.
	KeyPrefix string
	// ApplyDir, with etcd, applies the PolicyDir bundle at start: it is stored in etcd,
	// replacing the stored one, and every replica switches to it. Without it a stored bundle
	// wins over PolicyDir. Not a flag: `gatehouse up --policy-dir` sets it.
	ApplyDir bool
	// RegistryAddr is the registry the standalone binary follows for its server catalogue.
	RegistryAddr string
	// QuotaRate is tools/call per second allowed per tenant; 0 is unlimited. With a quota
	// file it is the tenant default when the file sets none (both: refused).
	QuotaRate float64
	// QuotaBurst is the per-tenant bucket size; below 1 it is max(1, ceil(QuotaRate)).
	QuotaBurst int
	// QuotaFile is a gatehouse YAML file whose `quotas:` section sets the token buckets per
	// tenant, principal, server, tool and anonymous address, and the concurrency limit
	// (docs/configuration.md). `gatehouse up` passes its --config.
	QuotaFile string
	// Quotas, when set, is used instead of QuotaFile's section. Not a flag: tests set it.
	Quotas *QuotaConfig
	// Clock is the time source of the quota; nil means time.Now. Not a flag: tests set it.
	Clock func() time.Time
}

// RegisterFlags binds the configuration to flags with their defaults. Environment fallbacks
// (GATEHOUSE_POLICY_<FLAG>) are svcmain's, applied to every flag alike.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:7102", "address to serve on")
	fs.StringVar(&c.AuthAddr, "auth-addr", "127.0.0.1:7101", "authsvc address, to authenticate other teams' services calling Check with their own credential (empty: internal token only)")
	fs.StringVar(&c.PolicyDir, "policy-dir", "examples/policies", "directory of Cedar policies (*.cedar) and their schema (*.cedarschema); with etcd, used until a bundle is applied")
	fs.StringVar(&c.KeyPrefix, "key-prefix", DefaultKeyPrefix, "etcd key prefix of the applied policy bundle")
	fs.StringVar(&c.RegistryAddr, "registry-addr", "127.0.0.1:7103", "registrysvc address")
	fs.Float64Var(&c.QuotaRate, "quota-rate", 0, "tools/call per second per tenant (0: unlimited)")
	fs.IntVar(&c.QuotaBurst, "quota-burst", 0, "burst of the per-tenant quota (below 1: max(1, ceil(rate)))")
	fs.StringVar(&c.QuotaFile, "quota-config", "", "YAML file whose quotas: section sets the tools/call quotas and concurrency limits (see docs/configuration.md); --quota-rate is then the tenant default if the file sets none")
}

// Catalog is the local snapshot of the registry. The servers it returns must not be
// modified afterwards: an update replaces the entry (catalog.Catalog does), and policysvc
// caches what it builds from each entry by pointer.
//
// If the catalog also has `Ready() <-chan struct{}` (catalog.Catalog does), Check answers
// Unavailable until it is closed, rather than denying every server as unknown.
type Catalog interface {
	Server(name string) (*registryv1.Server, bool)
}

type readier interface{ Ready() <-chan struct{} }

// Service answers policy checks.
type Service struct {
	servers Catalog
	ready   <-chan struct{}
	now     func() time.Time // the time conditions see (context.time)
	logger  *slog.Logger
	quota   *quotas
	cache   serverCache
	princ   principalCache

	// active is the bundle deciding now; a new one is swapped in whole, and a decision
	// loads it once, so decisions in flight finish on the bundle they started with.
	active atomic.Pointer[active]
	kv     Etcd   // nil: no store, the directory's bundle only
	key    string // the applied bundle's etcd key
	cancel context.CancelFunc
	done   chan struct{} // closed when the watch of the stored bundle has returned
}

// New loads the policy bundle and returns the service. Without etcd (kv nil) the bundle is
// cfg.PolicyDir's. With etcd it is the bundle stored there by ApplyBundle, or, while there is
// none, cfg.PolicyDir's; with cfg.ApplyDir, cfg.PolicyDir's is stored first. New then follows
// the stored bundle until Close. A bundle that does not load fails New: a replica never
// decides by other policies than the ones applied. kv stays the caller's to close, after
// Close.
func New(cfg Config, servers Catalog, kv Etcd, logger *slog.Logger) (*Service, error) {
	if servers == nil {
		return nil, errors.New("policysvc: a catalog is required")
	}
	if cfg.PolicyDir == "" && kv == nil {
		return nil, errors.New("policysvc: a policy directory is required")
	}
	if cfg.ApplyDir && (kv == nil || cfg.PolicyDir == "") {
		return nil, errors.New("policysvc: applying the policy directory at start needs etcd and a directory")
	}
	qc := cfg.Quotas
	if qc == nil && cfg.QuotaFile != "" {
		var err error
		if qc, err = ReadQuotaFile(cfg.QuotaFile); err != nil {
			return nil, fmt.Errorf("policysvc: %w", err)
		}
	}
	rq, err := resolveQuotas(qc, cfg.QuotaRate, cfg.QuotaBurst)
	if err != nil {
		return nil, fmt.Errorf("policysvc: quotas: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Clock
	if now == nil {
		now = time.Now
	}
	s := &Service{
		servers: servers,
		now:     now,
		logger:  logger,
		quota:   newQuotas(rq, now),
		kv:      kv,
		key:     bundleKey(cfg.KeyPrefix),
	}
	if r, ok := servers.(readier); ok {
		s.ready = r.Ready()
	}
	if kv == nil {
		b, _, err := loadDir(cfg.PolicyDir, logger)
		if err != nil {
			return nil, err
		}
		s.install(&active{bundle: b}, "dir")
		return s, nil
	}
	rev, err := s.start(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go s.follow(ctx, rev)
	return s, nil
}

// loadDir loads the bundle of a policy directory, and returns its files too.
func loadDir(dir string, logger *slog.Logger) (*cedarpolicy.Bundle, []cedarpolicy.File, error) {
	files, err := cedarpolicy.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("policysvc: load policies from %s: %w", dir, err)
	}
	b, err := cedarpolicy.New(files)
	if err != nil {
		return nil, nil, fmt.Errorf("policysvc: load policies from %s: %w", dir, err)
	}
	if !b.Validated() {
		logger.Warn("no schema in the policy directory: policies are not validated", "dir", dir)
	}
	return b, files, nil
}

// BundleVersion is the active bundle's content digest.
func (s *Service) BundleVersion() string { return s.active.Load().bundle.Version() }

// Handlers returns the PolicyService handler to mount. ApplyBundle may read a whole bundle;
// every other method keeps the small bound of a Check.
func (s *Service) Handlers() []rpcserver.Handler {
	path, small := policyv1connect.NewPolicyServiceHandler(s, connect.WithReadMaxBytes(maxRequestBytes))
	_, large := policyv1connect.NewPolicyServiceHandler(s, connect.WithReadMaxBytes(maxApplyBytes))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == policyv1connect.PolicyServiceApplyBundleProcedure {
			large.ServeHTTP(w, r)
			return
		}
		small.ServeHTTP(w, r)
	})
	return []rpcserver.Handler{{Service: policyv1connect.PolicyServiceName, Path: path, Handler: h}}
}

// Close stops following the stored bundle.
func (s *Service) Close(context.Context) error {
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
	return nil
}

// Check implements policyv1connect.PolicyServiceHandler.
func (s *Service) Check(ctx context.Context, req *connect.Request[policyv1.CheckRequest]) (_ *connect.Response[policyv1.CheckResponse], err error) {
	ctx, span := telemetry.StartHandler(ctx, tracerScope, policyv1connect.PolicyServiceCheckProcedure)
	var resp *policyv1.CheckResponse
	defer func() { s.endCheck(ctx, span, req.Msg, resp, err) }()
	if c, ok := rpcserver.CallerFrom(ctx); ok && c.Principal != nil {
		if err := validateRequest(req.Msg); err != nil {
			return nil, toConnect(err)
		}
		if err := s.authorizeCaller(c.Principal, actionAPICheck, req.Msg.GetSubject().GetTenant()); err != nil {
			return nil, toConnect(err)
		}
	}
	if resp, err = s.check(req.Msg); err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(resp), nil
}

// check decides one request: validate, build the few entities it needs, evaluate, and for
// an allowed tools/call consume its quotas (every bucket that applies, and a concurrency
// permit, or nothing).
func (s *Service) check(req *policyv1.CheckRequest) (*policyv1.CheckResponse, error) {
	if err := validateRequest(req); err != nil {
		return nil, err
	}
	if s.ready != nil {
		select {
		case <-s.ready:
		default:
			return nil, errNotReady
		}
	}
	b := s.active.Load().bundle
	var cctx types.Record // a bundle that reads no context is decided without one
	var err error
	if b.ReadsContext() {
		cctx, err = cedarContext(req, s.now(), needOf(b))
	}
	if err != nil {
		// Arguments a policy might test cannot be converted: deny, and say why.
		resp := denied(b)
		resp.Errors = []string{err.Error()}
		return resp, nil
	}
	ents, creq, ok := s.request(b, &s.cache, &s.princ, req, cctx, true)
	if !ok {
		return denied(b), nil
	}
	resp := s.decide(b, ents, creq)
	if resp.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		return resp, nil
	}
	if s.quota != nil && req.GetAction() == toolsCall {
		sub := req.GetSubject()
		id, err := s.quota.admit(admission{
			tenant: sub.GetTenant(), principal: sub.GetId(), server: req.GetResource().GetServer(), tool: req.GetResource().GetName(),
			anonymous: sub.GetKind() == kindAnonymous, source: addressKey(req.GetContext().GetSourceAddress()),
		})
		if err != nil {
			return nil, err
		}
		resp.PermitId = id
	}
	return resp, nil
}

// Evaluate decides req by bundle b exactly as Check does, with the same validation, the
// same entities (built from servers) and the same context (as Check builds it at now),
// without the quota and the registry's readiness: for tools that try policies before they
// are applied (gatehouse policy test and explain). overlay replaces members of the context
// (a test case's time or arguments, say). Unlike Check, it also checks the request against
// the bundle's schema when the schema declares the action, so a test case whose context the
// schema would not produce fails instead of passing vacuously.
func Evaluate(b *cedarpolicy.Bundle, servers Catalog, req *policyv1.CheckRequest, overlay types.Record, now time.Time) (*policyv1.CheckResponse, error) {
	if err := validateRequest(req); err != nil {
		return nil, err
	}
	need := needOf(b)
	need.allContext = true // the whole context, as the schema declares it: the request is validated
	base, err := cedarContext(req, now, need)
	if err != nil {
		resp := denied(b)
		resp.Errors = []string{err.Error()}
		return resp, nil
	}
	m := types.RecordMap{}
	for k, v := range base.All() {
		m[k] = v
	}
	for k, v := range overlay.All() {
		m[k] = v
	}
	s := &Service{servers: servers, logger: slog.New(slog.DiscardHandler)}
	ents, creq, ok := s.request(b, &serverCache{}, &principalCache{}, req, types.NewRecord(m), false)
	if !ok {
		return denied(b), nil
	}
	if err := b.ValidateRequest(creq); err != nil {
		return nil, invalid("the request does not match the schema: %v", err)
	}
	return s.decide(b, ents, creq), nil
}

// request builds the Cedar request of a valid CheckRequest and the few entities it needs, the
// server's and the principal's from the caches; ok is false for a server the registry does
// not know.
//
// host says the action is a host's method (Check): one named like an admin action is then
// the catch-all, so that a host cannot borrow an admin action's permits.
func (s *Service) request(b *cedarpolicy.Bundle, cache *serverCache, princ *principalCache, req *policyv1.CheckRequest, cedarContext types.Record, host bool) (*requestEntities, types.Request, bool) {
	sub, res, action := req.GetSubject(), req.GetResource(), req.GetAction()
	srv, ok := s.servers.Server(res.GetServer())
	if !ok {
		return nil, types.Request{}, false
	}
	entry := cache.server(srv)
	ents := &requestEntities{sub: sub, server: entry.entity, bundle: b, cache: princ}
	resource := entry.entity.UID
	act := actionOf(b, action)
	if host && strings.HasPrefix(action, adminActionPrefix) {
		act = catchAll
	}
	if name := res.GetName(); name != "" && act != catchAll { // the catch-all acts on the server
		typ, _ := itemType(action) // validateRequest checked it
		ents.item = entry.item(typ, name)
		resource = ents.item.UID
	}
	return ents, types.Request{
		Principal: types.NewEntityUID(cedarpolicy.TypePrincipal, types.String(sub.GetId())),
		Action:    types.NewEntityUID(cedarpolicy.TypeAction, types.String(act)),
		Resource:  resource,
		Context:   cedarContext,
	}, true
}

// denied is the answer for a server the registry does not know: denied, not an error, so
// callers learn nothing, and decided by no policy.
func denied(b *cedarpolicy.Bundle) *policyv1.CheckResponse {
	return &policyv1.CheckResponse{Decision: policyv1.Decision_DECISION_DENY, BundleVersion: b.Version()}
}

// decide evaluates a Cedar request by bundle b.
func (s *Service) decide(b *cedarpolicy.Bundle, ents types.EntityGetter, creq types.Request) *policyv1.CheckResponse {
	resp := denied(b)
	decision, diag := b.Authorize(ents, creq)
	if len(diag.Reasons) > 0 {
		resp.PolicyIds = make([]string, len(diag.Reasons))
		for i, r := range diag.Reasons {
			resp.PolicyIds[i] = string(r.PolicyID)
		}
	}
	if len(diag.Errors) > 0 {
		resp.Errors = make([]string, len(diag.Errors))
		for i, e := range diag.Errors {
			resp.Errors[i] = e.String()
		}
		s.logger.Warn("policy evaluation errors", "version", b.Version(), "action", string(creq.Action.ID), "errors", resp.Errors)
	}
	// Cedar skips a policy that fails to evaluate. A permit that errs allows nothing, but a
	// forbid that errs (an argument of another type than it tests, say) would let the
	// permits through: the gateway denies instead.
	if decision == types.Allow && !forbidErred(b, diag.Errors) {
		resp.Decision = policyv1.Decision_DECISION_ALLOW
	}
	return resp
}

// forbidErred reports whether a forbid policy is among those that failed to evaluate.
func forbidErred(b *cedarpolicy.Bundle, errs []types.DiagnosticError) bool {
	for _, e := range errs {
		if b.Forbids(cedar.PolicyID(e.PolicyID)) {
			return true
		}
	}
	return false
}

// validateRequest checks presence and bounds of every field the decision uses.
func validateRequest(req *policyv1.CheckRequest) error {
	sub := req.GetSubject()
	switch {
	case sub.GetId() == "":
		return invalid("subject id is required")
	case sub.GetTenant() == "":
		return invalid("subject tenant is required")
	case req.GetAction() == "":
		return invalid("action is required")
	case req.GetResource().GetServer() == "":
		return invalid("resource server is required")
	case len(sub.GetId()) > maxIDBytes:
		return invalid("subject id is longer than %d bytes", maxIDBytes)
	case len(sub.GetTenant()) > maxTenantBytes:
		return invalid("subject tenant is longer than %d bytes", maxTenantBytes)
	case len(sub.GetKind()) > maxKindBytes:
		return invalid("subject kind is longer than %d bytes", maxKindBytes)
	case len(sub.GetGroups()) > maxGroups:
		return invalid("subject has more than %d groups", maxGroups)
	case len(req.GetAction()) > maxActionBytes:
		return invalid("action is longer than %d bytes", maxActionBytes)
	case len(req.GetResource().GetServer()) > maxServerBytes:
		return invalid("resource server is longer than %d bytes", maxServerBytes)
	case len(req.GetResource().GetName()) > maxNameBytes:
		return invalid("resource name is longer than %d bytes", maxNameBytes)
	}
	for _, g := range sub.GetGroups() {
		if g == "" || len(g) > maxGroupBytes {
			return invalid("subject groups must be 1 to %d bytes each", maxGroupBytes)
		}
	}
	if req.GetResource().GetName() != "" {
		if _, ok := itemType(req.GetAction()); !ok {
			return invalid("action %q does not act on a named tool, resource or prompt", req.GetAction())
		}
	}
	return nil
}
