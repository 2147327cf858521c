package bridgesvc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/types/known/durationpb"

	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

// countingListener counts the TCP connections a server accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// sdkUpstream is an in-process Go SDK server over Streamable HTTP (event-stream responses, as
// the SDK answers by default) with an echo tool and a hang tool that blocks until its call is
// cancelled; cancelled receives a value for each hang call that was.
type sdkUpstream struct {
	url       string
	ln        *countingListener
	cancelled chan struct{}
}

func startSDKUpstream(t *testing.T, opts *mcp.StreamableHTTPOptions) *sdkUpstream {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "sdk-upstream", Version: "1"}, nil)
	type echoArgs struct {
		Text string `json:"text"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "echoes"}, func(_ context.Context, _ *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	u := &sdkUpstream{cancelled: make(chan struct{}, 16)}
	mcp.AddTool(server, &mcp.Tool{Name: "hang", Description: "blocks until cancelled"}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		select {
		case <-ctx.Done():
			u.cancelled <- struct{}{}
			return nil, nil, ctx.Err()
		case <-time.After(time.Minute):
			return nil, nil, fmt.Errorf("not cancelled within a minute")
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.ln = &countingListener{Listener: ln}
	up := httptest.NewUnstartedServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, opts))
	up.Listener = u.ln
	up.Start()
	t.Cleanup(up.Close)
	u.url = up.URL
	return u
}

// deliver sends one message through the bridge in process and returns the messages it emits.
func deliver(ctx context.Context, svc *bridgesvc.Service, session, server, msg string) ([]*bridgev1.SendResponse, error) {
	var out []*bridgev1.SendResponse
	err := svc.Deliver(ctx, &bridgev1.SendRequest{SessionId: session, Server: server, Message: []byte(msg)}, func(r *bridgev1.SendResponse) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// TestUpstreamConnectionReuse counts the TCP connections an SDK upstream accepts over 1,000
// sequential calls through the bridge: they must be reused, not opened per call.
func TestUpstreamConnectionReuse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size int
		json bool
	}{
		{"64 B event stream", 64, false},
		{"16 KiB event stream", 16 << 10, false},
		{"16 KiB JSON", 16 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := startSDKUpstream(t, &mcp.StreamableHTTPOptions{JSONResponse: tc.json})
			b := newBridge(t, bridgesvc.Config{}, static(&registryv1.Server{Name: "sdk", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: up.url}))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if _, err := deliver(ctx, b.svc, "s", "sdk", initializeReq); err != nil {
				t.Fatal(err)
			}
			if _, err := deliver(ctx, b.svc, "s", "sdk", `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil {
				t.Fatal(err)
			}
			text := strings.Repeat("a", tc.size)
			for i := range 1000 {
				out, err := deliver(ctx, b.svc, "s", "sdk", toolCall(10+i, "echo", fmt.Sprintf(`{"text":%q}`, text)))
				if err != nil || len(out) != 1 || !bytes.Contains(out[0].GetMessage(), []byte(text)) {
					t.Fatalf("call %d = %v, %v", i, out, err)
				}
			}
			n := up.ln.accepted.Load()
			t.Logf("%d connections", n)
			if n > 4 {
				t.Fatalf("the upstream accepted %d connections over 1,000 sequential calls, want at most 4", n)
			}
		})
	}
}

// TestDeliverParsed: the in-process entry point that takes the ingress's reading of the
// message reaches the upstream like Deliver, checks the request id against that reading, and
// refuses a reading that is not of the request's own bytes.
func TestDeliverParsed(t *testing.T) {
	t.Parallel()
	up := startSDKUpstream(t, nil)
	b := newBridge(t, bridgesvc.Config{}, static(&registryv1.Server{Name: "sdk", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: up.url}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	parsedSend := func(req *bridgev1.SendRequest, m *jsonrpc.Message) ([]*bridgev1.SendResponse, error) {
		var out []*bridgev1.SendResponse
		err := b.svc.DeliverParsed(ctx, req, m, func(r *bridgev1.SendResponse) error {
			out = append(out, r)
			return nil
		})
		return out, err
	}
	parse := func(s string) (*bridgev1.SendRequest, *jsonrpc.Message) {
		msgs, _, err := jsonrpc.Parse([]byte(s), false)
		if err != nil {
			t.Fatal(err)
		}
		m := msgs[0]
		return &bridgev1.SendRequest{SessionId: "s", Server: "sdk", Message: m.Raw, RequestId: m.ID}, m
	}
	for _, msg := range []string{initializeReq, `{"jsonrpc":"2.0","method":"notifications/initialized"}`} {
		req, m := parse(msg)
		if m.Kind != jsonrpc.KindRequest {
			req.RequestId = nil
		}
		if _, err := parsedSend(req, m); err != nil {
			t.Fatalf("%s: %v", msg, err)
		}
	}
	req, m := parse(toolCall(5, "echo", `{"text":"parsed once"}`))
	out, err := parsedSend(req, m)
	if err != nil || len(out) != 1 || !out[0].GetFinal() || !bytes.Contains(out[0].GetMessage(), []byte("parsed once")) {
		t.Fatalf("call = %v, %v", out, err)
	}

	req, m = parse(toolCall(6, "echo", `{"text":"x"}`))
	req.RequestId = []byte("7")
	if _, err := parsedSend(req, m); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a request id that is not the message's = %v, want InvalidArgument", err)
	}
	req, m = parse(toolCall(8, "echo", `{"text":"x"}`))
	req.Message = bytes.Clone(req.Message)
	if _, err := parsedSend(req, m); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a reading of other bytes = %v, want InvalidArgument", err)
	}
	if _, err := parsedSend(req, nil); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("no reading = %v, want InvalidArgument", err)
	}
}

// echoBinary is the project's example echo server (examples/servers/echo).
func echoBinary(t *testing.T) string {
	return built(t, "echo", "github.com/gatehouse-mcp/gatehouse/examples/servers/echo")
}

// TestCallTimeout: a call the upstream does not answer ends with the call timeout (the
// server's own, else the bridge's default), the upstream is told to cancel it, and the next
// call on the session works. Stdio runs the example echo server, whose hang tool logs its
// cancellation on stderr (which the bridge logs); HTTP runs an in-process SDK server.
func TestCallTimeout(t *testing.T) {
	t.Parallel()
	up := startSDKUpstream(t, nil)
	b, logs := newLoggedBridge(t, bridgesvc.Config{DefaultCallTimeout: 300 * time.Millisecond}, static(
		&registryv1.Server{Name: "stdio", Transport: registryv1.Transport_TRANSPORT_STDIO, Command: []string{echoBinary(t)}},
		&registryv1.Server{Name: "http", Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: up.url, CallTimeout: durationpb.New(200 * time.Millisecond)},
	))
	tests := []struct {
		server    string
		message   string
		cancelled func(t *testing.T)
	}{
		{server: "stdio", message: "the upstream did not answer within 300ms", cancelled: func(t *testing.T) {
			testsync.WaitFor(t, 10*time.Second, "the echo server to log the cancellation", func() bool { return strings.Contains(logs.String(), "hang cancelled") })
		}},
		{server: "http", message: "the upstream did not answer within 200ms", cancelled: func(t *testing.T) {
			select {
			case <-up.cancelled:
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream's hang call was never cancelled")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.server, func(t *testing.T) {
			t.Parallel()
			session := "timeout-" + tc.server
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, msg := range []string{initializeReq, `{"jsonrpc":"2.0","method":"notifications/initialized"}`} {
				if _, err := deliver(ctx, b.svc, session, tc.server, msg); err != nil {
					t.Fatal(err)
				}
			}
			// Through Connect, as a split-mode ingress sees it.
			_, err := b.exchange(ctx, session, tc.server, toolCall(2, "hang", ""), nil)
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeDeadlineExceeded || ce.Message() != tc.message {
				t.Fatalf("hang = %v, want deadline_exceeded %q", err, tc.message)
			}
			// In process, as single-process mode sees it.
			_, err = deliver(ctx, b.svc, session, tc.server, toolCall(3, "hang", ""))
			if !errors.Is(err, bridgesvc.ErrCallTimeout) || connect.CodeOf(err) != connect.CodeDeadlineExceeded {
				t.Fatalf("hang in process = %v, want ErrCallTimeout", err)
			}
			tc.cancelled(t)
			out, err := deliver(ctx, b.svc, session, tc.server, toolCall(4, "echo", `{"text":"after the timeout"}`))
			if err != nil || len(out) != 1 || resultText(t, out[0].GetMessage()) != "after the timeout" {
				t.Fatalf("echo after the timeout = %v, %v", out, err)
			}
			if !strings.Contains(logs.String(), "upstream call timed out") {
				t.Fatalf("the timeout is not logged:\n%s", logs.String())
			}
		})
	}
}

func TestCallTimeoutConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		ok      bool
	}{
		{"default", 0, true},
		{"a millisecond", time.Millisecond, true},
		{"an hour", time.Hour, true},
		{"negative", -time.Second, false},
		{"over an hour", time.Hour + time.Nanosecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bridgesvc.New(bridgesvc.Config{DefaultCallTimeout: tc.timeout}, static(), quietLogger())
			if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "call-timeout")) {
				t.Fatalf("New = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
