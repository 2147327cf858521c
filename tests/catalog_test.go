package tests

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/registrysvc"
)

// TestCatalogFollowsRegistry runs internal/catalog against the real registry service (served
// over h2c as the binaries serve it, on a real embedded etcd): a change reaches the
// catalog's snapshot, a broken WatchServers stream is resumed, and a registry whose etcd watch
// was compacted sends a full snapshot that replaces the catalog's (a server removed while the
// history was lost goes too). It lives here rather than in internal/catalog because internal
// must not depend on registrysvc.
func TestCatalogFollowsRegistry(t *testing.T) {
	etcd, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prefix := etcdtest.Prefix(t)
	kv := etcdtest.NewWatchBreaker(etcd.Client)
	registry, err := registrysvc.New(registrysvc.Config{KeyPrefix: prefix}, kv, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := registry.Close(ctx); err != nil {
			t.Errorf("registry Close: %v", err)
		}
	})
	if err := registry.Seed(ctx, []*registryv1.Server{catalogServer("a"), catalogServer("b")}); err != nil {
		t.Fatal(err)
	}
	streams := &streamBreaker{cancels: map[int]context.CancelFunc{}}
	addr := serveRegistry(t, streams.wrap(rpcserver.NewMux(registry.Handlers()...)))
	client := registryv1connect.NewRegistryServiceClient(rpcserver.NewClient(), rpcserver.BaseURL(addr))

	cat := catalog.New()
	select {
	case <-cat.Ready():
		t.Fatal("a new catalog is ready before any snapshot")
	default:
	}
	followCtx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		cat.Follow(followCtx, client, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { stopFollow(); <-followed })
	if err := cat.WaitReady(ctx); err != nil {
		t.Fatalf("catalog never ready: %v", err)
	}
	waitCatalog(t, cat, "a", "b")

	servers := prefix + "servers/"
	put := func(t *testing.T, name string) int64 {
		t.Helper()
		resp, err := etcd.Client.Put(ctx, servers+name, `{"name":"`+name+`","transport":"TRANSPORT_STDIO","command":["/bin/`+name+`"],"tenants":["default"]}`)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	del := func(t *testing.T, name string) {
		t.Helper()
		if _, err := etcd.Client.Delete(ctx, servers+name); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("follow", func(t *testing.T) {
		put(t, "c")
		waitCatalog(t, cat, "a", "b", "c")
		del(t, "b")
		waitCatalog(t, cat, "a", "c")
		if s, ok := cat.Server("c"); !ok || !slices.Equal(s.GetCommand(), []string{"/bin/c"}) {
			t.Fatalf("Server(c) = %v, %v", s, ok)
		}
	})

	t.Run("reconnect", func(t *testing.T) {
		before := streams.opened.Load()
		if n := streams.breakAll(); n != 1 {
			t.Fatalf("broke %d WatchServers streams, want the catalog's one", n)
		}
		testsync.WaitFor(t, 30*time.Second, "the catalog to open a new WatchServers stream", func() bool { return streams.opened.Load() > before })
		put(t, "d")
		waitCatalog(t, cat, "a", "c", "d")
	})

	t.Run("compaction", func(t *testing.T) {
		// The registry's etcd watch breaks and is held while a goes, e arrives and the
		// history is compacted: the registry can only reload, and the catalog learns of a's
		// removal from the new snapshot alone.
		release := kv.BreakAndHold()
		del(t, "a")
		rev := put(t, "e")
		if _, err := etcd.Client.Compact(ctx, rev); err != nil {
			t.Fatal(err)
		}
		release()
		waitCatalog(t, cat, "c", "d", "e")
	})
}

func catalogServer(name string) *registryv1.Server {
	return &registryv1.Server{Name: name, Transport: registryv1.Transport_TRANSPORT_STDIO, Command: []string{"/bin/" + name}, Tenants: []string{"default"}}
}

// waitCatalog waits until the catalog holds exactly the named servers.
func waitCatalog(t *testing.T, cat *catalog.Catalog, want ...string) {
	t.Helper()
	var got []string
	names := func() []string {
		var out []string
		for _, s := range cat.Servers() {
			out = append(out, s.GetName())
		}
		slices.Sort(out)
		return out
	}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for got = names(); !slices.Equal(got, want); got = names() {
		select {
		case <-deadline.C:
			t.Fatalf("catalog holds %v after 30s, want %v", got, want)
		case <-tick.C:
		}
	}
}

// serveRegistry serves h the way the binaries do (rpcserver, h2c) on a loopback port.
func serveRegistry(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rpcserver.NewServer(h)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return ln.Addr().String()
}

// streamBreaker counts the WatchServers streams it serves and can end them all, as a network
// failure or a restarted registry would.
type streamBreaker struct {
	opened  atomic.Int32
	mu      sync.Mutex
	next    int
	cancels map[int]context.CancelFunc
}

func (b *streamBreaker) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/WatchServers") {
			h.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		b.mu.Lock()
		id := b.next
		b.next++
		b.cancels[id] = cancel
		b.mu.Unlock()
		b.opened.Add(1)
		defer func() {
			b.mu.Lock()
			delete(b.cancels, id)
			b.mu.Unlock()
			cancel()
		}()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// breakAll ends every open stream and returns how many there were.
func (b *streamBreaker) breakAll() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, cancel := range b.cancels {
		cancel()
	}
	return len(b.cancels)
}
