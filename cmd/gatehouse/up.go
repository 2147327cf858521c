package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	"github.com/gatehouse-mcp/gatehouse/authsvc"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/devetcd"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
	"github.com/gatehouse-mcp/gatehouse/registrysvc"
	"github.com/prometheus/client_golang/prometheus"
)

// Secrets of `gatehouse up`, read from the environment or a file (svcmain.ReadSecret), never
// from flags: a command line is readable by every local user.
const devTokenEnv = "GATEHOUSE_DEV_TOKEN"

// auditPostgresDSNEnv holds the connection string of --audit-store postgres when
// --audit-postgres-dsn-file is not given (or, with _FILE, names a file holding it).
const auditPostgresDSNEnv = "GATEHOUSE_AUDIT_POSTGRES_DSN"

// upConfig is single-process mode's configuration: the flags of `gatehouse up`, and the
// services' configurations, whose flags (and defaults) are the services' own.
type upConfig struct {
	ConfigFile string
	DataDir    string
	PolicyDir  string
	LogLevel   string
	DebugAddr  string
	NoMetrics  bool
	Ingress    ingress.Config
	Auth       authsvc.Config
	Registry   registrysvc.Config
	Policy     policysvc.Config
	Bridge     bridgesvc.Config
	Audit      auditsvc.Config
}

// registerFlags declares up's flags on fs: its own, the ingress's guard flags, and every
// flag of the other services except those single-process mode sets itself (addresses, etcd,
// key prefixes, files and directories it derives from --config and --data-dir). A service's
// flag that clashes with one already declared gets the service's name as a prefix
// (--audit-max-batch).
func (c *upConfig) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ConfigFile, "config", "", "YAML file listing the servers (see docs/configuration.md; default: the embedded example)")
	fs.StringVar(&c.Ingress.Listen, "listen", "127.0.0.1:8080", "address to serve on")
	fs.StringVar(&c.DataDir, "data-dir", "data", "directory for etcd and the audit log")
	fs.StringVar(&c.PolicyDir, "policy-dir", "", "directory of Cedar policies and their schema, applied at start as gatehouse policy apply would (default: the bundle last applied, else the embedded examples/policies, written to <data-dir>/default-policies)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.DebugAddr, "debug-addr", "", "serve net/http/pprof on this loopback address (off when empty)")
	fs.BoolVar(&c.NoMetrics, "no-metrics", false, "count nothing and serve no /metrics (to measure what metrics cost a call)")
	c.Ingress.RegisterGuardFlags(fs)
	set := []string{"listen", "registry-addr", "key-prefix"}
	// The bridge's metrics bound is the ingress's --metrics-max-servers.
	svcmain.Import(fs, c.Bridge.RegisterFlags, "bridge", append(set, "auth-addr", "audit-addr", "metrics-max-servers")...)
	// The quotas are the config file's quotas: section.
	svcmain.Import(fs, c.Policy.RegisterFlags, "policy", append(set, "policy-dir", "auth-addr", "quota-config")...)
	// The alert rules are the config file's alerts: section.
	// The audit store's flags read as the audit log's (--audit-store postgres
	// --audit-postgres-dsn-file F), not as up's own: registered under the prefix.
	auditStore := []string{"store", "postgres-dsn-file", "postgres-conns", "postgres-timeout"}
	svcmain.Import(fs, c.Audit.RegisterFlags, "audit", append(append(set, "dir", "auth-addr", "policy-addr", "alert-config"), auditStore...)...)
	svcmain.ImportPrefixed(fs, c.Audit.RegisterFlags, "audit", auditStore...)
	svcmain.Import(fs, c.Registry.RegisterFlags, "registry", append(set, "servers", "auth-addr", "policy-addr", "audit-addr")...)
	// Anonymous access comes from the config file.
	svcmain.Import(fs, c.Auth.RegisterFlags, "auth", append(set, "anonymous-servers", "anonymous-principal", "anonymous-tenant", "policy-addr")...)
}

func up(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg upConfig
	fs := flag.NewFlagSet("gatehouse up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: gatehouse up [flags]\n\nEvery flag also reads GATEHOUSE_<FLAG> (GATEHOUSE_DATA_DIR). Secrets come from the\nenvironment or a file: %s[_FILE] (the dev principal's token),\n%s[_FILE] (the internal RPCs' token; random when unset),\n%s[_FILE] (the bearer token of /metrics; unset: loopback scrapes only),\n%s[_FILE] (the connection string of --audit-store postgres).\n\n", devTokenEnv, svcmain.InternalTokenEnv, telemetry.MetricsTokenEnv, auditPostgresDSNEnv)
		fs.PrintDefaults()
	}
	cfg.registerFlags(fs)
	if help, err := svcmain.Parse(fs, args, "GATEHOUSE_", getenv); help || err != nil {
		return err
	}
	logger, err := svcmain.NewLogger(stderr, cfg.LogLevel)
	if err != nil {
		return err
	}
	// One provider for every service of the process: their spans share the service.name.
	stopTracing, err := telemetry.Setup(ctx, "gatehouse", getenv)
	if err != nil {
		return err
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := stopTracing(fctx); err != nil {
			logger.Warn("traces not flushed", "err", err)
		}
	}()
	metricsToken, err := svcmain.ReadSecret(getenv, telemetry.MetricsTokenEnv)
	if err != nil {
		return err
	}
	devTokenValue, err := svcmain.ReadSecret(getenv, devTokenEnv)
	if err != nil {
		return err
	}
	internalToken, err := svcmain.InternalToken(getenv)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary: %w", err)
	}
	file, err := loadConfig(cfg.ConfigFile, self)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// A directory named at start is applied: stored in etcd like a bundle from `gatehouse policy
	// apply`, so the two are one mechanism and the last one applied decides. The embedded
	// default is only a fallback for a data dir where nothing was ever applied: stored, it
	// would outlive the binary that brought it.
	applyDir := cfg.PolicyDir != ""
	if !applyDir {
		if cfg.PolicyDir, err = writeDefaultPolicies(filepath.Join(cfg.DataDir, "default-policies")); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", cfg.Ingress.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	addr := ln.Addr().String()

	// In-process: no listener at all, so nothing but this process reaches etcd.
	etcd, err := devetcd.Start(ctx, devetcd.Config{Dir: filepath.Join(cfg.DataDir, "etcd"), InProcess: true})
	if err != nil {
		return err
	}
	defer etcd.Close()
	kv := etcd.Client

	// policysvc, made below, decides other teams' and operators' requests to the registry
	// and authsvc.
	var policy *policysvc.Service
	askPolicy := func(ctx context.Context, p *authv1.Principal, action, tenant string) error {
		return rpcserver.PolicyAuthorizer(policy)(ctx, p, action, tenant)
	}
	// Deferred closes run in reverse: the bridge ends upstream calls first, so in-flight
	// handlers finish and commit their audit records before the audit log closes (and the
	// registry, which records quarantines and approvals, closes before it too).
	// One registry for every service of the process, served at /metrics on the one port;
	// with --no-metrics none, and every service counts nothing.
	var metrics *prometheus.Registry
	var registerer prometheus.Registerer // nil, not a nil *Registry, when metrics are off
	if !cfg.NoMetrics {
		metrics = telemetry.NewRegistry()
		registerer = metrics
	}
	cfg.Audit.Dir = filepath.Join(cfg.DataDir, "audit")
	cfg.Audit.AlertFile = cfg.ConfigFile // its alerts: section (none in the embedded default)
	// Laptop mode keeps the key that signs the audit log's checkpoints under the data
	// directory but outside the audit directory (minted on first start): it shows a change
	// made through the audit files alone; a deployment gives --audit-signing-key-file from
	// elsewhere. The latest checkpoint is anchored in the embedded etcd.
	if cfg.Audit.SigningKeyFile == "" {
		cfg.Audit.SigningKeyFile = filepath.Join(cfg.DataDir, "keys", auditKeyFile)
		if _, err := auditsvc.EnsureSigningKey(cfg.Audit.SigningKeyFile); err != nil {
			return err
		}
	}
	cfg.Audit.Authorize = askPolicy // operators' Verify, Query and Tail
	if cfg.Audit.Store == auditsvc.StorePostgres && cfg.Audit.PostgresDSNFile == "" {
		// The DSN is a secret: --audit-postgres-dsn-file, or the environment.
		if cfg.Audit.PostgresDSN, err = svcmain.ReadSecret(getenv, auditPostgresDSNEnv); err != nil {
			return err
		}
	}
	audit, err := auditsvc.New(cfg.Audit, logger.With("svc", "audit"), auditsvc.WithAnchor(auditsvc.NewEtcdAnchor(kv, auditsvc.AnchorKeyFor(cfg.Audit.KeyPrefix, cfg.Audit.Store))), auditsvc.WithMetrics(registerer))
	if err != nil {
		return err
	}
	defer audit.Close(context.WithoutCancel(ctx))
	regCfg := cfg.Registry
	regCfg.Authorize = askPolicy
	regCfg.Audit = audit
	registry, err := registrysvc.New(regCfg, kv, logger.With("svc", "registry"))
	if err != nil {
		return err
	}
	defer registry.Close(context.WithoutCancel(ctx))
	if err := registry.Seed(ctx, file.Servers); err != nil {
		return fmt.Errorf("seed registry: %w", err)
	}
	authCfg := cfg.Auth
	authCfg.Authorize = askPolicy // operators' admin requests
	authCfg.AnonymousServers = strings.Join(file.Anonymous.Servers, ",")
	authCfg.AnonymousPrincipal = cmp.Or(file.Anonymous.Principal, authsvc.DefaultAnonymousPrincipal)
	authCfg.AnonymousTenant = cmp.Or(file.Anonymous.Tenant, authsvc.DefaultAnonymousTenant)
	auth, err := authsvc.New(authCfg, kv, logger.With("svc", "auth"))
	if err != nil {
		return err
	}
	defer auth.Close(context.WithoutCancel(ctx))

	// Every service reads the registry through a watch-fed local snapshot.
	generatedInternal := internalToken == ""
	if generatedInternal {
		internalToken = randomToken()
	}
	// The services' own RPCs (the catalog's follow of the registry) go through an in-memory
	// listener serving the same internal mux, not the public one, which may speak TLS and ask
	// hosts for client certificates.
	pipe := rpcserver.NewPipeListener()
	defer pipe.Close()
	client := rpcserver.WithToken(pipe.Client(), internalToken)
	const base = "http://gatehouse.internal"
	cat := catalog.New()

	cfg.Policy.PolicyDir, cfg.Policy.ApplyDir = cfg.PolicyDir, applyDir
	cfg.Policy.QuotaFile = cfg.ConfigFile // its quotas: section (none in the embedded default)
	policy, err = policysvc.New(cfg.Policy, cat, kv, logger.With("svc", "policy"))
	if err != nil {
		return err
	}
	defer policy.Close(context.WithoutCancel(ctx))
	if cfg.Bridge.StateDir == "" {
		// The bridge records its stdio children here, so a start after a crash ends them.
		cfg.Bridge.StateDir = filepath.Join(cfg.DataDir, "bridge")
	}
	// The bridge mints gateway-jwt tokens with authsvc in this process, and records its
	// circuit breakers' transitions in its audit log.
	cfg.Bridge.MetricsMaxServers = cfg.Ingress.Metrics.MaxServers
	bridge, err := bridgesvc.New(cfg.Bridge, cat, logger.With("svc", "bridge"), bridgesvc.WithUpstreamTokens(auth), bridgesvc.WithAudit(audit), bridgesvc.WithMetrics(registerer))
	if err != nil {
		return err
	}
	defer bridge.Close(context.WithoutCancel(ctx))

	sessions := sessionstore.New(kv, sessionstore.DefaultPrefix, cfg.Ingress.SessionTTL, logger.With("svc", "sessions"))
	// Sessions of an earlier run died with its stdio children and upstream connections.
	if n, err := sessions.Reset(ctx); err != nil {
		return err
	} else if n > 0 {
		logger.Info("ended sessions of the previous run", "sessions", n)
	}
	// Same code as split mode, wired in-process: the services' handlers satisfy the client
	// interfaces the ingress takes, so the hot path pays for no serialization or socket.
	in, err := ingress.New(cfg.Ingress, ingress.Deps{
		Auth:     auth,
		Policy:   policy,
		Bridge:   bridge,
		Audit:    audit,
		Catalog:  cat,
		Sessions: sessions,
		Registry: registry,
		Metrics:  registerer,
		// The ingress calls the handlers themselves: no RPC, so no client spans around them.
		InProcess: true,
	}, logger.With("svc", "ingress"))
	if err != nil {
		return err
	}
	// Before the audit log closes (defers run in reverse): the refusals by quota counted so
	// far are written.
	defer in.Close(context.WithoutCancel(ctx))

	var handlers []rpcserver.Handler
	for _, h := range [][]rpcserver.Handler{auth.Handlers(), policy.Handlers(), registry.Handlers(), bridge.Handlers(), audit.Handlers()} {
		handlers = append(handlers, h...)
	}
	internal := rpcserver.NewMux(handlers...)
	mux := http.NewServeMux()
	public := in.Handler()
	mux.Handle("/servers/", public)
	mux.Handle("/mcp", public)
	mux.Handle("/healthz", public)
	// Public like /healthz, but answered only with the metrics token (or, without one, to
	// loopback peers): the metrics name tenants, servers and tools (telemetry.Handler).
	if metrics != nil {
		mux.Handle("GET /metrics", telemetry.Handler(metrics, metricsToken))
	} else {
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "metrics are off (gatehouse up --no-metrics)", http.StatusNotFound)
		})
	}
	mux.Handle("/.well-known/oauth-protected-resource", public)
	mux.Handle("/.well-known/oauth-protected-resource/", public)
	mux.Handle("/.well-known/jwks.json", public)
	// The services' RPCs need the internal token, except policysvc's Check, which other
	// teams' services may call with their own credential (Cedar decides which tenants they
	// may ask about).
	callerAuth := rpcserver.AuthenticateWith(auth)
	// And the admin RPCs, which operators call with their own credential (Cedar decides).
	openToCallers := map[string]bool{policyv1connect.PolicyServiceCheckProcedure: true, policyv1connect.PolicyServiceApplyBundleProcedure: true}
	for _, p := range authsvc.AdminProcedures {
		openToCallers[p] = true
	}
	openToCallers[registryv1connect.RegistryServiceGetServerProcedure] = true
	openToCallers[registryv1connect.RegistryServiceListServersProcedure] = true
	openToCallers[registryv1connect.RegistryServiceApproveToolsProcedure] = true
	openToCallers[registryv1connect.RegistryServiceImportServersProcedure] = true
	openToCallers[auditv1connect.AuditServiceVerifyProcedure] = true
	openToCallers[auditv1connect.AuditServiceQueryProcedure] = true
	openToCallers[auditv1connect.AuditServiceTailProcedure] = true
	mux.Handle("/", rpcserver.Guard(internalToken, callerAuth, openToCallers, internal))
	srv := in.HTTPServer(mux)
	scheme := "http" // read before serving: net/http gives TLSConfig a value of its own
	if srv.TLSConfig != nil {
		scheme = "https"
	}
	pipeSrv := rpcserver.NewServer(rpcserver.RequireToken(internalToken, internal))
	go func() { _ = pipeSrv.Serve(pipe) }()
	defer pipeSrv.Close()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.DebugAddr != "" {
		if err := serveDebug(runCtx, cfg.DebugAddr, logger); err != nil {
			return err
		}
	}
	served := make(chan error, 1)
	// As in split mode, the stop marks the gateway not ready (which ends the GET streams)
	// before the drain, instead of leaving the streams to hold it to its deadline.
	stop := rpcserver.Shutdown{Mux: internal, Stopping: func() { in.SetReady(false); audit.EndTails() }, Drain: 10 * time.Second}
	go func() { served <- rpcserver.ServeUntil(runCtx, ln, srv, stop, logger) }()
	go cat.Follow(runCtx, registryv1connect.NewRegistryServiceClient(client, base), logger.With("svc", "catalog"))
	go sessions.Watch(runCtx, func(id string) { go bridge.EndSession(id) })
	go in.FollowRevocations(runCtx)

	readyCtx, readyCancel := context.WithTimeout(runCtx, 30*time.Second)
	err = cat.WaitReady(readyCtx)
	readyCancel()
	if err != nil {
		cancel()
		<-served
		return fmt.Errorf("registry snapshot: %w", err)
	}
	token, err := devToken(runCtx, auth, devTokenValue)
	if err != nil {
		cancel()
		<-served
		return err
	}
	in.SetReady(true)
	if runCtx.Err() != nil {
		in.SetReady(false) // the stop began before this line and its Stopping already ran
	}
	fmt.Fprintf(stdout, "Gatehouse is up on %s://%s\n", scheme, addr)
	fmt.Fprintf(stdout, "  every server you may use  %s://%s/mcp\n", scheme, addr)
	for _, s := range cat.Servers() {
		fmt.Fprintf(stdout, "  server %-20s %s://%s/servers/%s/mcp\n", s.GetName(), scheme, addr, s.GetName())
	}
	fmt.Fprintf(stdout, "  dev token (principal dev, tenant default, group %s): %s\n", authsvc.AdminGroup, token)
	fmt.Fprintf(stdout, "  gatehouse token and gatehouse policy apply: GATEHOUSE_ADMIN_TOKEN=<the dev token>\n")
	logger.Info("ready", "addr", addr, "servers", len(cat.Servers()))
	return <-served
}

// devToken registers the dev principal's token: the given one, or a new one.
func devToken(ctx context.Context, auth *authsvc.Service, token string) (string, error) {
	resp, err := auth.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{
		PrincipalId: "dev", Tenant: "default", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER, Token: token,
		Groups: []string{authsvc.AdminGroup}, // the dev principal administers its own gateway
	}))
	if connect.CodeOf(err) == connect.CodeAlreadyExists && token != "" {
		return token, nil // the data dir already holds this dev token
	}
	if err != nil {
		return "", fmt.Errorf("create dev token: %w", err)
	}
	return resp.Msg.GetToken(), nil
}

func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
