// Package policysvc decides whether a principal may perform an MCP method on a server, tool,
// resource or prompt: Cedar policies from a directory, evaluated against entities built from
// the request and the registry's local snapshot, plus per-tenant quotas on tools/call.
package policysvc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/cedar-policy/cedar-go/types"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
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

// Config is the policy service's configuration.
type Config struct {
	// Listen is the address the standalone binary serves on.
	Listen string
	// PolicyDir holds the *.cedar policies and, optionally, one *.cedarschema.
	PolicyDir string
	// RegistryAddr is the registry the standalone binary follows for its server catalogue.
	RegistryAddr string
	// QuotaRate is tools/call per second allowed per tenant; 0 is unlimited.
	QuotaRate float64
	// QuotaBurst is the per-tenant bucket size; below 1 it is max(1, ceil(QuotaRate)).
	QuotaBurst int
	// Clock is the time source of the quota; nil means time.Now. Not a flag: tests set it.
	Clock func() time.Time
}

// RegisterFlags binds the configuration to flags with their defaults. Environment fallbacks
// (GATEHOUSE_POLICY_<FLAG>) are svcmain's, applied to every flag alike.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:7102", "address to serve on")
	fs.StringVar(&c.PolicyDir, "policy-dir", "examples/policies", "directory of Cedar policies (*.cedar) and their schema (*.cedarschema)")
	fs.StringVar(&c.RegistryAddr, "registry-addr", "127.0.0.1:7103", "registrysvc address")
	fs.Float64Var(&c.QuotaRate, "quota-rate", 0, "tools/call per second per tenant (0: unlimited)")
	fs.IntVar(&c.QuotaBurst, "quota-burst", 0, "burst of the per-tenant quota (below 1: max(1, ceil(rate)))")
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
	logger  *slog.Logger
	bundle  *cedarpolicy.Bundle
	quota   *quota
	cache   serverCache
	princ   principalCache
}

// New loads and validates the policy bundle in cfg.PolicyDir; a bad policy fails it.
func New(cfg Config, servers Catalog, logger *slog.Logger) (*Service, error) {
	if servers == nil {
		return nil, errors.New("policysvc: a catalog is required")
	}
	if cfg.PolicyDir == "" {
		return nil, errors.New("policysvc: a policy directory is required")
	}
	if cfg.QuotaRate < 0 || cfg.QuotaBurst < 0 {
		return nil, fmt.Errorf("policysvc: quota rate and burst must not be negative (rate %v, burst %d)", cfg.QuotaRate, cfg.QuotaBurst)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bundle, err := cedarpolicy.Load(cfg.PolicyDir)
	if err != nil {
		return nil, fmt.Errorf("policysvc: load policies from %s: %w", cfg.PolicyDir, err)
	}
	if !bundle.Validated() {
		logger.Warn("no schema in the policy directory: policies are not validated", "dir", cfg.PolicyDir)
	}
	now := cfg.Clock
	if now == nil {
		now = time.Now
	}
	s := &Service{
		servers: servers,
		logger:  logger,
		bundle:  bundle,
		quota:   newQuota(cfg.QuotaRate, cfg.QuotaBurst, now),
	}
	if r, ok := servers.(readier); ok {
		s.ready = r.Ready()
	}
	logger.Info("policy bundle loaded", "dir", cfg.PolicyDir, "version", bundle.Version(),
		"policies", bundle.Len(), "files", bundle.Files(), "validated", bundle.Validated())
	return s, nil
}

// BundleVersion is the active bundle's content digest.
func (s *Service) BundleVersion() string { return s.bundle.Version() }

// Handlers returns the PolicyService handler to mount.
func (s *Service) Handlers() []rpcserver.Handler {
	path, h := policyv1connect.NewPolicyServiceHandler(s, connect.WithReadMaxBytes(maxRequestBytes))
	return []rpcserver.Handler{{Service: policyv1connect.PolicyServiceName, Path: path, Handler: h}}
}

// Close releases nothing today; it is here so every service stops the same way.
func (s *Service) Close(context.Context) error { return nil }

// Check implements policyv1connect.PolicyServiceHandler.
func (s *Service) Check(_ context.Context, req *connect.Request[policyv1.CheckRequest]) (*connect.Response[policyv1.CheckResponse], error) {
	resp, err := s.check(req.Msg)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(resp), nil
}

// check decides one request: validate, build the few entities it needs, evaluate, and for
// an allowed tools/call consume the tenant's quota.
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
	b := s.bundle
	resp := &policyv1.CheckResponse{Decision: policyv1.Decision_DECISION_DENY, BundleVersion: b.Version()}
	sub, res, action := req.GetSubject(), req.GetResource(), req.GetAction()

	srv, ok := s.servers.Server(res.GetServer())
	if !ok {
		return resp, nil // an unknown server is denied, not an error: callers learn nothing
	}
	entry := s.cache.server(srv)
	ents := requestEntities{sub: sub, server: entry.entity, bundle: b, cache: &s.princ}
	resource := entry.entity.UID
	if name := res.GetName(); name != "" {
		typ, _ := itemType(action) // validateRequest checked it
		ents.item = entry.item(typ, name)
		resource = ents.item.UID
	}
	decision, diag := b.Authorize(&ents, types.Request{
		Principal: types.NewEntityUID(cedarpolicy.TypePrincipal, types.String(sub.GetId())),
		Action:    types.NewEntityUID(cedarpolicy.TypeAction, types.String(action)),
		Resource:  resource,
	})
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
		s.logger.Warn("policy evaluation errors", "version", b.Version(), "action", action, "errors", resp.Errors)
	}
	if decision != types.Allow {
		return resp, nil
	}
	if s.quota != nil && action == toolsCall {
		if ok, wait := s.quota.take(sub.GetTenant()); !ok {
			return nil, &quotaError{tenant: sub.GetTenant(), retryAfter: wait}
		}
	}
	resp.Decision = policyv1.Decision_DECISION_ALLOW
	return resp, nil
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
