// Package svcmain is the one skeleton of Gatehouse's split-mode binaries: flags with
// GATEHOUSE_<SVC>_<FLAG> environment fallbacks, one JSON logger keyed by `svc`, the internal
// token from the environment or a file (required unless a loudly logged development flag
// says otherwise), traces exported as the OTEL_* environment says (internal/telemetry),
// etcd through internal/etcdclient, and an ordered shutdown through internal/rpcserver
// (NOT_SERVING, drain, then a hard stop). Each <svc>/cmd/<svc>/main.go
// is a Spec and a call to Main.
package svcmain

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/etcdclient"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Common flag names, the same in every service.
const (
	FlagListen          = "listen"
	FlagDrain           = "drain"
	FlagLogLevel        = "log-level"
	FlagInsecureNoToken = "insecure-no-internal-token-dev"
)

// DefaultDrain is how long in-flight requests get at shutdown; maxDrain bounds it.
const (
	DefaultDrain = 10 * time.Second
	maxDrain     = 10 * time.Minute
)

// Etcd says whether a service uses etcd.
type Etcd int

// How a service uses etcd.
const (
	NoEtcd       Etcd = iota
	EtcdRequired      // the service cannot run without it
	EtcdOptional      // used when --etcd-endpoints is set
)

// Spec describes one service binary.
type Spec struct {
	// Name is the service's short name: the `svc` log key and, upper-cased, the
	// environment prefix GATEHOUSE_<NAME>_ (auth, policy, registry, bridge, audit, ingress).
	Name string
	// Flags registers the service's own flags (its Config's RegisterFlags), including
	// --listen with its default port. Main applies the environment fallbacks, to every
	// flag alike.
	Flags func(fs *flag.FlagSet)
	// Etcd says whether the service dials etcd.
	Etcd Etcd
	// OneShot, when set, runs once the flags are parsed; if it reports done, Main returns
	// without a token, etcd or serving (auditsvc -verify).
	OneShot func(stdout io.Writer) (done bool, err error)
	// Build makes the service once flags, logger, token and etcd are ready, and returns
	// what to serve.
	Build func(ctx context.Context, env *Env) (*Serving, error)
}

// Env is what Build gets.
type Env struct {
	Logger *slog.Logger
	// Token is the internal token, "" only with --insecure-no-internal-token-dev.
	Token string
	// Etcd is the connected client, nil if the service does not use etcd (or, optional, it
	// is not configured). Main closes it after the service.
	Etcd *clientv3.Client
	// Client is an HTTP client for calls to other services, sending the internal token.
	Client *http.Client
	// Stdout is where usage and one-shot output go.
	Stdout io.Writer
	// Metrics is the process's registry, served at /metrics on the service's port; the
	// service registers its own metrics on it.
	Metrics *prometheus.Registry
	// MetricsToken is the bearer token a scrape must carry (telemetry.MetricsTokenEnv); ""
	// answers loopback peers only.
	MetricsToken string
}

// Serving is what a built service serves and how it stops.
type Serving struct {
	// Handlers are mounted with gRPC health and reflection, behind the internal token.
	Handlers []rpcserver.Handler
	// Handler, when set, is served instead (the ingress's public surface): no internal
	// token, no health service.
	Handler http.Handler
	// NewServer, when set, makes the http.Server for what is served (its timeouts and
	// limits); nil means rpcserver.NewServer.
	NewServer func(http.Handler) *http.Server
	// Stopping runs when shutdown begins, before the drain: end long-lived streams, mark
	// the service not ready.
	Stopping func()
	// Close runs after the server has stopped, with a deadline of the drain timeout.
	Close func(ctx context.Context) error
	// LogAttrs are added to the "serving" log line.
	LogAttrs []any
	// CallerAuth, when set, opens the procedures in OpenToCallers to callers with a bearer
	// credential of their own, authenticated by it (rpcserver.Guard); every procedure still
	// takes the internal token.
	CallerAuth    rpcserver.Authenticate
	OpenToCallers map[string]bool
}

// Main runs a service binary: parse args (the environment filling flags not given), log,
// read the internal token, dial etcd, build, serve until ctx ends, then stop in order.
// -h prints usage to stdout and returns nil.
func Main(ctx context.Context, spec Spec, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet(spec.Name, flag.ContinueOnError)
	fs.SetOutput(stdout)
	prefix := "GATEHOUSE_" + strings.ToUpper(spec.Name) + "_"
	fs.Usage = func() {
		fmt.Fprintf(stdout, "usage of %s (every flag also reads %s<FLAG>; the internal token comes from %s or %s_FILE):\n", spec.Name, prefix, InternalTokenEnv, InternalTokenEnv)
		fs.PrintDefaults()
	}
	if spec.Flags != nil {
		spec.Flags(fs)
	}
	if fs.Lookup(FlagListen) == nil {
		return fmt.Errorf("%s: its flags declare no --%s", spec.Name, FlagListen)
	}
	drain := fs.Duration(FlagDrain, DefaultDrain, "how long in-flight requests get at shutdown before they are cut")
	level := fs.String(FlagLogLevel, "info", "debug, info, warn or error")
	noToken := fs.Bool(FlagInsecureNoToken, false, "DEVELOPMENT ONLY: serve internal RPCs without the internal token, to anyone who can reach the port")
	var etcdCfg etcdclient.Config
	if spec.Etcd != NoEtcd {
		if spec.Etcd == EtcdRequired {
			etcdCfg.Endpoints = etcdclient.DefaultEndpoints
		}
		etcdCfg.RegisterFlags(fs)
	}
	if help, err := Parse(fs, args, prefix, getenv); help || err != nil {
		return err
	}
	if *drain <= 0 || *drain > maxDrain {
		return fmt.Errorf("--%s %v: must be above 0 and at most %v", FlagDrain, *drain, maxDrain)
	}
	if spec.OneShot != nil {
		if done, err := spec.OneShot(stdout); done || err != nil {
			return err
		}
	}
	logger, err := NewLogger(stdout, *level)
	if err != nil {
		return err
	}
	logger = logger.With("svc", spec.Name)
	stopTracing, err := telemetry.Setup(ctx, "gatehouse-"+spec.Name, getenv)
	if err != nil {
		return err
	}
	defer func() {
		// The spans of the last requests are flushed after the drain, within its bound.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), *drain)
		defer cancel()
		if err := stopTracing(fctx); err != nil {
			logger.Warn("traces not flushed", "err", err)
		}
	}()
	token, err := InternalToken(getenv)
	if err != nil {
		return err
	}
	if token == "" && !*noToken {
		return fmt.Errorf("no internal token: set %s or %s_FILE (the same for every service), or --%s for development", InternalTokenEnv, InternalTokenEnv, FlagInsecureNoToken)
	}
	if token == "" {
		logger.Warn("DEVELOPMENT MODE: no internal token (--" + FlagInsecureNoToken + "): anyone who can reach the port can call this service's RPCs")
	}
	metricsToken, err := ReadSecret(getenv, telemetry.MetricsTokenEnv)
	if err != nil {
		return err
	}
	env := &Env{Logger: logger, Token: token, Client: rpcserver.WithToken(rpcserver.NewClient(), token), Stdout: stdout,
		Metrics: telemetry.NewRegistry(), MetricsToken: metricsToken}
	if spec.Etcd == EtcdRequired || spec.Etcd == EtcdOptional && len(etcdCfg.EndpointList()) > 0 {
		kv, err := etcdclient.Dial(etcdCfg, logger)
		if err != nil {
			return err
		}
		defer kv.Close()
		env.Etcd = kv
	}
	serving, err := spec.Build(ctx, env)
	if err != nil {
		return err
	}
	return serve(ctx, fs.Lookup(FlagListen).Value.String(), *drain, env, serving)
}

// serve listens and serves until ctx ends, then: NOT_SERVING, Stopping, a drain of at most
// drain, a hard stop, and Close.
func serve(ctx context.Context, addr string, drain time.Duration, env *Env, s *Serving) (err error) {
	if s.Close != nil {
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
			defer cancel()
			err = errors.Join(err, s.Close(cctx))
		}()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	newServer := s.NewServer
	if newServer == nil {
		newServer = rpcserver.NewServer
	}
	var mux *rpcserver.Mux
	var h http.Handler
	if s.Handler != nil {
		h = s.Handler
	} else {
		mux = rpcserver.NewMux(s.Handlers...)
		if s.CallerAuth != nil {
			h = rpcserver.Guard(env.Token, s.CallerAuth, s.OpenToCallers, mux)
		} else {
			h = rpcserver.RequireToken(env.Token, mux)
		}
	}
	// /metrics is outside the internal token: Prometheus gets the metrics token, never the
	// key to every internal RPC.
	srv := newServer(telemetry.WithMetrics(h, env.Metrics, env.MetricsToken))
	env.Logger.Info("serving", append([]any{"addr", ln.Addr().String()}, s.LogAttrs...)...)
	return rpcserver.ServeUntil(ctx, ln, srv, rpcserver.Shutdown{Mux: mux, Stopping: s.Stopping, Drain: drain}, env.Logger)
}

// NewLogger is the JSON logger every Gatehouse process writes; a line logged with a context
// holding a span carries its trace_id and span_id (telemetry.LogHandler).
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	return slog.New(telemetry.LogHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))), nil
}

// Parse parses args into fs, refuses arguments left over, and then applies the environment
// fallbacks (prefix + FLAG) to every flag not given; help is true when -h was asked for (its
// usage is printed, and the caller stops without an error).
func Parse(fs *flag.FlagSet, args []string, prefix string, getenv func(string) string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, err
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return false, ApplyEnv(fs, prefix, getenv)
}
