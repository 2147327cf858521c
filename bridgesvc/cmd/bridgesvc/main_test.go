package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1/bridgev1connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/stdio/stdiotest"
)

func TestMain(m *testing.M) {
	stdiotest.Run()
	os.Exit(m.Run())
}

// registry serves one snapshot on WatchServers and then holds the stream open.
type registry struct {
	registryv1connect.UnimplementedRegistryServiceHandler
	servers []*registryv1.Server
}

func (r *registry) WatchServers(ctx context.Context, _ *connect.Request[registryv1.WatchServersRequest], stream *connect.ServerStream[registryv1.WatchServersResponse]) error {
	if err := stream.Send(&registryv1.WatchServersResponse{Snapshot: true, Servers: r.servers}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunSplitMode runs the binary's run: it follows a registry, serves the bridge over h2c,
// and reaps its children when stopped.
func TestRunSplitMode(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	reg := &registry{servers: []*registryv1.Server{{Name: "fake", Transport: registryv1.Transport_TRANSPORT_STDIO, Command: []string{exe}, Env: map[string]string{stdiotest.EnvMode: "server"}}}}
	path, h := registryv1connect.NewRegistryServiceHandler(reg)
	regSrv := httptest.NewUnstartedServer(rpcserver.NewMux(rpcserver.Handler{Service: registryv1connect.RegistryServiceName, Path: path, Handler: h}))
	regSrv.Config.Protocols = rpcserver.Protocols()
	regSrv.Start()
	t.Cleanup(regSrv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	env := map[string]string{"GATEHOUSE_BRIDGE_REGISTRY_ADDR": regSrv.Listener.Addr().String(), "GATEHOUSE_INTERNAL_TOKEN": "test-internal-token"}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-stdio-grace", "200ms"}, func(k string) string { return env[k] }, &out)
	}()

	addr := servingAddr(t, &out, done)
	client := bridgev1connect.NewBridgeServiceClient(rpcserver.WithToken(rpcserver.NewClient(), "test-internal-token"), rpcserver.BaseURL(addr))
	var pid int
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Until the catalogue's first snapshot lands the bridge answers Unavailable.
		pid, err = callPID(ctx, client)
		if err == nil || connect.CodeOf(err) != connect.CodeUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("child %d still there after run returned: %v", pid, err)
	}
}

func servingAddr(t *testing.T, out *syncBuffer, done chan error) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(out.String(), "\n") {
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving" {
				return rec.Addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("no serving line in %s", out.String())
	return ""
}

func callPID(ctx context.Context, client bridgev1connect.BridgeServiceClient) (int, error) {
	stream, err := client.Send(ctx, connect.NewRequest(&bridgev1.SendRequest{
		SessionId: "s", Server: "fake",
		Message: []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pid"}}`),
	}))
	if err != nil {
		return 0, err
	}
	defer stream.Close()
	var last []byte
	for stream.Receive() {
		last = stream.Msg().GetMessage()
	}
	if err := stream.Err(); err != nil {
		return 0, err
	}
	var resp struct {
		Result struct {
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"result"`
	}
	if err := json.Unmarshal(last, &resp); err != nil || len(resp.Result.Content) == 0 {
		return 0, errors.New("no pid in " + string(last))
	}
	return strconv.Atoi(resp.Result.Content[0].Text)
}

func TestRunNeedsRegistry(t *testing.T) {
	err := run(context.Background(), []string{"-insecure-no-internal-token-dev"}, func(string) string { return "" }, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "registry-addr") {
		t.Fatalf("run = %v", err)
	}
}
