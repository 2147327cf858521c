package ingress_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1/policyv1connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/ingress"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The in-process fakes of the services the ingress calls. Each records what it was asked, so
// a test can assert what reached it (and what did not).

// Tokens the fake authsvc knows.
const (
	tokenAlice     = "tok-alice"     // alice in tenant t1
	tokenBob       = "tok-bob"       // bob in tenant t2
	tokenCarol     = "tok-carol"     // carol in tenant t1; authsvc waits for fakeAuth.hold
	tokenAuthDown  = "tok-auth-down" // authsvc answers Unavailable
	tokenExpired   = "tok-expired"   // authsvc: token expired
	tokenOdd       = "tok-odd"       // authsvc refuses with a reason the ingress does not know
	tokenNoScope   = "tok-no-scope"  // authsvc: a valid token without the scope its issuer requires
	tokenDave      = "tok-dave"      // dave in tenant t1, API token id idDave
	tokenDave2     = "tok-dave-2"    // dave in tenant t1 again, another API token (idDave2)
	idDave         = "id-dave-1"
	idDave2        = "id-dave-2"
	idCarol        = "id-carol"
	serverHidden   = "hidden"        // policy denies initialize
	serverMute     = "mute"          // the upstream answers initialize with nothing
	serverOld      = "old"           // the upstream negotiates 2024-11-05
	serverBatching = "batching"      // the upstream negotiates 2025-03-26 (batches)
	tokenOIDC      = "eyJ.oidc.erin" // erin in tenant t1, authenticated with an OpenID Connect JWT
	serverExchange = "exchange"      // its identity mode is token-exchange
	serverBroken   = "broken"        // its circuit breaker is open: initialize is refused
	serverPinned   = "pinned"        // its tools are pinned, and none is (pins.go)
)

type fakeAuth struct {
	calls     atomic.Int64
	metaCalls atomic.Int64
	// hold, when set, is waited for by tokenCarol's authentications.
	hold chan struct{}
	// revoked are the credentials authsvc refuses now.
	revoked sync.Map
	// subs receives each revocation subscription (FollowRevocations) for the test to drive;
	// refuseSubs makes subscribing fail, as when authsvc is down.
	subs       chan *fakeSub
	refuseSubs atomic.Bool
}

func newFakeAuth() *fakeAuth { return &fakeAuth{subs: make(chan *fakeSub, 64)} }

// fakeSub is one revocation subscription: the test sends messages, or ends it.
type fakeSub struct {
	req  *authv1.WatchRevocationsRequest
	msgs chan *authv1.WatchRevocationsResponse
	end  chan error
}

// JWKS publishes no key: the fake mints no upstream token.
func (f *fakeAuth) JWKS(context.Context, *connect.Request[authv1.JWKSRequest]) (*connect.Response[authv1.JWKSResponse], error) {
	return connect.NewResponse(&authv1.JWKSResponse{Jwks: `{"keys":[]}`}), nil
}

func (f *fakeAuth) FollowRevocations(ctx context.Context, req *authv1.WatchRevocationsRequest, emit func(*authv1.WatchRevocationsResponse) error) error {
	if f.refuseSubs.Load() {
		return connect.NewError(connect.CodeUnavailable, errors.New("authsvc at 10.0.0.6 unreachable"))
	}
	sub := &fakeSub{req: req, msgs: make(chan *authv1.WatchRevocationsResponse), end: make(chan error, 1)}
	select {
	case f.subs <- sub:
	default:
		return connect.NewError(connect.CodeResourceExhausted, errors.New("the fake's subscriptions are full"))
	}
	for {
		select {
		case m := <-sub.msgs:
			if err := emit(m); err != nil {
				return err
			}
		case err := <-sub.end:
			return err
		case <-ctx.Done():
			return connect.NewError(connect.CodeCanceled, ctx.Err())
		}
	}
}

// send delivers m on the subscription, and returns once the ingress has acted on it: the
// fake emits synchronously, so a heartbeat sent after m is taken only when m's emit returned.
func (s *fakeSub) send(t *testing.T, m *authv1.WatchRevocationsResponse) {
	t.Helper()
	for _, msg := range []*authv1.WatchRevocationsResponse{m, {Revision: m.GetRevision()}} {
		select {
		case s.msgs <- msg:
		case <-time.After(10 * time.Second):
			t.Fatal("the ingress did not take a revocation message")
		}
	}
}

// nextSub waits for the ingress to subscribe.
func (f *fakeAuth) nextSub(t *testing.T, within time.Duration) *fakeSub {
	t.Helper()
	select {
	case s := <-f.subs:
		return s
	case <-time.After(within):
		t.Fatalf("the ingress did not subscribe to revocations within %s", within)
	}
	return nil
}

func (f *fakeAuth) Authenticate(ctx context.Context, req *connect.Request[authv1.AuthenticateRequest]) (*connect.Response[authv1.AuthenticateResponse], error) {
	f.calls.Add(1)
	var p *authv1.Principal
	if _, revoked := f.revoked.Load(req.Msg.GetCredential()); revoked {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("unknown or revoked token"))
	}
	switch req.Msg.GetCredential() {
	case tokenCarol:
		if f.hold != nil {
			select {
			case <-f.hold:
			case <-ctx.Done():
				return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
			}
		}
		p = &authv1.Principal{Id: "carol", Tenant: "t1", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER, Attributes: map[string]string{"token_id": idCarol}}
	case tokenDave:
		p = &authv1.Principal{Id: "dave", Tenant: "t1", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER, Attributes: map[string]string{"token_id": idDave}}
	case tokenDave2:
		p = &authv1.Principal{Id: "dave", Tenant: "t1", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER, Attributes: map[string]string{"token_id": idDave2}}
	case tokenAlice:
		p = &authv1.Principal{Id: "alice", Tenant: "t1", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER}
	case tokenBob:
		p = &authv1.Principal{Id: "bob", Tenant: "t2", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER}
	case tokenOIDC:
		p = &authv1.Principal{Id: "erin", Tenant: "t1", Groups: []string{"ops"}, Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER, Attributes: map[string]string{"auth": "oidc"}}
	case tokenAuthDown:
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("etcd at 10.0.0.7:2379 unreachable"))
	case "":
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("no credential"))
	case tokenExpired:
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("token expired"))
	case tokenOdd:
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("credential refused by rule 7 of /etc/gatehouse/auth.yaml"))
	case tokenNoScope:
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("insufficient scope: token lacks the scope mcp"))
	default:
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("unknown or revoked token"))
	}
	return connect.NewResponse(&authv1.AuthenticateResponse{Principal: p}), nil
}

// Resource metadata the fake authsvc publishes (see ResourceMetadata).
const (
	fakeResource = "https://gw.test"
	fakeIssuer   = "https://idp.test"
)

func (f *fakeAuth) ResourceMetadata(context.Context, *connect.Request[authv1.ResourceMetadataRequest]) (*connect.Response[authv1.ResourceMetadataResponse], error) {
	f.metaCalls.Add(1)
	return connect.NewResponse(&authv1.ResourceMetadataResponse{Resource: fakeResource, AuthorizationServers: []string{fakeIssuer}, ScopesSupported: []string{"mcp"}}), nil
}

// Filter allows every item but "forbidden".
func (fakePolicy) Filter(_ context.Context, req *connect.Request[policyv1.FilterRequest]) (*connect.Response[policyv1.FilterResponse], error) {
	resp := &policyv1.FilterResponse{BundleVersion: "sha256:test"}
	for _, n := range req.Msg.GetNames() {
		resp.Allowed = append(resp.Allowed, n != "forbidden")
	}
	return connect.NewResponse(resp), nil
}

// fakePolicy allows everything but: initialize on serverHidden, the tool "forbidden"
// (denied), "quota" (quota exhausted) and "policy-down" (unavailable).
type fakePolicy struct {
	policyv1connect.UnimplementedPolicyServiceHandler // the admin RPCs the ingress never calls
	permits                                           *permitLog
}

// permitLog is what a fakePolicy hands out for the tool "permit" and what is released.
type permitLog struct {
	mu       sync.Mutex
	issued   []string
	released []string
}

func (p *permitLog) snapshot() (issued, released []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.issued...), append([]string(nil), p.released...)
}

func (f fakePolicy) ReleasePermit(_ context.Context, req *connect.Request[policyv1.ReleasePermitRequest]) (*connect.Response[policyv1.ReleasePermitResponse], error) {
	f.permits.mu.Lock()
	defer f.permits.mu.Unlock()
	f.permits.released = append(f.permits.released, req.Msg.GetPermitId())
	return connect.NewResponse(&policyv1.ReleasePermitResponse{Released: true}), nil
}

func (f fakePolicy) Check(_ context.Context, req *connect.Request[policyv1.CheckRequest]) (*connect.Response[policyv1.CheckResponse], error) {
	allow := &policyv1.CheckResponse{Decision: policyv1.Decision_DECISION_ALLOW, BundleVersion: "sha256:test", PolicyIds: []string{"allow-all"}}
	deny := &policyv1.CheckResponse{Decision: policyv1.Decision_DECISION_DENY, BundleVersion: "sha256:test", PolicyIds: []string{"no-" + req.Msg.GetResource().GetName()}}
	switch {
	case req.Msg.GetAction() == "initialize" && req.Msg.GetResource().GetServer() == serverHidden:
		return connect.NewResponse(deny), nil
	case req.Msg.GetResource().GetName() == "forbidden":
		return connect.NewResponse(deny), nil
	case req.Msg.GetResource().GetName() == "quota":
		// As policysvc refuses: the limit in a QuotaExceeded detail.
		ce := connect.NewError(connect.CodeResourceExhausted, errors.New("tenant t1 over quota"))
		if d, err := connect.NewErrorDetail(&policyv1.QuotaExceeded{Scope: "tool", Rate: 0.5, Burst: 2, RetryAfterSeconds: 3}); err == nil {
			ce.AddDetail(d)
		}
		return nil, ce
	case req.Msg.GetResource().GetName() == "quota-plain":
		return nil, connect.NewError(connect.CodeResourceExhausted, errors.New("tenant t1 over quota")) // no detail: an older policysvc
	case req.Msg.GetResource().GetName() == "permit":
		f.permits.mu.Lock()
		defer f.permits.mu.Unlock()
		id := fmt.Sprintf("permit-%d", len(f.permits.issued))
		f.permits.issued = append(f.permits.issued, id)
		return connect.NewResponse(&policyv1.CheckResponse{Decision: policyv1.Decision_DECISION_ALLOW, BundleVersion: "sha256:test", PermitId: id}), nil
	case req.Msg.GetResource().GetName() == "policy-down":
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("policysvc at 10.0.0.8 down"))
	}
	return connect.NewResponse(allow), nil
}

// fakeAudit keeps the records appended. It refuses the phases in refuse, and holds an
// OUTCOME append while hold is set: it sends on entered and waits for release. The records
// of initialize (session opening) are kept apart, in opened, and neither refused nor held,
// so that tests about calls see their calls' records only.
type fakeAudit struct {
	mu       sync.Mutex
	records  []*auditv1.AppendRequest
	opened   []*auditv1.AppendRequest
	refuse   map[auditv1.Phase]bool
	hold     bool
	entered  chan struct{}
	release  chan struct{}
	appended chan struct{} // one token per append (buffered)
}

func newFakeAudit() *fakeAudit {
	return &fakeAudit{refuse: map[auditv1.Phase]bool{}, entered: make(chan struct{}, 1), release: make(chan struct{}), appended: make(chan struct{}, 1024)}
}

// Verify is not the ingress's: the fake only completes the client interface.
func (f *fakeAudit) Verify(context.Context, *connect.Request[auditv1.VerifyRequest]) (*connect.Response[auditv1.VerifyResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, nil)
}

func (f *fakeAudit) Append(ctx context.Context, req *connect.Request[auditv1.AppendRequest]) (*connect.Response[auditv1.AppendResponse], error) {
	if req.Msg.GetRecord().GetMethod() == "initialize" {
		f.mu.Lock()
		f.opened = append(f.opened, proto.CloneOf(req.Msg))
		f.mu.Unlock()
		return connect.NewResponse(&auditv1.AppendResponse{}), nil
	}
	f.mu.Lock()
	refuse, hold := f.refuse[req.Msg.GetRecord().GetPhase()], f.hold && req.Msg.GetRecord().GetPhase() == auditv1.Phase_PHASE_OUTCOME
	f.mu.Unlock()
	if hold {
		f.entered <- struct{}{}
		select {
		case <-f.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if refuse {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("disk full at /var/lib/gatehouse/audit"))
	}
	f.mu.Lock()
	f.records = append(f.records, proto.CloneOf(req.Msg)) // a copy, as the log keeps its encoding: the caller may reuse the message
	f.mu.Unlock()
	f.appended <- struct{}{}
	return connect.NewResponse(&auditv1.AppendResponse{}), nil
}

// set changes the fake's behaviour under its lock: refuse phase p, or hold outcomes.
func (f *fakeAudit) set(edit func(f *fakeAudit)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	edit(f)
}

// openings are the records of initialize.
func (f *fakeAudit) openings() []*auditv1.AppendRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*auditv1.AppendRequest(nil), f.opened...)
}

func (f *fakeAudit) all() []*auditv1.AppendRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*auditv1.AppendRequest(nil), f.records...)
}

// waitRecords waits until n records were appended.
func (f *fakeAudit) waitRecords(t *testing.T, n int) []*auditv1.AppendRequest {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for len(f.all()) < n {
		select {
		case <-f.appended:
		case <-deadline:
			t.Fatalf("audit holds %d records, want %d", len(f.all()), n)
		}
	}
	return f.all()
}

// fakeBridge answers by method and tool name (see deliver). It counts what it received.
type fakeBridge struct {
	mu         sync.Mutex
	sent       []*bridgev1.SendRequest
	listens    []*bridgev1.ListenRequest
	ended      []string
	flood      []byte        // Subscribe emits this until emit fails, when set
	floodDone  chan error    // Subscribe's end, when flooding
	listening  chan struct{} // a Subscribe is open (buffered)
	hanging    chan struct{} // a "hang" call reached the bridge (buffered)
	push       chan []byte   // messages a quiet Subscribe emits
	chattyDone chan error    // how a "chatty" call's emitting ended
}

func newFakeBridge() *fakeBridge {
	return &fakeBridge{floodDone: make(chan error, 8), listening: make(chan struct{}, 8), hanging: make(chan struct{}, 8), push: make(chan []byte), chattyDone: make(chan error, 8)}
}

func (f *fakeBridge) calls() []*bridgev1.SendRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*bridgev1.SendRequest(nil), f.sent...)
}

func (f *fakeBridge) Deliver(ctx context.Context, req *bridgev1.SendRequest, emit func(*bridgev1.SendResponse) error) error {
	f.mu.Lock()
	f.sent = append(f.sent, req)
	f.mu.Unlock()
	var m struct {
		Method string `json:"method"`
		Params struct {
			Name            string `json:"name"`
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"params"`
	}
	_ = json.Unmarshal(req.GetMessage(), &m)
	id := string(req.GetRequestId())
	result := func(body string) []byte { return []byte(`{"jsonrpc":"2.0","id":` + id + `,"result":` + body + `}`) }
	if m.Method == "initialize" {
		switch req.GetServer() {
		case serverMute:
			return nil
		case serverBroken:
			return breakerRefusal(serverBroken)
		case "gone":
			return connect.NewError(connect.CodeNotFound, errors.New("unknown server"))
		}
		rev := m.Params.ProtocolVersion
		switch req.GetServer() {
		case serverOld:
			rev = "2024-11-05"
		case serverBatching:
			rev = "2025-03-26"
		}
		return emit(&bridgev1.SendResponse{Final: true, ProtocolVersion: rev, Message: result(`{"protocolVersion":"` + rev + `","capabilities":{},"serverInfo":{"name":"fake","version":"1"}}`)})
	}
	if m.Method == "tools/list" {
		return emit(&bridgev1.SendResponse{Final: true, Message: result(`{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"forbidden"},{"name":"add","description":"a + b"}],"nextCursor":"p2"}`)})
	}
	if m.Method != "tools/call" {
		if id == "" {
			return nil // a notification
		}
		return emit(&bridgev1.SendResponse{Final: true, Message: result(`{}`)})
	}
	switch m.Params.Name {
	case "echo":
		return emit(&bridgev1.SendResponse{Final: true, Message: result(`{"content":[{"type":"text","text":"echo"}]}`)})
	case "progress":
		if err := emit(&bridgev1.SendResponse{Message: []byte(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}`)}); err != nil {
			return err
		}
		return emit(&bridgev1.SendResponse{Final: true, Message: result(`{"content":[]}`)})
	case "chatty": // progress until the host cannot take more
		note := []byte(`{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"` + strings.Repeat("x", 16<<10) + `"}}`)
		for {
			if err := emit(&bridgev1.SendResponse{Message: note}); err != nil {
				f.chattyDone <- err
				return err
			}
		}
	case "asks":
		// A server request as upstreams may send it: a fractional id and an extension member,
		// which only the routing reader (jsonrpc.Peek) accepts.
		if err := emit(&bridgev1.SendResponse{Message: []byte(`{"jsonrpc":"2.0","id":1.5,"method":"roots/list","x-upstream":{}}`)}); err != nil {
			return err
		}
		return emit(&bridgev1.SendResponse{Final: true, Message: result(`{"content":[]}`)})
	case "fail":
		return emit(&bridgev1.SendResponse{Final: true, Error: true, Message: []byte(`{"jsonrpc":"2.0","id":` + id + `,"error":{"code":-32602,"message":"no such tool"}}`)})
	case "slow":
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("call timeout of 60s for https://up.example/mcp?key=SECRET"))
	case "gone":
		return connect.NewError(connect.CodeNotFound, errors.New("the session's upstream has ended; start a new session"))
	case "big":
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("the upstream's message exceeds the size limit"))
	case "big-old":
		return connect.NewError(connect.CodeResourceExhausted, errors.New("read stdout: message too large"))
	case "crowded":
		return connect.NewError(connect.CodeResourceExhausted, errors.New("too many upstream processes"))
	case "spawn":
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("cannot start upstream: exec /secret/bin/server: no such file or directory"))
	case "rejected":
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("upstream rejected the message: 500 Internal Server Error: Traceback postgres://u:p@db/x"))
	case "breaker":
		return breakerRefusal(req.GetServer())
	case "down":
		return connect.NewError(connect.CodeUnavailable, errors.New("upstream unavailable: dial tcp 10.1.2.3:443: connection refused"))
	case "mute":
		return nil
	case "bad":
		return connect.NewError(connect.CodeInvalidArgument, errors.New("invalid JSON-RPC message"))
	case "dup":
		return connect.NewError(connect.CodeInvalidArgument, errors.New("request id already in flight"))
	case "cancelled":
		return connect.NewError(connect.CodeCanceled, errors.New("bridge shutting down"))
	case "boom":
		return connect.NewError(connect.CodeInternal, errors.New("panic at /secret/src/bridge.go:42"))
	case "identity":
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("the gateway cannot identify the caller to the upstream"))
	case "exchange-refused":
		return connect.NewError(connect.CodePermissionDenied, errors.New("the authorization server refused to exchange the caller's token for the upstream's"))
	case "hang":
		f.hanging <- struct{}{}
		<-ctx.Done()
		return connect.NewError(connect.CodeCanceled, ctx.Err())
	}
	return emit(&bridgev1.SendResponse{Final: true, Message: result(`{}`)})
}

func (f *fakeBridge) Subscribe(ctx context.Context, req *bridgev1.ListenRequest, ready func() error, emit func(*bridgev1.ListenResponse) error) error {
	f.mu.Lock()
	f.listens = append(f.listens, req)
	f.mu.Unlock()
	if err := ready(); err != nil {
		return err
	}
	f.listening <- struct{}{}
	f.mu.Lock()
	flood := f.flood
	f.mu.Unlock()
	for flood == nil {
		select {
		case m := <-f.push:
			if err := emit(&bridgev1.ListenResponse{Message: m}); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		if err := emit(&bridgev1.ListenResponse{Message: flood}); err != nil {
			f.floodDone <- err
			return err
		}
		if ctx.Err() != nil {
			f.floodDone <- ctx.Err()
			return ctx.Err()
		}
	}
}

func (f *fakeBridge) EndSession(id string) {
	f.mu.Lock()
	f.ended = append(f.ended, id)
	f.mu.Unlock()
}

// fakeSessions is an in-memory session store with the store's cap semantics.
type fakeSessions struct {
	mu      sync.Mutex
	records map[string]sessionstore.Record
	down    bool
	// When set, Create sends on creating and waits for hold to close before it stores.
	creating chan struct{}
	hold     chan struct{}
	lists    atomic.Int64 // List calls
}

func (f *fakeSessions) Create(_ context.Context, rec sessionstore.Record, limit int) (sessionstore.Record, error) {
	if f.hold != nil {
		f.creating <- struct{}{}
		<-f.hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.records {
		if r.Principal == rec.Principal && r.Tenant == rec.Tenant {
			n++
		}
	}
	if limit > 0 && n >= limit {
		return sessionstore.Record{}, sessionstore.ErrTooManySessions
	}
	rec.ID = sessionstore.NewID()
	rec.Created = time.Now()
	f.records[rec.ID] = rec
	return rec, nil
}

func (f *fakeSessions) Update(_ context.Context, rec sessionstore.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.records[rec.ID]; !ok {
		return sessionstore.ErrNotFound
	}
	f.records[rec.ID] = rec
	return nil
}

func (f *fakeSessions) Get(_ context.Context, id string) (sessionstore.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return sessionstore.Record{}, errors.New("etcd 10.0.0.9:2379: context deadline exceeded")
	}
	r, ok := f.records[id]
	if !ok {
		return sessionstore.Record{}, sessionstore.ErrNotFound
	}
	return r, nil
}

func (f *fakeSessions) Touch(context.Context, string) error { return nil }

func (f *fakeSessions) End(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.records[id]; !ok {
		return sessionstore.ErrNotFound
	}
	delete(f.records, id)
	return nil
}

func (f *fakeSessions) List(_ context.Context, tenant, principal string) ([]sessionstore.Record, error) {
	defer f.lists.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []sessionstore.Record
	for _, r := range f.records {
		if r.Tenant == tenant && r.Principal == principal {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeSessions) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.records[id]
	return ok
}

func (f *fakeSessions) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.records)
}

type fakeCatalog struct{}

func (fakeCatalog) Servers() []*registryv1.Server { return nil }

func (fakeCatalog) Server(name string) (*registryv1.Server, bool) {
	if name == serverExchange {
		return &registryv1.Server{Name: name, Identity: &registryv1.UpstreamIdentity{Mode: &registryv1.UpstreamIdentity_TokenExchange{TokenExchange: &registryv1.TokenExchange{}}}}, true
	}
	if name == serverPinned {
		return &registryv1.Server{Name: name, Pin: true}, true
	}
	return &registryv1.Server{Name: name}, true
}

// gateway is the ingress under test on an httptest server built by ingress.NewHTTPServer.
type gateway struct {
	t        *testing.T
	svc      *ingress.Service
	srv      *httptest.Server
	logs     *testsync.Buffer
	auth     *fakeAuth
	audit    *fakeAudit
	policy   fakePolicy
	bridge   *fakeBridge
	sessions *fakeSessions
}

func newGateway(t *testing.T, edit func(*ingress.Config)) *gateway {
	t.Helper()
	cfg := ingress.Config{AllowedHosts: "127.0.0.1,localhost", AuthCacheTTL: time.Minute, MaxBodyBytes: 64 << 10, MaxBatch: 4, MaxSessionsPerPrincipal: 8, AuthFailRate: 10, AuthFailBurst: 20, MaxStreamsPerPrincipal: 16}
	if edit != nil {
		edit(&cfg)
	}
	g := &gateway{t: t, logs: &testsync.Buffer{}, auth: newFakeAuth(), audit: newFakeAudit(), bridge: newFakeBridge(), sessions: &fakeSessions{records: map[string]sessionstore.Record{}}}
	g.policy = fakePolicy{permits: &permitLog{}}
	svc, err := ingress.New(cfg, ingress.Deps{Auth: g.auth, Policy: g.policy, Bridge: g.bridge, Audit: g.audit, Catalog: fakeCatalog{}, Sessions: g.sessions}, slog.New(slog.NewTextHandler(g.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetReady(true)
	g.svc = svc
	g.srv = httptest.NewUnstartedServer(svc.Handler())
	g.srv.Config = ingress.NewHTTPServer(svc.Handler(), cfg)
	g.srv.Start()
	t.Cleanup(func() {
		g.srv.CloseClientConnections()
		g.srv.Close()
		_ = svc.Close(context.Background())
	})
	return g
}

func (g *gateway) url(server string) string { return g.srv.URL + "/servers/" + server + "/mcp" }

// response is one answer of the gateway, with its JSON-RPC error when the body holds one.
type response struct {
	status  int
	header  http.Header
	body    []byte
	payload []byte // the JSON-RPC message: the body, or an SSE stream's last event
	code    int
	msg     string
}

// do sends one request; header values replace the defaults (a POST of JSON accepting JSON
// and SSE with alice's token); an empty value removes the header.
func (g *gateway) do(method, server, body string, header map[string]string) response {
	g.t.Helper()
	req, err := http.NewRequest(method, g.url(server), strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tokenAlice)
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 20 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, server, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("%s %s: read: %v", method, server, err)
	}
	return decode(resp.StatusCode, resp.Header, b)
}

// decode reads the JSON-RPC error of a body: JSON, the last event of an SSE stream, or the
// first member of a batch.
func decode(status int, header http.Header, b []byte) response {
	r := response{status: status, header: header, body: b}
	payload := b
	if strings.HasPrefix(header.Get("Content-Type"), "text/event-stream") {
		payload = nil
		for _, line := range strings.Split(string(b), "\n") {
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				payload = []byte(d)
			}
		}
	}
	var one struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	r.payload = payload
	var many []json.RawMessage
	if json.Unmarshal(payload, &many) == nil && len(many) > 0 {
		payload = many[0]
	}
	if json.Unmarshal(payload, &one) == nil {
		r.code, r.msg = one.Error.Code, one.Error.Message
	}
	return r
}

// initialize opens a session of alice (or of the token given) on server at revision.
func (g *gateway) initialize(server, token, revision string) string {
	g.t.Helper()
	r := g.do(http.MethodPost, server, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+revision+`","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`,
		map[string]string{"Authorization": "Bearer " + token})
	sid := r.header.Get("Mcp-Session-Id")
	if r.status != http.StatusOK || sid == "" {
		g.t.Fatalf("initialize %s: %d %s", server, r.status, r.body)
	}
	return sid
}

// callTool posts a tools/call on the session.
func (g *gateway) callTool(server, sid, revision, tool string) response {
	g.t.Helper()
	return g.do(http.MethodPost, server, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"`+tool+`","arguments":{"text":"x"}}}`,
		map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": revision})
}

// answerOf posts a tools/call and returns as soon as its answer has arrived, without waiting
// for the end of the response: an SSE stream is read event by event.
func (g *gateway) answerOf(server, sid, tool string) response {
	req, _ := http.NewRequest(http.MethodPost, g.url(server), strings.NewReader(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"`+tool+`","arguments":{}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tokenAlice)
	req.Header.Set("Mcp-Session-Id", sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{msg: err.Error()}
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		return decode(resp.StatusCode, resp.Header, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && strings.Contains(d, `"id":7`) {
			return decode(resp.StatusCode, http.Header{"Content-Type": {"application/json"}}, []byte(d))
		}
	}
	return response{status: resp.StatusCode, msg: "the stream ended without the answer"}
}

// breakerRefusal is the bridge's refusal of a call by the server's open circuit breaker:
// UNAVAILABLE with a BreakerOpen detail, a wait of 24.2 s.
func breakerRefusal(server string) error {
	ce := connect.NewError(connect.CodeUnavailable, errors.New(`the circuit breaker of server "`+server+`" is open; /secret/path`))
	d, err := connect.NewErrorDetail(&bridgev1.BreakerOpen{Server: server, RetryAfter: durationpb.New(24200 * time.Millisecond)})
	if err != nil {
		panic(err)
	}
	ce.AddDetail(d)
	return ce
}
