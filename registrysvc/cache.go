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

// load replaces the cache with every server and pin set in etcd and sends the snapshot to
// every subscriber. It returns the revision it read at.
func (s *Service) load(ctx context.Context) (int64, error) {
	resp, err := s.kv.Get(ctx, s.root, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read servers: %w", err)
	}
	st := newState()
	for _, kv := range resp.Kvs {
		st.put(s, kv)
	}
	servers := make(map[string]*registryv1.Server, len(st.configured)+len(st.imported))
	for name := range st.names() {
		if srv := st.effective(name); srv != nil {
			servers[name] = srv
		}
	}
	s.mu.Lock()
	s.st = st
	s.servers = servers
	s.advance(resp.Header.Revision)
	s.broadcast(s.snapshotLocked())
	s.mu.Unlock()
	s.readyOnce.Do(func() { close(s.ready) })
	s.logger.Info("registry snapshot loaded", "servers", len(servers), "imported", len(st.imported), "pinned", len(st.pins), "rev", resp.Header.Revision)
	return resp.Header.Revision, nil
}

// state is what etcd holds under the registry's prefix: the configuration's servers, the
// imported ones and the pins, each by server name.
type state struct {
	configured map[string]*registryv1.Server
	imported   map[string]*registryv1.Server
	pins       map[string]*registryv1.ServerPins
}

func newState() *state {
	return &state{configured: map[string]*registryv1.Server{}, imported: map[string]*registryv1.Server{}, pins: map[string]*registryv1.ServerPins{}}
}

// names yields every server name either map holds.
func (st *state) names() func(func(string) bool) {
	return func(yield func(string) bool) {
		for name := range st.configured {
			if !yield(name) {
				return
			}
		}
		for name := range st.imported {
			if _, dup := st.configured[name]; !dup && !yield(name) {
				return
			}
		}
	}
}

// effective is the server the catalogue shows under name: the configuration's when both
// hold one (ImportServers refuses such a name, but a later configuration may add it), else
// the imported one.
func (st *state) effective(name string) *registryv1.Server {
	if srv, ok := st.configured[name]; ok {
		return srv
	}
	return st.imported[name]
}

// put applies one stored key (a PUT) and returns the server name it concerns and whether it
// was a server (rather than pins); ok is false for a key of none of the three kinds.
func (st *state) put(s *Service, kv *mvccpb.KeyValue) (name string, server, ok bool) {
	key := string(kv.Key)
	switch {
	case strings.HasPrefix(key, s.prefix):
		name = strings.TrimPrefix(key, s.prefix)
		if srv, good := s.decode(kv, s.prefix, false); good {
			st.configured[name] = srv
		} else {
			delete(st.configured, name)
		}
		return name, true, true
	case strings.HasPrefix(key, s.importedPrefix):
		name = strings.TrimPrefix(key, s.importedPrefix)
		if srv, good := s.decode(kv, s.importedPrefix, true); good {
			st.imported[name] = srv
		} else {
			delete(st.imported, name)
		}
		return name, true, true
	case strings.HasPrefix(key, s.pinsPrefix):
		name = strings.TrimPrefix(key, s.pinsPrefix)
		if p, good := s.decodePins(kv); good {
			st.pins[name] = p
		} else {
			delete(st.pins, name)
		}
		return name, false, true
	}
	return "", false, false
}

// del applies one deleted key, as put.
func (st *state) del(s *Service, key string) (name string, server, ok bool) {
	switch {
	case strings.HasPrefix(key, s.prefix):
		name = strings.TrimPrefix(key, s.prefix)
		delete(st.configured, name)
		return name, true, true
	case strings.HasPrefix(key, s.importedPrefix):
		name = strings.TrimPrefix(key, s.importedPrefix)
		delete(st.imported, name)
		return name, true, true
	case strings.HasPrefix(key, s.pinsPrefix):
		name = strings.TrimPrefix(key, s.pinsPrefix)
		delete(st.pins, name)
		return name, false, true
	}
	return "", false, false
}

// watch applies etcd's changes after rev to the cache until the watch breaks, and returns
// the revision up to which every change has been applied.
func (s *Service) watch(ctx context.Context, rev int64) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(metadata.AppendToOutgoingContext(ctx, watchStreamKey...)))
	defer cancel()
	wch := s.kv.Watch(wctx, s.root, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
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
	msg := &registryv1.WatchServersResponse{}
	s.mu.Lock()
	defer s.mu.Unlock()
	servers := map[string]bool{}
	pins := map[string]bool{}
	var rev int64
	for _, ev := range events {
		rev = max(rev, ev.Kv.ModRevision)
		var name string
		var server, ok bool
		if ev.Type == mvccpb.PUT {
			// An unreadable or invalid value takes the server (or pins) out.
			name, server, ok = s.st.put(s, ev.Kv)
		} else {
			name, server, ok = s.st.del(s, string(ev.Kv.Key))
		}
		switch {
		case !ok:
		case server:
			servers[name] = true
		default:
			pins[name] = true
		}
	}
	for name := range servers {
		srv := s.st.effective(name)
		cur, had := s.servers[name]
		switch {
		case srv == nil && had:
			delete(s.servers, name)
			msg.Deleted = append(msg.Deleted, name)
		case srv != nil && srv != cur:
			s.servers[name] = srv
			msg.Servers = append(msg.Servers, srv)
		}
	}
	for name := range pins {
		if p, ok := s.st.pins[name]; ok {
			msg.Pins = append(msg.Pins, p)
		} else {
			msg.PinsDeleted = append(msg.PinsDeleted, name)
		}
	}
	s.advance(rev)
	if len(msg.Servers) == 0 && len(msg.Deleted) == 0 && len(msg.Pins) == 0 && len(msg.PinsDeleted) == 0 {
		return
	}
	sortByName(msg.Servers)
	slices.Sort(msg.Deleted)
	slices.SortFunc(msg.Pins, func(a, b *registryv1.ServerPins) int { return strings.Compare(a.GetServer(), b.GetServer()) })
	slices.Sort(msg.PinsDeleted)
	s.broadcast(msg)
}

// decode reads one stored server; a value that does not parse, names another server or
// fails validation is logged and left out. imported says which prefix it is under; the
// message's own imported flag is set to match.
func (s *Service) decode(kv *mvccpb.KeyValue, prefix string, imported bool) (*registryv1.Server, bool) {
	name := strings.TrimPrefix(string(kv.Key), prefix)
	srv := &registryv1.Server{}
	err := protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(kv.Value, srv)
	if err == nil && srv.GetName() != name {
		err = fmt.Errorf("the value names server %q", srv.GetName())
	}
	if err == nil {
		srv.Imported = imported
		err = config.Validate(srv)
	}
	if err != nil {
		s.logger.Warn("ignoring a bad server in etcd", "key", string(kv.Key), "rev", kv.ModRevision, "err", err)
		return nil, false
	}
	return srv, true
}

// decodePins reads one server's stored pins, with the revision they were stored at.
func (s *Service) decodePins(kv *mvccpb.KeyValue) (*registryv1.ServerPins, bool) {
	name := strings.TrimPrefix(string(kv.Key), s.pinsPrefix)
	p := &registryv1.ServerPins{}
	err := protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(kv.Value, p)
	if err == nil && p.GetServer() != name {
		err = fmt.Errorf("the value names server %q", p.GetServer())
	}
	if err == nil {
		err = validatePins(p)
	}
	if err != nil {
		s.logger.Warn("ignoring bad pins in etcd", "key", string(kv.Key), "rev", kv.ModRevision, "err", err)
		return nil, false
	}
	p.Revision = kv.ModRevision
	return p, true
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
	for _, p := range s.st.pins {
		msg.Pins = append(msg.Pins, p)
	}
	slices.SortFunc(msg.Pins, func(a, b *registryv1.ServerPins) int { return strings.Compare(a.GetServer(), b.GetServer()) })
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
