package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log/slog"
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
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/devetcd"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
	"github.com/gatehouse-mcp/gatehouse/registrysvc"
)

// upConfig is single-process mode's configuration: the flags of `gatehouse up`.
type upConfig struct {
	ConfigFile    string
	DataDir       string
	DevToken      string
	PolicyDir     string
	LogLevel      string
	Ingress       ingress.Config
	StdioGrace    time.Duration
	InternalToken string
	DebugAddr     string
	QuotaRate     float64
	QuotaBurst    int
}

func up(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg upConfig
	fs := flag.NewFlagSet("gatehouse up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv("GATEHOUSE_" + name); v != "" {
			return v
		}
		return def
	}
	fs.StringVar(&cfg.ConfigFile, "config", env("CONFIG", ""), "YAML file listing the servers (see docs/configuration.md)")
	fs.StringVar(&cfg.Ingress.Listen, "listen", env("LISTEN", "127.0.0.1:8080"), "address to serve on")
	fs.StringVar(&cfg.DataDir, "data-dir", env("DATA_DIR", "data"), "directory for etcd and the audit log")
	fs.StringVar(&cfg.DevToken, "dev-token", env("DEV_TOKEN", ""), "API token for the dev principal (generated and printed when empty)")
	fs.StringVar(&cfg.PolicyDir, "policy-dir", env("POLICY_DIR", "examples/policies"), "directory of Cedar policies")
	fs.StringVar(&cfg.LogLevel, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error")
	fs.StringVar(&cfg.InternalToken, "internal-token", env("INTERNAL_TOKEN", ""), "token internal RPCs on the port require (random when empty)")
	fs.StringVar(&cfg.DebugAddr, "debug-addr", env("DEBUG_ADDR", ""), "serve net/http/pprof on this loopback address (off when empty)")
	fs.DurationVar(&cfg.StdioGrace, "stdio-grace", 2*time.Second, "how long a stdio child gets to exit at each shutdown step")
	fs.Float64Var(&cfg.QuotaRate, "quota-rate", 0, "tools/call per second per tenant (0: unlimited)")
	fs.IntVar(&cfg.QuotaBurst, "quota-burst", 0, "burst of the per-tenant quota")
	cfg.Ingress.RegisterGuardFlags(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	logger, err := newLogger(stderr, cfg.LogLevel)
	if err != nil {
		return err
	}
	file, err := loadConfig(cfg.ConfigFile)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Ingress.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	addr := ln.Addr().String()

	etcd, err := devetcd.Start(ctx, devetcd.Config{Dir: filepath.Join(cfg.DataDir, "etcd")})
	if err != nil {
		return err
	}
	defer etcd.Close()
	kv := etcd.Client

	registry, err := registrysvc.New(registrysvc.Config{KeyPrefix: "/gatehouse/registry/"}, kv, logger.With("svc", "registry"))
	if err != nil {
		return err
	}
	defer registry.Close(context.WithoutCancel(ctx))
	if err := registry.Seed(ctx, file.Servers); err != nil {
		return fmt.Errorf("seed registry: %w", err)
	}
	authCfg := authsvc.Config{
		KeyPrefix:          "/gatehouse/auth/",
		AnonymousServers:   strings.Join(file.Anonymous.Servers, ","),
		AnonymousPrincipal: cmp.Or(file.Anonymous.Principal, "anonymous"),
		AnonymousTenant:    cmp.Or(file.Anonymous.Tenant, "default"),
	}
	auth, err := authsvc.New(authCfg, kv, logger.With("svc", "auth"))
	if err != nil {
		return err
	}
	defer auth.Close(context.WithoutCancel(ctx))

	// Every service reads the registry through a watch-fed local snapshot.
	internalToken := cfg.InternalToken
	if internalToken == "" {
		internalToken = randomToken()
	}
	client := rpcserver.WithToken(rpcserver.NewClient(), internalToken)
	base := rpcserver.BaseURL(addr)
	cat := catalog.New()

	policy, err := policysvc.New(policysvc.Config{PolicyDir: cfg.PolicyDir, QuotaRate: cfg.QuotaRate, QuotaBurst: cfg.QuotaBurst}, cat, logger.With("svc", "policy"))
	if err != nil {
		return err
	}
	defer policy.Close(context.WithoutCancel(ctx))
	// Deferred closes run in reverse: the bridge ends upstream calls first, so in-flight
	// handlers finish and commit their audit records before the audit log closes.
	audit, err := auditsvc.New(auditsvc.Config{Dir: filepath.Join(cfg.DataDir, "audit"), MaxBatch: 256}, logger.With("svc", "audit"))
	if err != nil {
		return err
	}
	defer audit.Close(context.WithoutCancel(ctx))
	bridge, err := bridgesvc.New(bridgesvc.Config{StdioGrace: cfg.StdioGrace, MaxChildren: 256, MaxMessageBytes: 16 << 20, StateDir: filepath.Join(cfg.DataDir, "bridge")}, cat, logger.With("svc", "bridge"))
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
	}, logger.With("svc", "ingress"))
	if err != nil {
		return err
	}

	var handlers []rpcserver.Handler
	for _, h := range [][]rpcserver.Handler{auth.Handlers(), policy.Handlers(), registry.Handlers(), bridge.Handlers(), audit.Handlers()} {
		handlers = append(handlers, h...)
	}
	internal := rpcserver.NewMux(handlers...)
	mux := http.NewServeMux()
	public := in.Handler()
	mux.Handle("/servers/", public)
	mux.Handle("/healthz", public)
	mux.Handle("/", rpcserver.RequireToken(internalToken, internal))
	srv := ingress.NewHTTPServer(mux, cfg.Ingress)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.DebugAddr != "" {
		if err := serveDebug(runCtx, cfg.DebugAddr, logger); err != nil {
			return err
		}
	}
	served := make(chan error, 1)
	go func() { served <- rpcserver.Serve(runCtx, ln, srv, internal, 10*time.Second, logger) }()
	go cat.Follow(runCtx, registryv1connect.NewRegistryServiceClient(client, base), logger.With("svc", "catalog"))
	go sessions.Watch(runCtx, func(id string) { go bridge.EndSession(id) })

	readyCtx, readyCancel := context.WithTimeout(runCtx, 30*time.Second)
	err = cat.WaitReady(readyCtx)
	readyCancel()
	if err != nil {
		cancel()
		<-served
		return fmt.Errorf("registry snapshot: %w", err)
	}
	token, err := devToken(runCtx, auth, cfg.DevToken)
	if err != nil {
		cancel()
		<-served
		return err
	}
	in.SetReady(true)
	context.AfterFunc(runCtx, func() { in.SetReady(false) })
	fmt.Fprintf(stdout, "Gatehouse is up on http://%s\n", addr)
	for _, s := range cat.Servers() {
		fmt.Fprintf(stdout, "  server %-20s http://%s/servers/%s/mcp\n", s.GetName(), addr, s.GetName())
	}
	fmt.Fprintf(stdout, "  dev token (principal dev, tenant default): %s\n", token)
	logger.Info("ready", "addr", addr, "servers", len(cat.Servers()))
	return <-served
}

// devToken registers the dev principal's token: the given one, or a new one.
func devToken(ctx context.Context, auth authv1connect.AuthServiceClient, token string) (string, error) {
	resp, err := auth.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{
		PrincipalId: "dev", Tenant: "default", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER, Token: token,
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

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}
