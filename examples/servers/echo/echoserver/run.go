// Package echoserver is the example echo MCP server (examples/servers/echo) as a package, so
// that `gatehouse example-server echo` runs the very same code.
package echoserver

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

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// config is the command line of the server.
type config struct {
	HTTPAddr     string
	AllowRemote  bool
	JSONResponse bool
	LogLevel     string
	Whoami       bool
	WhoamiEnv    string
	ExtraTools   int
}

// shutdownGrace bounds how long in-flight HTTP requests get once the server is
// asked to stop.
const shutdownGrace = 5 * time.Second

// Run runs the echo server with the command line args (stdio by default), logging to stderr,
// until ctx ends or, in stdio mode, stdin closes.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	return run(ctx, args, stderr)
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	var cfg config
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.HTTPAddr, "http", "", "serve Streamable HTTP at this host:port (path /mcp) instead of stdio")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow -http to bind a non-loopback address")
	fs.BoolVar(&cfg.JSONResponse, "json-response", false, "answer POSTs with application/json instead of an SSE stream")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&cfg.Whoami, "whoami", false, "add the whoami tool, which reports the Authorization header of each call (for testing what a gateway sends upstream)")
	fs.StringVar(&cfg.WhoamiEnv, "whoami-env", "", "comma-separated environment variables whoami also reports (needs -whoami)")
	fs.IntVar(&cfg.ExtraTools, "extra-tools", 0, fmt.Sprintf("register this many more small synthetic tools (tool_0001 …, at most %d), for measuring large lists", maxExtraTools))
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.ExtraTools < 0 || cfg.ExtraTools > maxExtraTools {
		return fmt.Errorf("-extra-tools %d: want 0 to %d", cfg.ExtraTools, maxExtraTools)
	}
	opts := options{Whoami: cfg.Whoami, ExtraTools: cfg.ExtraTools}
	for name := range strings.SplitSeq(cfg.WhoamiEnv, ",") {
		if name = strings.TrimSpace(name); name != "" {
			opts.WhoamiEnv = append(opts.WhoamiEnv, name)
		}
	}
	if len(opts.WhoamiEnv) > 0 && !opts.Whoami {
		return errors.New("-whoami-env needs -whoami")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	server := newServer(logger, opts)

	if cfg.HTTPAddr == "" {
		logger.Info("serving MCP over stdio")
		err := server.Run(ctx, &mcp.StdioTransport{})
		if err != nil && ctx.Err() == nil && !errors.Is(err, mcp.ErrConnectionClosed) && !errors.Is(err, io.EOF) {
			return fmt.Errorf("stdio: %w", err)
		}
		return nil
	}
	return serveHTTP(ctx, cfg, server, logger)
}

// serveHTTP serves the Streamable HTTP transport until ctx is done.
func serveHTTP(ctx context.Context, cfg config, server *mcp.Server, logger *slog.Logger) error {
	if err := checkBind(cfg.HTTPAddr, cfg.AllowRemote); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{JSONResponse: cfg.JSONResponse, Logger: logger}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	// Requests live under streamsCtx so that shutdown can end the standalone
	// SSE streams, which would otherwise hold it open until the grace period.
	streamsCtx, endStreams := context.WithCancel(context.WithoutCancel(ctx))
	defer endStreams()
	srv := &http.Server{
		Handler:           mux,
		BaseContext:       func(net.Listener) context.Context { return streamsCtx },
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("serving MCP over Streamable HTTP", "url", "http://"+ln.Addr().String()+"/mcp")

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	srv.RegisterOnShutdown(endStreams)
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// checkBind refuses addresses that would expose the server beyond this
// machine unless allowRemote is set. An empty host (":8080") means every
// interface, so it is refused too; names other than localhost are refused
// because what they resolve to can change.
func checkBind(addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-http %q: %w", addr, err)
	}
	if allowRemote || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("-http %q is not a loopback address (use -allow-remote to bind it anyway)", addr)
}
