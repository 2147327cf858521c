package registrysvc_test

import (
	"context"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/registrysvc"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// shared is the package's embedded etcd; tests keep apart by key prefix.
var shared *etcdtest.Etcd

func TestMain(m *testing.M) { os.Exit(etcdtest.Main(m, &shared)) }

func stdio(name string, tenants ...string) *registryv1.Server {
	return &registryv1.Server{Name: name, Transport: registryv1.Transport_TRANSPORT_STDIO, Command: []string{"/bin/" + name}, Tenants: tenants}
}

func web(name string, tenants ...string) *registryv1.Server {
	return &registryv1.Server{Name: name, Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, Url: "http://127.0.0.1:9/" + name, Tenants: tenants}
}

// newService starts a registry on the test's own prefix of the shared etcd.
func newService(t *testing.T, cfg registrysvc.Config, kv registrysvc.Etcd) *registrysvc.Service {
	t.Helper()
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = etcdtest.Prefix(t)
	}
	if kv == nil {
		kv = shared.Client
	}
	svc, err := registrysvc.New(cfg, kv, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := svc.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return svc
}

// serve serves svc the way the binary does (rpcserver, h2c) on a loopback port and returns
// its address.
func serve(t *testing.T, svc *registrysvc.Service) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rpcserver.NewServer(rpcserver.NewMux(svc.Handlers()...))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return ln.Addr().String()
}

func connectClient(t *testing.T, svc *registrysvc.Service) registryv1connect.RegistryServiceClient {
	return registryv1connect.NewRegistryServiceClient(rpcserver.NewClient(), rpcserver.BaseURL(serve(t, svc)))
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func names(servers []*registryv1.Server) []string {
	out := make([]string, 0, len(servers))
	for _, s := range servers {
		out = append(out, s.GetName())
	}
	return out
}

func TestSeedGetList(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	svc := newService(t, registrysvc.Config{}, nil)
	echo, research, both := stdio("echo", "default"), web("research-only", "research"), web("both", "default", "research")
	if err := svc.Seed(ctx, []*registryv1.Server{echo, research, both}); err != nil {
		t.Fatal(err)
	}

	t.Run("get", func(t *testing.T) {
		resp, err := svc.GetServer(ctx, connect.NewRequest(&registryv1.GetServerRequest{Name: "echo"}))
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(resp.Msg.GetServer(), echo) {
			t.Fatalf("GetServer(echo) = %v, want %v", resp.Msg.GetServer(), echo)
		}
	})
	for _, tt := range []struct {
		name string
		code connect.Code
	}{
		{"missing", connect.CodeNotFound},
		{"", connect.CodeInvalidArgument},
		{"Not A Name", connect.CodeInvalidArgument},
		{strings.Repeat("a", 10000), connect.CodeInvalidArgument},
	} {
		t.Run("get "+tt.name[:min(len(tt.name), 16)], func(t *testing.T) {
			_, err := svc.GetServer(ctx, connect.NewRequest(&registryv1.GetServerRequest{Name: tt.name}))
			if connect.CodeOf(err) != tt.code {
				t.Fatalf("GetServer(%.16q) = %v, want %v", tt.name, err, tt.code)
			}
		})
	}
	for _, tt := range []struct {
		tenant string
		want   []string
	}{
		{"", []string{"both", "echo", "research-only"}},
		{"default", []string{"both", "echo"}},
		{"research", []string{"both", "research-only"}},
		{"nobody", []string{}},
	} {
		t.Run("list tenant "+tt.tenant, func(t *testing.T) {
			resp, err := svc.ListServers(ctx, connect.NewRequest(&registryv1.ListServersRequest{Tenant: tt.tenant}))
			if err != nil {
				t.Fatal(err)
			}
			if got := names(resp.Msg.GetServers()); !slices.Equal(got, tt.want) {
				t.Fatalf("ListServers(%q) = %v, want %v", tt.tenant, got, tt.want)
			}
		})
	}
	t.Run("list oversized tenant", func(t *testing.T) {
		_, err := svc.ListServers(ctx, connect.NewRequest(&registryv1.ListServersRequest{Tenant: strings.Repeat("t", 129)}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("err = %v, want InvalidArgument", err)
		}
	})
}

func TestSeedRefusesInvalid(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	svc := newService(t, registrysvc.Config{}, nil)
	tests := []struct {
		name    string
		servers []*registryv1.Server
		want    string
	}{
		{"no command", []*registryv1.Server{stdio("good"), {Name: "bad", Transport: registryv1.Transport_TRANSPORT_STDIO}}, `servers[1]: server "bad": command`},
		{"duplicate", []*registryv1.Server{stdio("a"), web("a")}, "listed twice"},
		{"nil", []*registryv1.Server{nil}, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := svc.Seed(ctx, tt.servers)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Seed = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	resp, err := shared.Client.Get(ctx, etcdtest.Prefix(t), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Fatalf("a refused seed wrote %d keys", resp.Count)
	}
	if err := registrysvc.Validate(stdio("ok")); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

// recv returns the stream's next message, failing the test if the stream ends.
func recv(t *testing.T, stream *connect.ServerStreamForClient[registryv1.WatchServersResponse]) *registryv1.WatchServersResponse {
	t.Helper()
	if !stream.Receive() {
		t.Fatalf("watch ended: %v", stream.Err())
	}
	return stream.Msg()
}

func TestWatchSeesSeeds(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	svc := newService(t, registrysvc.Config{}, nil)
	a, b := stdio("a", "default"), stdio("b", "default")
	if err := svc.Seed(ctx, []*registryv1.Server{a, b}); err != nil {
		t.Fatal(err)
	}
	stream, err := connectClient(t, svc).WatchServers(ctx, connect.NewRequest(&registryv1.WatchServersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stream.Close() })

	first := recv(t, stream)
	if !first.GetSnapshot() || !slices.Equal(names(first.GetServers()), []string{"a", "b"}) || len(first.GetDeleted()) != 0 {
		t.Fatalf("first message %v, want a snapshot of a and b", first)
	}

	// b changes and c appears; a is unchanged, so it is not rewritten.
	b2, c := stdio("b", "default", "research"), web("c")
	if err := svc.Seed(ctx, []*registryv1.Server{a, b2, c}); err != nil {
		t.Fatal(err)
	}
	got := recv(t, stream)
	if got.GetSnapshot() || !slices.Equal(names(got.GetServers()), []string{"b", "c"}) || len(got.GetDeleted()) != 0 || !proto.Equal(got.GetServers()[0], b2) {
		t.Fatalf("after the second seed: %v, want upserts of b (changed) and c", got)
	}

	// The same configuration again writes nothing: the next message is the next change.
	if err := svc.Seed(ctx, []*registryv1.Server{a, b2, c}); err != nil {
		t.Fatal(err)
	}
	// Seeding without b deletes it.
	if err := svc.Seed(ctx, []*registryv1.Server{a, c}); err != nil {
		t.Fatal(err)
	}
	got = recv(t, stream)
	if got.GetSnapshot() || len(got.GetServers()) != 0 || !slices.Equal(got.GetDeleted(), []string{"b"}) {
		t.Fatalf("after seeding without b: %v, want a delete of b", got)
	}
	if _, err := svc.GetServer(ctx, connect.NewRequest(&registryv1.GetServerRequest{Name: "b"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("GetServer(b) after its removal = %v, want NotFound", err)
	}
}

// TestReplicasShareEtcd: a second replica on the same prefix follows the first one's seeds
// through its own watch, and ignores values in etcd that are not valid servers.
func TestReplicasShareEtcd(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	prefix := etcdtest.Prefix(t)
	if _, err := shared.Client.Put(ctx, prefix+"servers/junk", "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := shared.Client.Put(ctx, prefix+"servers/liar", `{"name":"other","transport":"TRANSPORT_STDIO","command":["x"]}`); err != nil {
		t.Fatal(err)
	}
	one := newService(t, registrysvc.Config{KeyPrefix: prefix}, nil)
	two := newService(t, registrysvc.Config{KeyPrefix: prefix}, nil)
	list := func(svc *registrysvc.Service) []string {
		resp, err := svc.ListServers(ctx, connect.NewRequest(&registryv1.ListServersRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return names(resp.Msg.GetServers())
	}
	if got := list(two); len(got) != 0 {
		t.Fatalf("bad values in etcd were served: %v", got)
	}
	if err := one.Seed(ctx, []*registryv1.Server{stdio("x"), web("y")}); err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 10*time.Second, "the second watcher to see x and y", func() bool { return slices.Equal(list(two), []string{"x", "y"}) })
	if err := one.Seed(ctx, []*registryv1.Server{web("y")}); err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 10*time.Second, "the second watcher to see y alone", func() bool { return slices.Equal(list(two), []string{"y"}) })

	// The seed removed the unparsable values too: the configuration is the source of truth.
	resp, err := shared.Client.Get(ctx, prefix+"servers/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != prefix+"servers/y" {
		t.Fatalf("etcd holds %v, want only y", resp.Kvs)
	}
}

// TestWatchCompaction: when the revision a broken watch would resume from has been compacted
// away, the registry reloads, and watchers get a fresh snapshot with what changed meanwhile.
func TestWatchCompaction(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	prefix := etcdtest.Prefix(t)
	kv := etcdtest.NewWatchBreaker(shared.Client)
	svc := newService(t, registrysvc.Config{KeyPrefix: prefix}, kv)
	if err := svc.Seed(ctx, []*registryv1.Server{stdio("a"), stdio("b")}); err != nil {
		t.Fatal(err)
	}
	stream, err := connectClient(t, svc).WatchServers(ctx, connect.NewRequest(&registryv1.WatchServersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stream.Close() })
	if first := recv(t, stream); !first.GetSnapshot() || !slices.Equal(names(first.GetServers()), []string{"a", "b"}) {
		t.Fatalf("first message %v", first)
	}

	release := kv.BreakAndHold()
	// While the registry waits to resume, b goes and c arrives, and history is compacted.
	if _, err := shared.Client.Delete(ctx, prefix+"servers/b"); err != nil {
		t.Fatal(err)
	}
	put, err := shared.Client.Put(ctx, prefix+"servers/c", `{"name":"c","transport":"TRANSPORT_STDIO","command":["/bin/c"]}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shared.Client.Compact(ctx, put.Header.Revision); err != nil {
		t.Fatal(err)
	}
	release()

	got := recv(t, stream)
	if !got.GetSnapshot() || !slices.Equal(names(got.GetServers()), []string{"a", "c"}) {
		t.Fatalf("after compaction: %v, want a snapshot of a and c", got)
	}
	// And the watch goes on from the new snapshot.
	if err := svc.Seed(ctx, []*registryv1.Server{stdio("a")}); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, stream); !slices.Equal(got.GetDeleted(), []string{"c"}) {
		t.Fatalf("after the seed: %v, want a delete of c", got)
	}
}

// TestWatchLimitAndCancel: watchers are bounded, and a client that goes away frees its slot.
func TestWatchLimitAndCancel(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	svc := newService(t, registrysvc.Config{MaxWatchers: 1}, nil)
	if err := svc.Seed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	client := connectClient(t, svc)
	watch := func(ctx context.Context) (*connect.ServerStreamForClient[registryv1.WatchServersResponse], error) {
		stream, err := client.WatchServers(ctx, connect.NewRequest(&registryv1.WatchServersRequest{}))
		if err != nil {
			return nil, err
		}
		if !stream.Receive() {
			err := stream.Err()
			_ = stream.Close()
			return nil, err
		}
		return stream, nil
	}
	ctx1, cancel1 := context.WithCancel(ctx)
	defer cancel1()
	first, err := watch(ctx1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch(ctx); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("second watcher: %v, want ResourceExhausted", err)
	}
	cancel1()
	_ = first.Close()
	var second *connect.ServerStreamForClient[registryv1.WatchServersResponse]
	testsync.WaitFor(t, 10*time.Second, "a new WatchServers stream to be accepted", func() bool {
		second, err = watch(ctx)
		return err == nil
	})
	t.Cleanup(func() { _ = second.Close() })
}

// TestCloseEndsWatchers: Close ends open streams with Unavailable, so clients reconnect
// elsewhere instead of holding the drain.
func TestCloseEndsWatchers(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	svc, err := registrysvc.New(registrysvc.Config{KeyPrefix: etcdtest.Prefix(t)}, shared.Client, nil)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := connectClient(t, svc).WatchServers(ctx, connect.NewRequest(&registryv1.WatchServersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stream.Close() })
	recv(t, stream)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := svc.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if stream.Receive() {
		t.Fatalf("unexpected message %v", stream.Msg())
	}
	if code := connect.CodeOf(stream.Err()); code != connect.CodeUnavailable {
		t.Fatalf("stream ended with %v, want Unavailable", stream.Err())
	}
	wg.Wait()
	// Unary reads still answer from the last snapshot while the server drains.
	if _, err := svc.ListServers(ctx, connect.NewRequest(&registryv1.ListServersRequest{})); err != nil {
		t.Fatalf("ListServers after Close: %v", err)
	}
}

// TestGRPCGoClient calls the registry the way other teams do: plain grpc-go with the
// generated stubs, over h2c, on a real loopback listener served by rpcserver.
func TestGRPCGoClient(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	svc := newService(t, registrysvc.Config{}, nil)
	if err := svc.Seed(ctx, []*registryv1.Server{stdio("echo", "default"), web("research-only", "research")}); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(serve(t, svc), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := registryv1.NewRegistryServiceClient(conn)

	resp, err := client.ListServers(ctx, &registryv1.ListServersRequest{Tenant: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(resp.GetServers()); !slices.Equal(got, []string{"echo"}) {
		t.Fatalf("ListServers(default) = %v, want [echo]", got)
	}
	if _, err := client.GetServer(ctx, &registryv1.GetServerRequest{Name: "missing"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetServer(missing) = %v, want NotFound", err)
	}
	stream, err := client.WatchServers(ctx, &registryv1.WatchServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !first.GetSnapshot() || len(first.GetServers()) != 2 {
		t.Fatalf("first watch message %v", first)
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	if _, err := registrysvc.New(registrysvc.Config{}, nil, nil); err == nil {
		t.Fatal("New without etcd succeeded")
	}
	if _, err := registrysvc.New(registrysvc.Config{MaxWatchers: -1}, shared.Client, nil); err == nil {
		t.Fatal("New with negative MaxWatchers succeeded")
	}
	svc := newService(t, registrysvc.Config{}, nil)
	many := make([]*registryv1.Server, config.MaxServers+1)
	for i := range many {
		many[i] = stdio("s" + strings.Repeat("x", i%50) + string(rune('a'+i%26)))
	}
	if err := svc.Seed(testContext(t), many); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("Seed of too many servers = %v", err)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
