package registrysvc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdfollow"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
)

// watchStreamKey gives the registry's etcd watch a gRPC stream of its own (the client shares
// a stream among watches with equal metadata), so progress requests reach only it.
var watchStreamKey = []string{"gatehouse-watcher", "registry"}

// subscriber is one WatchServers stream's queue of events.
type subscriber struct {
	events chan *registryv1.WatchServersResponse
	lagged chan struct{} // closed when the subscriber is dropped for falling behind
}

// run keeps the cache in step with etcd until ctx ends: a snapshot, then a watch from just
// after it. A broken watch resumes where it stopped; a compacted one starts over from a new
// snapshot (which every subscriber receives).
func (s *Service) run(ctx context.Context) {
	defer close(s.done)
	etcdfollow.Follow(ctx, etcdfollow.Funcs{Load: s.load, Watch: s.watch}, 0, s.logger, "the registry")
}

// load replaces the cache with every server in etcd and sends the snapshot to every
// subscriber. It returns the revision it read at.
func (s *Service) load(ctx context.Context) (int64, error) {
	resp, err := s.kv.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read servers: %w", err)
	}
	servers := make(map[string]*registryv1.Server, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if srv, ok := s.decode(kv); ok {
			servers[srv.GetName()] = srv
		}
	}
	s.mu.Lock()
	s.servers = servers
	s.advance(resp.Header.Revision)
	s.broadcast(s.snapshotLocked())
	s.mu.Unlock()
	s.readyOnce.Do(func() { close(s.ready) })
	s.logger.Info("registry snapshot loaded", "servers", len(servers), "rev", resp.Header.Revision)
	return resp.Header.Revision, nil
}

// watch applies etcd's changes after rev to the cache until the watch breaks, and returns
// the revision up to which every change has been applied.
func (s *Service) watch(ctx context.Context, rev int64) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(metadata.AppendToOutgoingContext(ctx, watchStreamKey...)))
	defer cancel()
	wch := s.kv.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	s.mu.Lock()
	s.watchCtx = wctx
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.watchCtx = nil
		s.mu.Unlock()
	}()
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return rev, err
		}
		if wr.IsProgressNotify() {
			// Every change up to the header's revision has been delivered.
			rev = max(rev, wr.Header.Revision)
			s.mu.Lock()
			s.advance(rev)
			s.mu.Unlock()
			continue
		}
		if len(wr.Events) == 0 {
			continue
		}
		s.apply(wr.Events)
		rev = max(rev, wr.Events[len(wr.Events)-1].Kv.ModRevision)
	}
	if err := ctx.Err(); err != nil {
		return rev, err
	}
	return rev, errors.New("watch channel closed")
}

// apply applies one batch of events (one watch response: a transaction's changes arrive
// together) to the cache and sends subscribers one message for it.
func (s *Service) apply(events []*clientv3.Event) {
	upserts := map[string]*registryv1.Server{}
	deleted := map[string]bool{}
	var rev int64
	for _, ev := range events {
		rev = max(rev, ev.Kv.ModRevision)
		name := strings.TrimPrefix(string(ev.Kv.Key), s.prefix)
		if ev.Type == mvccpb.PUT {
			if srv, ok := s.decode(ev.Kv); ok {
				upserts[name] = srv
				delete(deleted, name)
				continue
			}
			// An unreadable or invalid spec takes the server out of the catalogue.
		}
		delete(upserts, name)
		deleted[name] = true
	}
	msg := &registryv1.WatchServersResponse{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, srv := range upserts {
		s.servers[name] = srv
		msg.Servers = append(msg.Servers, srv)
	}
	for name := range deleted {
		if _, ok := s.servers[name]; ok {
			delete(s.servers, name)
			msg.Deleted = append(msg.Deleted, name)
		}
	}
	s.advance(rev)
	if len(msg.Servers) == 0 && len(msg.Deleted) == 0 {
		return
	}
	sortByName(msg.Servers)
	slices.Sort(msg.Deleted)
	s.broadcast(msg)
}

// decode reads one stored server; a value that does not parse, names another server or
// fails validation is logged and left out.
func (s *Service) decode(kv *mvccpb.KeyValue) (*registryv1.Server, bool) {
	name := strings.TrimPrefix(string(kv.Key), s.prefix)
	srv := &registryv1.Server{}
	err := protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(kv.Value, srv)
	if err == nil && srv.GetName() != name {
		err = fmt.Errorf("the value names server %q", srv.GetName())
	}
	if err == nil {
		err = config.Validate(srv)
	}
	if err != nil {
		s.logger.Warn("ignoring a bad server in etcd", "key", string(kv.Key), "rev", kv.ModRevision, "err", err)
		return nil, false
	}
	return srv, true
}

// advance records that the cache reflects every change up to rev and wakes waiters.
// s.mu must be held.
func (s *Service) advance(rev int64) {
	if rev <= s.rev {
		return
	}
	s.rev = rev
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitRev waits until the cache reflects every change up to rev. While it waits it asks etcd
// for a progress notification, so a revision with no change under the prefix is confirmed
// too.
func (s *Service) waitRev(ctx context.Context, rev int64) error {
	for {
		s.mu.RLock()
		cur, changed, wctx := s.rev, s.changed, s.watchCtx
		s.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		if wctx != nil {
			_ = s.kv.RequestProgress(wctx)
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-changed:
		case <-t.C:
		case <-s.closing:
			t.Stop()
			return errClosed
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for the registry cache to reach revision %d (at %d): %w", rev, cur, ctx.Err())
		}
		t.Stop()
	}
}

// snapshotLocked returns the whole catalogue as a snapshot message. s.mu must be held.
func (s *Service) snapshotLocked() *registryv1.WatchServersResponse {
	msg := &registryv1.WatchServersResponse{Snapshot: true, Servers: make([]*registryv1.Server, 0, len(s.servers))}
	for _, srv := range s.servers {
		msg.Servers = append(msg.Servers, srv)
	}
	sortByName(msg.Servers)
	return msg
}

// broadcast queues msg for every subscriber, dropping those whose queue is full. s.mu must
// be held (so a new subscriber's snapshot and its first event never overlap or miss).
func (s *Service) broadcast(msg *registryv1.WatchServersResponse) {
	for sub := range s.subs {
		select {
		case sub.events <- msg:
		default:
			delete(s.subs, sub)
			close(sub.lagged)
			s.logger.Warn("dropping a registry watcher that fell behind", "queue", watchBuffer)
		}
	}
}

// subscribe registers a watcher and returns it with the snapshot it starts from.
func (s *Service) subscribe() (*subscriber, *registryv1.WatchServersResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.subs) >= s.maxWatchers {
		return nil, nil, fmt.Errorf("%w (limit %d)", errTooManyWatchers, s.maxWatchers)
	}
	sub := &subscriber{events: make(chan *registryv1.WatchServersResponse, watchBuffer), lagged: make(chan struct{})}
	s.subs[sub] = struct{}{}
	return sub, s.snapshotLocked(), nil
}

func (s *Service) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	delete(s.subs, sub)
	s.mu.Unlock()
}
