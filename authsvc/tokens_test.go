package authsvc_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/authsvc"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

func (f *fixture) list(t *testing.T, req *authv1.ListTokensRequest) *authv1.ListTokensResponse {
	t.Helper()
	resp, err := f.svc.ListTokens(testContext(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("ListTokens(%v): %v", req, err)
	}
	return resp.Msg
}

// listAll follows the pages of ListTokens to the end and returns every token, failing on a
// token listed twice or out of order.
func (f *fixture) listAll(t *testing.T, tenant string, pageSize int32) ([]*authv1.TokenInfo, int) {
	t.Helper()
	var all []*authv1.TokenInfo
	pages := 0
	req := &authv1.ListTokensRequest{Tenant: tenant, PageSize: pageSize}
	for {
		resp := f.list(t, req)
		pages++
		if pageSize > 0 && len(resp.GetTokens()) > int(pageSize) {
			t.Fatalf("page of %d tokens, more than page_size %d", len(resp.GetTokens()), pageSize)
		}
		for _, tok := range resp.GetTokens() {
			if n := len(all); n > 0 && all[n-1].GetTokenId() >= tok.GetTokenId() {
				t.Fatalf("token %s listed after %s", tok.GetTokenId(), all[n-1].GetTokenId())
			}
			all = append(all, tok)
		}
		if resp.GetNextPageToken() == "" {
			return all, pages
		}
		if pages > 1000 {
			t.Fatal("more than 1000 pages")
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func TestListTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	want := map[string]*authv1.CreateTokenResponse{} // by id
	var secrets []string
	for i := range 7 {
		c := f.create(t, &authv1.CreateTokenRequest{PrincipalId: fmt.Sprintf("user%d", i), Tenant: "acme", Groups: []string{"dev", "ops"}})
		want[c.GetTokenId()] = c
		secrets = append(secrets, c.GetToken())
	}
	for i := range 5 {
		c := f.create(t, &authv1.CreateTokenRequest{PrincipalId: fmt.Sprintf("svc%d", i), Tenant: "beta", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE, TtlSeconds: 3600})
		want[c.GetTokenId()] = c
		secrets = append(secrets, c.GetToken())
	}

	all, pages := f.listAll(t, "", 5)
	if len(all) != 12 || pages != 3 {
		t.Fatalf("%d tokens in %d pages, want 12 in 3", len(all), pages)
	}
	for _, tok := range all {
		if want[tok.GetTokenId()] == nil {
			t.Fatalf("listed unknown token %v", tok)
		}
		switch tok.GetTenant() {
		case "acme":
			if !strings.HasPrefix(tok.GetPrincipalId(), "user") || tok.GetKind() != authv1.PrincipalKind_PRINCIPAL_KIND_USER ||
				!slices.Equal(tok.GetGroups(), []string{"dev", "ops"}) || tok.GetExpireTime() != nil {
				t.Errorf("acme token %v", tok)
			}
		case "beta":
			if !strings.HasPrefix(tok.GetPrincipalId(), "svc") || tok.GetKind() != authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE ||
				!tok.GetExpireTime().AsTime().Equal(f.clock.Now().Add(time.Hour)) {
				t.Errorf("beta token %v", tok)
			}
		default:
			t.Errorf("token of tenant %q", tok.GetTenant())
		}
		if !tok.GetCreateTime().AsTime().Equal(f.clock.Now()) {
			t.Errorf("create_time %v, want %v", tok.GetCreateTime().AsTime(), f.clock.Now())
		}
	}
	// The answer never holds a token or its digest.
	b, err := protojson.Marshal(f.list(t, &authv1.ListTokensRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		sum := sha256.Sum256([]byte(s))
		if strings.Contains(string(b), s) || strings.Contains(string(b), s[len(authsvc.TokenPrefix):]) || strings.Contains(string(b), hex.EncodeToString(sum[:])) {
			t.Fatalf("ListTokens answer holds a token or its digest: %s", b)
		}
	}

	acme, _ := f.listAll(t, "acme", 0)
	beta, _ := f.listAll(t, "beta", 2)
	if len(acme) != 7 || len(beta) != 5 {
		t.Fatalf("acme %d, beta %d tokens; want 7 and 5", len(acme), len(beta))
	}
	for _, tok := range acme {
		if tok.GetTenant() != "acme" {
			t.Fatalf("tenant filter acme listed %v", tok)
		}
	}
	if none, _ := f.listAll(t, "nobody", 0); len(none) != 0 {
		t.Fatalf("tenant nobody: %v", none)
	}
	// A revoked token is listed no more.
	revoked := acme[3].GetTokenId()
	if _, err := f.svc.RevokeToken(testContext(t), connect.NewRequest(&authv1.RevokeTokenRequest{TokenId: revoked})); err != nil {
		t.Fatal(err)
	}
	after, _ := f.listAll(t, "", 0)
	if len(after) != 11 || slices.ContainsFunc(after, func(tok *authv1.TokenInfo) bool { return tok.GetTokenId() == revoked }) {
		t.Fatalf("after revoking %s: %d tokens listed", revoked, len(after))
	}

	for _, tt := range []struct {
		name string
		req  *authv1.ListTokensRequest
		msg  string
	}{
		{"negative page size", &authv1.ListTokensRequest{PageSize: -1}, "page_size"},
		{"page size over the bound", &authv1.ListTokensRequest{PageSize: 501}, "page_size"},
		{"bad tenant", &authv1.ListTokensRequest{Tenant: "a/b"}, "tenant"},
		{"tenant too long", &authv1.ListTokensRequest{Tenant: strings.Repeat("t", 129)}, "tenant"},
		{"bad page token", &authv1.ListTokensRequest{PageToken: "../../x"}, "page_token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.ListTokens(testContext(t), connect.NewRequest(tt.req))
			wantCode(t, err, connect.CodeInvalidArgument, tt.msg)
		})
	}
}

// TestListTokensBounded: a page holds at most page_size tokens (100 by default, 500 at most),
// and a tenant's page is cut short after 5,000 tokens examined, with a next page token, so no
// request reads the whole store.
func TestListTokensBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	ctx := testContext(t)
	// 5,600 tokens of tenant bulk, written as the store writes them (a digest record and an
	// id key), then one of tenant rare, whose id sorts last.
	const bulk = 5600
	put := func(id, tenant string) clientv3.Op {
		return clientv3.OpPut(f.prefix+"tokens/"+id, fmt.Sprintf(`{"token_id":%q,"principal_id":"p","tenant":%q,"kind":"PRINCIPAL_KIND_USER","create_time":"2026-01-02T03:04:05Z"}`, id, tenant))
	}
	var ops []clientv3.Op
	flush := func() {
		if _, err := shared.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	for i := range bulk {
		id := fmt.Sprintf("%032x", i) // the record's key is its "digest": any unique value
		ops = append(ops, put(id, "bulk"), clientv3.OpPut(f.prefix+"ids/"+id, id))
		if len(ops) == 100 {
			flush()
		}
	}
	rare := strings.Repeat("f", 32)
	ops = append(ops, put(rare, "rare"), clientv3.OpPut(f.prefix+"ids/"+rare, rare))
	flush()

	first := f.list(t, &authv1.ListTokensRequest{})
	if len(first.GetTokens()) != 100 || first.GetNextPageToken() == "" {
		t.Fatalf("default page: %d tokens, next %q; want 100 and a next page", len(first.GetTokens()), first.GetNextPageToken())
	}
	if big := f.list(t, &authv1.ListTokensRequest{PageSize: 500}); len(big.GetTokens()) != 500 {
		t.Fatalf("page_size 500: %d tokens", len(big.GetTokens()))
	}
	page := f.list(t, &authv1.ListTokensRequest{Tenant: "rare"})
	if len(page.GetTokens()) != 0 || page.GetNextPageToken() == "" {
		t.Fatalf("first page of tenant rare: %d tokens, next %q; want none yet and a next page (5,000 examined)", len(page.GetTokens()), page.GetNextPageToken())
	}
	all, pages := f.listAll(t, "rare", 0)
	if len(all) != 1 || all[0].GetTokenId() != rare || pages != 2 {
		t.Fatalf("tenant rare: %v in %d pages; want its one token in 2", all, pages)
	}
	if every, _ := f.listAll(t, "", 500); len(every) != bulk+1 {
		t.Fatalf("%d tokens listed, want %d", len(every), bulk+1)
	}
}

// follow runs FollowRevocations in the background and hands its messages to the test.
type follow struct {
	msgs chan *authv1.WatchRevocationsResponse
	done chan error
	stop context.CancelFunc
}

func startFollow(t *testing.T, svc *authsvc.Service, req *authv1.WatchRevocationsRequest) *follow {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fl := &follow{msgs: make(chan *authv1.WatchRevocationsResponse, 64), done: make(chan error, 1), stop: cancel}
	go func() {
		fl.done <- svc.FollowRevocations(ctx, req, func(m *authv1.WatchRevocationsResponse) error {
			select {
			case fl.msgs <- m:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(cancel)
	return fl
}

// next returns the next message, failing after 10s.
func (fl *follow) next(t *testing.T) *authv1.WatchRevocationsResponse {
	t.Helper()
	select {
	case m := <-fl.msgs:
		return m
	case err := <-fl.done:
		t.Fatalf("the stream ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

// nextRevoked skips heartbeats to the next message that names revoked tokens.
func (fl *follow) nextRevoked(t *testing.T) *authv1.WatchRevocationsResponse {
	t.Helper()
	for {
		if m := fl.next(t); len(m.GetRevoked()) > 0 || m.GetHistoryLost() {
			return m
		}
	}
}

func (f *fixture) revoke(t *testing.T, id string) {
	t.Helper()
	if _, err := f.svc.RevokeToken(testContext(t), connect.NewRequest(&authv1.RevokeTokenRequest{TokenId: id})); err != nil {
		t.Fatalf("RevokeToken %s: %v", id, err)
	}
}

func TestWatchRevocations(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	a := f.create(t, &authv1.CreateTokenRequest{PrincipalId: "alice", Tenant: "acme"})
	fl := startFollow(t, f.svc, &authv1.WatchRevocationsRequest{HeartbeatSeconds: 1})
	established := fl.next(t)
	if established.GetRevision() <= 0 || len(established.GetRevoked()) != 0 || established.GetHistoryLost() {
		t.Fatalf("first message %v, want the current revision alone", established)
	}
	// A token created is not news; one revoked is, with its principal and tenant.
	b := f.create(t, &authv1.CreateTokenRequest{PrincipalId: "bob", Tenant: "beta"})
	f.revoke(t, a.GetTokenId())
	m := fl.nextRevoked(t)
	if len(m.GetRevoked()) != 1 || m.GetRevoked()[0].GetTokenId() != a.GetTokenId() || m.GetRevoked()[0].GetPrincipalId() != "alice" ||
		m.GetRevoked()[0].GetTenant() != "acme" || m.GetHistoryLost() || m.GetRevision() <= established.GetRevision() {
		t.Fatalf("revocation message %v, want alice's token %s after revision %d", m, a.GetTokenId(), established.GetRevision())
	}
	// Heartbeats keep coming while nothing happens, never going back in revision.
	for range 2 {
		h := fl.next(t)
		if len(h.GetRevoked()) != 0 || h.GetRevision() < m.GetRevision() {
			t.Fatalf("heartbeat %v after revision %d", h, m.GetRevision())
		}
	}

	// A watcher that lost its stream resumes after the last revision it had: the revocation
	// in between is replayed, and nothing before it.
	fl.stop()
	f.revoke(t, b.GetTokenId())
	resumed := startFollow(t, f.svc, &authv1.WatchRevocationsRequest{AfterRevision: m.GetRevision(), HeartbeatSeconds: 1})
	if first := resumed.next(t); first.GetRevision() != m.GetRevision() || len(first.GetRevoked()) != 0 {
		t.Fatalf("first message of a resumed stream %v, want revision %d", first, m.GetRevision())
	}
	r := resumed.nextRevoked(t)
	if len(r.GetRevoked()) != 1 || r.GetRevoked()[0].GetTokenId() != b.GetTokenId() || r.GetRevoked()[0].GetTenant() != "beta" {
		t.Fatalf("replayed %v, want bob's token %s only", r, b.GetTokenId())
	}
	// Resuming after that revision replays nothing (a heartbeat comes, no revocation).
	again := startFollow(t, f.svc, &authv1.WatchRevocationsRequest{AfterRevision: r.GetRevision(), HeartbeatSeconds: 1})
	for range 2 {
		if msg := again.next(t); len(msg.GetRevoked()) != 0 || msg.GetHistoryLost() {
			t.Fatalf("resumed after the last revocation: %v", msg)
		}
	}
}

// TestWatchRevocationsCompacted: when etcd no longer holds the history after the watcher's
// revision, the stream says history_lost, then carries on from now.
func TestWatchRevocationsCompacted(t *testing.T) {
	t.Parallel()
	own, err := etcdtest.Start() // compaction is etcd-wide: not on the shared one
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	svc, err := authsvc.New(authsvc.Config{}, own.Client, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	create := func(p string) string {
		resp, err := svc.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: p, Tenant: "acme"}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg.GetTokenId()
	}
	a, b := create("alice"), create("bob")
	fl := startFollow(t, svc, &authv1.WatchRevocationsRequest{})
	from := fl.next(t).GetRevision()
	fl.stop()
	if _, err := svc.RevokeToken(ctx, connect.NewRequest(&authv1.RevokeTokenRequest{TokenId: a})); err != nil {
		t.Fatal(err)
	}
	now, err := own.Client.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := own.Client.Compact(ctx, now.Header.Revision); err != nil {
		t.Fatal(err)
	}
	resumed := startFollow(t, svc, &authv1.WatchRevocationsRequest{AfterRevision: from})
	lost := resumed.nextRevoked(t)
	if !lost.GetHistoryLost() || len(lost.GetRevoked()) != 0 || lost.GetRevision() < now.Header.Revision {
		t.Fatalf("after compaction: %v, want history_lost at revision %d or later", lost, now.Header.Revision)
	}
	if _, err := svc.RevokeToken(ctx, connect.NewRequest(&authv1.RevokeTokenRequest{TokenId: b})); err != nil {
		t.Fatal(err)
	}
	if m := resumed.nextRevoked(t); len(m.GetRevoked()) != 1 || m.GetRevoked()[0].GetTokenId() != b || m.GetHistoryLost() {
		t.Fatalf("after history_lost: %v, want bob's revocation", m)
	}
}

// serveConnect serves svc over h2c and returns a client of it, as a remote ingress has.
func serveConnect(t *testing.T, svc *authsvc.Service) authv1connect.AuthServiceClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rpcserver.NewServer(rpcserver.NewMux(svc.Handlers()...))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return authv1connect.NewAuthServiceClient(rpcserver.NewClient(), rpcserver.BaseURL(ln.Addr().String()))
}

// TestWatchRevocationsLimit: of concurrent watchers beyond the bound, exactly the bound get
// a stream; the others are refused with ResourceExhausted. A closed stream frees its slot.
func TestWatchRevocationsLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{MaxWatchers: 3})
	client := serveConnect(t, f.svc)
	const n, bound = 10, 3
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	type result struct {
		stream *connect.ServerStreamForClient[authv1.WatchRevocationsResponse]
		err    error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			stream, err := client.WatchRevocations(ctx, connect.NewRequest(&authv1.WatchRevocationsRequest{}))
			if err == nil && !stream.Receive() {
				err = stream.Err()
			}
			results <- result{stream, err}
		}()
	}
	var open []*connect.ServerStreamForClient[authv1.WatchRevocationsResponse]
	for range n {
		r := <-results
		if r.err != nil {
			wantCode(t, r.err, connect.CodeResourceExhausted, "too many revocation watchers")
			continue
		}
		open = append(open, r.stream)
	}
	if len(open) != bound {
		t.Fatalf("%d of %d concurrent watchers got a stream, want %d", len(open), n, bound)
	}
	// Closing a stream frees its slot.
	_ = open[0].Close()
	testsync.WaitFor(t, 10*time.Second, "a freed slot", func() bool {
		stream, err := client.WatchRevocations(ctx, connect.NewRequest(&authv1.WatchRevocationsRequest{}))
		if err != nil {
			return false
		}
		if !stream.Receive() {
			_ = stream.Close()
			return false
		}
		open[0] = stream
		return true
	})
	for _, s := range open {
		_ = s.Close()
	}
}

// TestWatchRevocationsOverConnect drives the stream over h2c as a remote ingress does: bad
// requests are InvalidArgument, a revocation arrives, and Close ends the stream with
// Unavailable (so the drain is not held by it, and the watcher resubscribes elsewhere).
func TestWatchRevocationsOverConnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	client := serveConnect(t, f.svc)
	ctx := testContext(t)

	for _, req := range []*authv1.WatchRevocationsRequest{{AfterRevision: -1}, {HeartbeatSeconds: 61}, {HeartbeatSeconds: -1}} {
		stream, err := client.WatchRevocations(ctx, connect.NewRequest(req))
		if err == nil {
			for stream.Receive() {
				t.Fatalf("%v: a message %v", req, stream.Msg())
			}
			err = stream.Err()
			_ = stream.Close()
		}
		wantCode(t, err, connect.CodeInvalidArgument, "")
	}

	created := f.create(t, &authv1.CreateTokenRequest{PrincipalId: "alice", Tenant: "acme"})
	stream, err := client.WatchRevocations(ctx, connect.NewRequest(&authv1.WatchRevocationsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("no first message: %v", stream.Err())
	}
	f.revoke(t, created.GetTokenId())
	for stream.Receive() {
		if r := stream.Msg().GetRevoked(); len(r) > 0 {
			if r[0].GetTokenId() != created.GetTokenId() {
				t.Fatalf("revoked %v", r)
			}
			break
		}
	}
	if err := f.svc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for stream.Receive() {
	}
	wantCode(t, stream.Err(), connect.CodeUnavailable, "stopping")
	// Authentication still answers after Close: in-flight requests drain.
	if _, err := f.authenticate(t, "gh_unknown-token-value", ""); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("Authenticate after Close: %v", err)
	}
}

// TestWatchRevocationsStoreDown: a watch that cannot start is Unavailable, never a silent
// stream.
func TestWatchRevocationsStoreDown(t *testing.T) {
	t.Parallel()
	svc, err := authsvc.New(authsvc.Config{KeyPrefix: etcdtest.Prefix(t)}, failingEtcd{shared.Client}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	err = svc.FollowRevocations(testContext(t), &authv1.WatchRevocationsRequest{}, func(*authv1.WatchRevocationsResponse) error {
		return errors.New("no message expected")
	})
	if err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("FollowRevocations with etcd down: %v", err)
	}
}

// TestWatchRevocationsProgress: on a quiet stream the resume point still moves forward with
// etcd (past writes elsewhere), so a watcher that resumes after a long quiet spell does not
// ask for history etcd may have compacted.
func TestWatchRevocationsProgress(t *testing.T) {
	t.Parallel()
	f := newFixture(t, authsvc.Config{})
	fl := startFollow(t, f.svc, &authv1.WatchRevocationsRequest{HeartbeatSeconds: 1})
	first := fl.next(t)
	put, err := shared.Client.Put(testContext(t), etcdtest.Prefix(t)+"elsewhere", "x")
	if err != nil {
		t.Fatal(err)
	}
	if put.Header.Revision <= first.GetRevision() {
		t.Fatalf("put at revision %d, not after %d", put.Header.Revision, first.GetRevision())
	}
	for range 15 {
		m := fl.next(t)
		if len(m.GetRevoked()) != 0 {
			t.Fatalf("a revocation on a quiet stream: %v", m)
		}
		if m.GetRevision() >= put.Header.Revision {
			return
		}
	}
	t.Fatalf("15 heartbeats later the resume point is still before revision %d", put.Header.Revision)
}
