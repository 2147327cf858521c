package bridgesvc_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1/bridgev1connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

// newLoggedBridge is newBridge with the bridge's log kept for the test to read.
func newLoggedBridge(t *testing.T, cfg bridgesvc.Config, cat bridgesvc.Catalog) (*bridge, *testsync.Buffer) {
	t.Helper()
	if cfg.StdioGrace == 0 {
		cfg.StdioGrace = 200 * time.Millisecond
	}
	logs := &testsync.Buffer{}
	svc, err := bridgesvc.New(cfg, cat, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rpcserver.NewMux(svc.Handlers()...))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := svc.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		srv.Close()
	})
	return &bridge{svc: svc, client: bridgev1connect.NewBridgeServiceClient(srv.Client(), srv.URL)}, logs
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestHostVisibleErrors: what the bridge returns names no path, URL, address or upstream
// body; the bridge's log has them, with the session and the server.
func TestHostVisibleErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "private-dir", "no-such-server")
	dead := closedPort(t)
	deadURL := "http://" + dead + "/mcp?api_key=s3cr3t-token"
	const body = "Traceback (most recent call last): psycopg2.OperationalError: postgres://admin:hunter2@db.internal:5432/prod"
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, body, http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	failingURL := failing.URL + "/mcp?tenant_secret=pw-in-query"

	b, logs := newLoggedBridge(t, bridgesvc.Config{}, static(
		&registryv1.Server{Name: "missing", Transport: registryv1.Transport_TRANSPORT_STDIO, Command: []string{missing}},
		&registryv1.Server{Name: "dead", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: deadURL},
		&registryv1.Server{Name: "failing", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: failingURL},
	))
	tests := []struct {
		server  string
		code    connect.Code
		reason  string
		secrets []string // in the log, never in the error
		hidden  []string // never in the error
	}{
		{server: "missing", code: connect.CodeFailedPrecondition, reason: "the upstream could not be started", secrets: []string{missing, "private-dir"}},
		{server: "dead", code: connect.CodeUnavailable, reason: "the upstream could not be reached", secrets: []string{"s3cr3t-token", dead}},
		{server: "failing", code: connect.CodeUnavailable, reason: "the upstream answered HTTP 500", secrets: []string{"hunter2", "postgres://", "Traceback"}, hidden: []string{"pw-in-query", failing.Listener.Addr().String()}},
	}
	for _, tc := range tests {
		t.Run(tc.server, func(t *testing.T) {
			_, err := b.send(t, "session-"+tc.server, tc.server, initializeReq)
			wantCode(t, err, tc.code, tc.reason)
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Message() != tc.reason {
				t.Fatalf("error message = %q, want exactly %q", ce.Message(), tc.reason)
			}
			for _, s := range append(append(tc.secrets, tc.hidden...), "127.0.0.1", "http://", "/mcp") {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the host-visible error %q holds %q", err, s)
				}
			}
			log := logs.String()
			for _, s := range tc.secrets {
				if !strings.Contains(log, s) {
					t.Errorf("the bridge's log lacks %q:\n%s", s, log)
				}
			}
			if !strings.Contains(log, "server="+tc.server) {
				t.Errorf("the bridge's log does not name server %s:\n%s", tc.server, log)
			}
		})
	}
}
