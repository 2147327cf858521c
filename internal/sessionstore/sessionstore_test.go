package sessionstore_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
)

var shared *etcdtest.Etcd

func TestMain(m *testing.M) { os.Exit(etcdtest.Main(m, &shared)) }

func newStore(t *testing.T, ttl time.Duration) (*sessionstore.Store, string) {
	prefix := etcdtest.Prefix(t)
	return sessionstore.New(shared.Client, prefix, ttl, slog.New(slog.DiscardHandler)), prefix
}

func TestLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, prefix := newStore(t, time.Minute)
	rec, err := store.Create(ctx, sessionstore.Record{Server: "echo", Principal: "alice", Tenant: "acme"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.ID) != 64 {
		t.Fatalf("session id %q: want 64 hex characters", rec.ID)
	}
	// Another replica, with a cold cache, sees the same session.
	other := sessionstore.New(shared.Client, prefix, time.Minute, slog.New(slog.DiscardHandler))
	got, err := other.Get(ctx, rec.ID)
	if err != nil || got.Principal != "alice" || got.Server != "echo" {
		t.Fatalf("Get on another replica: %+v %v", got, err)
	}
	rec.ProtocolVersion = "2025-06-18"
	if err := store.Update(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := store.Touch(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}

	if err := store.End(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	// The other replica still caches the record; etcd no longer has it.
	if resp, err := shared.Client.Get(ctx, prefix+rec.ID); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("record still in etcd after Delete: %v %v", resp, err)
	}
	other = sessionstore.New(shared.Client, prefix, time.Minute, slog.New(slog.DiscardHandler))
	if _, err := other.Get(ctx, rec.ID); !errors.Is(err, sessionstore.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	if err := store.End(ctx, rec.ID); !errors.Is(err, sessionstore.ErrNotFound) {
		t.Fatalf("second Delete: %v, want ErrNotFound", err)
	}
}

func TestExpiryIsReported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, _ := newStore(t, time.Second)
	ended := make(chan string, 4)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	started := make(chan struct{})
	go func() {
		close(started)
		store.Watch(wctx, func(id string) { ended <- id })
	}()
	<-started
	rec, err := store.Create(ctx, sessionstore.Record{Server: "echo", Principal: "bob", Tenant: "acme"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-ended:
		if id != rec.ID {
			t.Fatalf("expired %s, want %s", id, rec.ID)
		}
	case <-ctx.Done():
		t.Fatal("the lease expired but the watch never reported the session")
	}
	if _, err := store.Get(ctx, rec.ID); !errors.Is(err, sessionstore.ErrNotFound) {
		t.Fatalf("Get after expiry: %v, want ErrNotFound", err)
	}
}

func TestMalformedIDsNeverReachEtcd(t *testing.T) {
	store, _ := newStore(t, time.Minute)
	for _, id := range []string{"", "../x", "ABCDEF", string(make([]byte, 64))} {
		if _, err := store.Get(context.Background(), id); !errors.Is(err, sessionstore.ErrNotFound) {
			t.Errorf("Get(%q): %v, want ErrNotFound", id, err)
		}
	}
}

func TestSessionLimitPerPrincipal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, _ := newStore(t, time.Minute)
	carol := sessionstore.Record{Server: "echo", Principal: "carol", Tenant: "acme"}
	first, err := store.Create(ctx, carol, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, carol, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, carol, 2); !errors.Is(err, sessionstore.ErrTooManySessions) {
		t.Fatalf("third session: %v, want ErrTooManySessions", err)
	}
	// Another principal, or the same name in another tenant, has its own count.
	if _, err := store.Create(ctx, sessionstore.Record{Server: "echo", Principal: "carol", Tenant: "other"}, 2); err != nil {
		t.Fatalf("carol in another tenant: %v", err)
	}
	if err := store.End(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, carol, 2); err != nil {
		t.Fatalf("after ending one session: %v", err)
	}
}

// The cap holds under concurrency: N creates racing for one principal get exactly the limit,
// even from two stores (two ingress replicas) on the same etcd.
func TestSessionLimitUnderConcurrentCreates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, prefix := newStore(t, time.Minute)
	b := sessionstore.New(shared.Client, prefix, time.Minute, slog.New(slog.DiscardHandler))
	const limit, racers = 16, 120
	dave := sessionstore.Record{Server: "echo", Principal: "dave", Tenant: "acme"}
	var granted, refused atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, racers)
	for i := range racers {
		store := a
		if i%2 == 1 {
			store = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := store.Create(ctx, dave, limit)
			switch {
			case err == nil:
				granted.Add(1)
			case errors.Is(err, sessionstore.ErrTooManySessions):
				refused.Add(1)
			default:
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("create: %v", err)
	}
	if granted.Load() != limit || refused.Load() != racers-limit {
		t.Fatalf("granted %d, refused %d; want exactly %d granted of %d", granted.Load(), refused.Load(), limit, racers)
	}
	// With dave at his cap, another principal still opens sessions.
	if _, err := a.Create(ctx, sessionstore.Record{Server: "echo", Principal: "erin", Tenant: "acme"}, limit); err != nil {
		t.Fatalf("another principal at dave's cap: %v", err)
	}
}

// TestList: a principal's sessions, created on any replica, with and without a cap (the two
// forms of the principal's index), with the token that created each; ended sessions and
// other principals' (the same id in another tenant too) are not listed.
func TestList(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, limit := range []int{0, 300} {
		store, prefix := newStore(t, time.Minute)
		other := sessionstore.New(shared.Client, prefix, time.Minute, slog.New(slog.DiscardHandler))
		want := map[string]string{} // session id -> token id
		// More sessions than one read of the index takes.
		for i := range 130 {
			s := store
			if i%2 == 1 {
				s = other
			}
			tok := "tok-a"
			if i%3 == 0 {
				tok = "tok-b"
			}
			rec, err := s.Create(ctx, sessionstore.Record{Server: "echo", Principal: "alice", Tenant: "acme", TokenID: tok}, limit)
			if err != nil {
				t.Fatal(err)
			}
			want[rec.ID] = tok
		}
		for _, r := range []sessionstore.Record{{Server: "echo", Principal: "bob", Tenant: "acme"}, {Server: "echo", Principal: "alice", Tenant: "beta"}} {
			if _, err := store.Create(ctx, r, limit); err != nil {
				t.Fatal(err)
			}
		}
		var gone string
		for id := range want {
			gone = id
			break
		}
		if err := other.End(ctx, gone); err != nil {
			t.Fatal(err)
		}
		delete(want, gone)

		// A replica that created none of them lists them all.
		cold := sessionstore.New(shared.Client, prefix, time.Minute, slog.New(slog.DiscardHandler))
		got, err := cold.List(ctx, "acme", "alice")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("limit %d: %d sessions listed, want %d", limit, len(got), len(want))
		}
		for _, r := range got {
			if tok, ok := want[r.ID]; !ok || r.TokenID != tok || r.Principal != "alice" || r.Tenant != "acme" {
				t.Fatalf("limit %d: listed %+v", limit, r)
			}
		}
		if none, err := cold.List(ctx, "acme", "nobody"); err != nil || len(none) != 0 {
			t.Fatalf("a principal without sessions: %v, %v", none, err)
		}
	}
}
