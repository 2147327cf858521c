package authsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Revocations reach the ingress through authsvc's own RPC, not through etcd: the token
// store's keys are authsvc's storage (DESIGN: no service reaches into another's), so the
// ingress subscribes to WatchRevocations and authsvc watches its own prefix. Each stream is
// one etcd watch of the token records' deletes (a revocation deletes the record, and so does
// etcd when an expired token's lease runs out), read with the deleted record so that every
// revocation names its token id, principal and tenant. A watcher that lost its stream
// resumes after the last revision it received and misses nothing; if etcd compacted that
// history meanwhile, the stream says so (reset) and the watcher must distrust every token.

// Bounds of WatchRevocations.
const (
	// DefaultMaxWatchers bounds concurrent WatchRevocations streams (one per ingress replica).
	DefaultMaxWatchers = 1024
	defaultHeartbeat   = 5 * time.Second
	maxHeartbeat       = 60 * time.Second
	// progressEvery is how often a quiet stream asks etcd how far its watch has caught up
	// (a progress notification goes to every watch of the shared etcd stream, so each
	// watcher asks seldom).
	progressEvery = 10 * time.Second
	// maxRevokedPerMessage bounds one message: a watch response with more deletes is sent
	// as several messages, only the last of which advances the revision.
	maxRevokedPerMessage = 1000
)

// WatchRevocations implements authv1connect.AuthServiceHandler: the stream of tokens that
// stop authenticating.
func (s *Service) WatchRevocations(ctx context.Context, req *connect.Request[authv1.WatchRevocationsRequest], stream *connect.ServerStream[authv1.WatchRevocationsResponse]) error {
	if err := s.FollowRevocations(ctx, req.Msg, stream.Send); err != nil {
		return s.toConnect(err)
	}
	return nil
}

// FollowRevocations is WatchRevocations in this process (the ingress of `gatehouse up` calls
// it directly): emit gets the first message once the watch is established, then every
// revocation and a heartbeat, until ctx ends (nil), emit fails (its error), the service
// closes or etcd fails (Unavailable). Errors are domain errors; WatchRevocations maps them.
func (s *Service) FollowRevocations(ctx context.Context, req *authv1.WatchRevocationsRequest, emit func(*authv1.WatchRevocationsResponse) error) error {
	after := req.GetAfterRevision()
	if after < 0 {
		return invalid("after_revision must not be negative")
	}
	heartbeat := defaultHeartbeat
	if h := req.GetHeartbeatSeconds(); h != 0 {
		if h < 1 || time.Duration(h)*time.Second > maxHeartbeat {
			return invalid("heartbeat_seconds: want 1 to %d", int(maxHeartbeat/time.Second))
		}
		heartbeat = time.Duration(h) * time.Second
	}
	select {
	case s.watchers <- struct{}{}:
		defer func() { <-s.watchers }()
	default:
		return fmt.Errorf("%w: %d WatchRevocations streams are open", errTooManyWatchers, cap(s.watchers))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()
	err := s.tokens.followDeletes(ctx, after, heartbeat, emit)
	if ctx.Err() != nil && s.closing.Err() != nil {
		return fmt.Errorf("%w: the auth service is stopping", errUnavailable)
	}
	return err
}

// followDeletes watches the token records from after+1 (or from now) and reports their
// deletes. It returns nil when ctx ends.
func (ts *tokenStore) followDeletes(ctx context.Context, after int64, heartbeat time.Duration, emit func(*authv1.WatchRevocationsResponse) error) error {
	reset := false
	for {
		err := ts.watchOnce(ctx, after, reset, heartbeat, emit)
		if errors.Is(err, errCompacted) {
			// The history after `after` is gone: start again from now, and say so.
			after, reset = 0, true
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// errCompacted ends one watch whose start revision etcd no longer keeps.
var errCompacted = errors.New("token watch compacted")

func (ts *tokenStore) watchOnce(ctx context.Context, after int64, reset bool, heartbeat time.Duration, emit func(*authv1.WatchRevocationsResponse) error) error {
	// A watch that loses etcd's leader ends rather than waits silently: the watcher then
	// knows it may be missing revocations.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	if after == 0 {
		resp, err := ts.kv.Get(ctx, ts.tokenKey(""), clientv3.WithCountOnly())
		if err != nil {
			return storeError(ctx, "read the token store's revision", err)
		}
		after = resp.Header.Revision
	}
	// safe is the revision up to which every delete has been sent: the last event's, or the
	// revision of a progress notification (sent by etcd only when the watch has caught up).
	// A watch response's own header revision is not safe: a watch catching up is sent
	// history in batches, each headed with the current revision.
	safe := after
	events := ts.kv.Watch(ctx, ts.prefix+"tokens/", clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithPrevKV(),
		clientv3.WithRev(after+1), clientv3.WithCreatedNotify())
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	var asked time.Time // when progress was last asked for
	for {
		select {
		case resp, ok := <-events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch tokens: %w: the watch ended", errUnavailable)
			}
			if resp.CompactRevision > 0 {
				return fmt.Errorf("%w: history before revision %d is gone", errCompacted, resp.CompactRevision)
			}
			if err := resp.Err(); err != nil {
				return storeError(ctx, "watch tokens", err)
			}
			if resp.Created {
				if err := emit(&authv1.WatchRevocationsResponse{Revision: safe, HistoryLost: reset}); err != nil {
					return err
				}
				continue
			}
			if resp.IsProgressNotify() {
				safe = max(safe, resp.Header.Revision)
				continue
			}
			msgs, rev := ts.revocations(resp.Events, safe)
			safe = rev
			for _, m := range msgs {
				if err := emit(m); err != nil {
					return err
				}
			}
			tick.Reset(heartbeat)
		case <-tick.C:
			// Ask etcd to say how far this watch has caught up, so that a quiet watch's
			// resume point does not fall behind etcd's compaction.
			if time.Since(asked) >= progressEvery {
				asked = time.Now()
				_ = ts.kv.RequestProgress(ctx)
			}
			if err := emit(&authv1.WatchRevocationsResponse{Revision: safe}); err != nil {
				return err
			}
		}
	}
}

// revocations turns the deletes of one watch response into messages of at most
// maxRevokedPerMessage tokens; only the last advances the revision (deletes of one revision
// may span messages, and a watcher resuming after a message's revision must not skip the
// rest of them). A delete whose record cannot be read (it should always come with its
// previous value) makes the message a reset: the token it names is unknown.
func (ts *tokenStore) revocations(events []*clientv3.Event, safe int64) ([]*authv1.WatchRevocationsResponse, int64) {
	cur := &authv1.WatchRevocationsResponse{Revision: safe}
	msgs := []*authv1.WatchRevocationsResponse{cur}
	rev := safe
	for _, ev := range events {
		if ev.Type != mvccpb.DELETE {
			continue
		}
		rev = max(rev, ev.Kv.ModRevision)
		var rec record
		if ev.PrevKv == nil || json.Unmarshal(ev.PrevKv.Value, &rec) != nil || rec.TokenID == "" {
			cur.HistoryLost = true
			continue
		}
		if len(cur.Revoked) == maxRevokedPerMessage {
			cur = &authv1.WatchRevocationsResponse{Revision: safe}
			msgs = append(msgs, cur)
		}
		cur.Revoked = append(cur.Revoked, &authv1.RevokedToken{TokenId: rec.TokenID, PrincipalId: rec.PrincipalID, Tenant: rec.Tenant})
	}
	cur.Revision = rev
	return msgs, rev
}

// Close ends every WatchRevocations stream (Unavailable: watchers resubscribe, elsewhere if
// need be); Authenticate and the token RPCs keep answering, so in-flight requests drain.
func (s *Service) Close(context.Context) error {
	s.close()
	return nil
}
