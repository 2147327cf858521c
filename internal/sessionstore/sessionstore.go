// Package sessionstore keeps gateway MCP sessions in etcd, each under a lease that is the
// session's idle timeout, with a local cache kept correct by a watch: any replica can serve
// any session, and a session ended anywhere (DELETE, expiry, revocation) is gone everywhere.
package sessionstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPrefix is where sessions live in etcd.
const DefaultPrefix = "/gatehouse/sessions/"

// Errors of the store.
var (
	// ErrNotFound is returned for a session that does not exist, ended or expired.
	ErrNotFound = errors.New("session not found")
	// ErrTooManySessions is returned when a principal already holds its limit of sessions.
	ErrTooManySessions = errors.New("too many sessions for this principal")
)

// Record is what the gateway knows about one host session.
type Record struct {
	ID        string `json:"id"`
	Server    string `json:"server"`
	Principal string `json:"principal"`
	Tenant    string `json:"tenant"`
	// TokenID is the API token that created the session ("" for other credentials): only
	// requests authenticated by that token may use it, and its revocation ends it.
	TokenID         string    `json:"tokenId,omitempty"`
	ProtocolVersion string    `json:"protocolVersion,omitempty"`
	Created         time.Time `json:"created"`
	// Aggregated marks a session of the aggregated endpoint (/mcp; Server is empty): the
	// gateway answered its initialize, and its upstreams open lazily.
	Aggregated bool `json:"aggregated,omitempty"`
	// Servers are an aggregated session's servers, in configuration order: those its
	// principal was allowed to initialize when it opened.
	Servers []string `json:"servers,omitempty"`
	// Initialize is an aggregated session's initialize request, the host's params under an
	// id of the gateway's: what each upstream is opened with.
	Initialize json.RawMessage `json:"initialize,omitempty"`
	// CursorKey signs an aggregated session's list cursors (hex), so a cursor is honoured
	// only in the session that was given it.
	CursorKey string `json:"cursorKey,omitempty"`
}

type entry struct {
	rec       Record
	lease     clientv3.LeaseID
	touchedAt time.Time
}

// Store is the etcd-backed session store.
type Store struct {
	kv     *clientv3.Client
	prefix string
	ttl    time.Duration
	logger *slog.Logger
	now    func() time.Time

	mu    sync.RWMutex
	cache map[string]*entry
}

// New returns a store that keeps sessions under prefix with an idle timeout of ttl
// (at least one second: etcd leases count whole seconds).
func New(kv *clientv3.Client, prefix string, ttl time.Duration, logger *slog.Logger) *Store {
	if ttl < time.Second {
		ttl = time.Second
	}
	return &Store{kv: kv, prefix: prefix, ttl: ttl, logger: logger, now: time.Now, cache: map[string]*entry{}}
}

// NewID returns a session id of 256 random bits, hex encoded (visible ASCII).
func NewID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Store) key(id string) string { return s.prefix + id }

// Create stores a new session under a fresh lease and returns it with its id set. A
// principal may hold at most limit live sessions (0: no limit); past it Create fails with
// ErrTooManySessions. The cap is enforced atomically: each of the principal's sessions holds
// one of limit numbered slots, claimed in the same etcd transaction that writes the session
// (compare-and-create on the slot key), so concurrent creates on any replica never overshoot.
// Slots share the session's lease and are freed with it.
func (s *Store) Create(ctx context.Context, rec Record, limit int) (Record, error) {
	rec.ID = NewID()
	rec.Created = s.now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return Record{}, err
	}
	lease, err := s.kv.Grant(ctx, int64((s.ttl+time.Second-1)/time.Second))
	if err != nil {
		return Record{}, fmt.Errorf("grant session lease: %w", err)
	}
	if err := s.claim(ctx, rec, string(b), lease.ID, limit); err != nil {
		// The lease would expire by itself; revoking it frees etcd at once.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if _, rerr := s.kv.Revoke(rctx, lease.ID); rerr != nil {
			s.logger.Debug("revoke unused session lease", "err", rerr)
		}
		cancel()
		return Record{}, err
	}
	s.remember(rec, lease.ID)
	return rec, nil
}

// claim writes the session record together with its entry in the owner's index. Under a
// limit the entry is a free slot (slot-0 .. slot-(limit-1)) taken only if nobody holds it;
// a lost race re-reads the index (in the same round trip) and tries another free slot. Every
// lost race means another create took a slot, so at most limit+1 rounds are needed before the
// principal is at its cap.
func (s *Store) claim(ctx context.Context, rec Record, value string, lease clientv3.LeaseID, limit int) error {
	owner := s.ownerPrefix(rec)
	if limit <= 0 {
		if _, err := s.kv.Txn(ctx).Then(
			clientv3.OpPut(s.key(rec.ID), value, clientv3.WithLease(lease)),
			clientv3.OpPut(owner+"id-"+rec.ID, "", clientv3.WithLease(lease)),
		).Commit(); err != nil {
			return fmt.Errorf("store session: %w", err)
		}
		return nil
	}
	resp, err := s.kv.Get(ctx, owner, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("count sessions: %w", err)
	}
	held := resp.Kvs
	for round := 0; round <= limit; round++ {
		slot, ok := freeSlot(owner, held, limit)
		if !ok {
			return fmt.Errorf("%w: %d of %d", ErrTooManySessions, len(held), limit)
		}
		key := owner + slot
		txn, err := s.kv.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(
				clientv3.OpPut(s.key(rec.ID), value, clientv3.WithLease(lease)),
				clientv3.OpPut(key, rec.ID, clientv3.WithLease(lease)),
			).
			Else(clientv3.OpGet(owner, clientv3.WithPrefix(), clientv3.WithKeysOnly())).
			Commit()
		if err != nil {
			return fmt.Errorf("store session: %w", err)
		}
		if txn.Succeeded {
			return nil
		}
		held = txn.Responses[0].GetResponseRange().Kvs
	}
	return fmt.Errorf("%w: the principal's sessions changed too often to claim a slot", ErrTooManySessions)
}

// freeSlot picks a random slot not among held, or reports that held fills the limit. Random
// choice spreads concurrent creators over the free slots, so few of them collide.
func freeSlot(owner string, held []*mvccpb.KeyValue, limit int) (string, bool) {
	if len(held) >= limit {
		return "", false
	}
	taken := make(map[string]bool, len(held))
	for _, kv := range held {
		taken[strings.TrimPrefix(string(kv.Key), owner)] = true
	}
	free := make([]string, 0, limit-len(held))
	for i := 0; i < limit; i++ {
		if slot := "slot-" + strconv.Itoa(i); !taken[slot] {
			free = append(free, slot)
		}
	}
	if len(free) == 0 {
		return "", false
	}
	return free[mrand.IntN(len(free))], true
}

// ownerPrefix is where the index of a principal's sessions lives: beside the sessions, not
// under their prefix, so the session watch never sees it.
func (s *Store) ownerPrefix(rec Record) string {
	return strings.TrimSuffix(s.prefix, "/") + "-by-principal/" + rec.Tenant + "/" + rec.Principal + "/"
}

// listBatch is how many keys one read of List takes, and how many records one transaction
// reads (etcd's default --max-txn-ops is 128).
const listBatch = 100

// List returns the live sessions of a principal, from etcd (sessions created on every
// replica), through the principal's index of sessions.
func (s *Store) List(ctx context.Context, tenant, principal string) ([]Record, error) {
	owner := s.ownerPrefix(Record{Tenant: tenant, Principal: principal})
	end := clientv3.GetPrefixRangeEnd(owner)
	var out []Record
	from := owner
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listBatch)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.kv.Get(ctx, from, opts...)
		if err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		rev = resp.Header.Revision
		var reads []clientv3.Op
		for _, kv := range resp.Kvs {
			// An index entry is a slot holding the session id (under a limit) or
			// "id-"+the session id.
			id := string(kv.Value)
			if rest, ok := strings.CutPrefix(strings.TrimPrefix(string(kv.Key), owner), "id-"); ok {
				id = rest
			}
			if validID(id) {
				reads = append(reads, clientv3.OpGet(s.key(id), clientv3.WithRev(rev)))
			}
		}
		if len(reads) > 0 {
			txn, err := s.kv.Txn(ctx).Then(reads...).Commit()
			if err != nil {
				return nil, fmt.Errorf("read sessions: %w", err)
			}
			for _, r := range txn.Responses {
				for _, kv := range r.GetResponseRange().GetKvs() {
					var rec Record
					if err := json.Unmarshal(kv.Value, &rec); err != nil {
						return nil, fmt.Errorf("decode session %s: %w", kv.Key, err)
					}
					out = append(out, rec)
				}
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Update rewrites a session's record (e.g. its negotiated revision) under the same lease.
func (s *Store) Update(ctx context.Context, rec Record) error {
	s.mu.RLock()
	e, ok := s.cache[rec.ID]
	s.mu.RUnlock()
	if !ok {
		if _, err := s.Get(ctx, rec.ID); err != nil {
			return err
		}
		s.mu.RLock()
		e, ok = s.cache[rec.ID]
		s.mu.RUnlock()
		if !ok {
			return ErrNotFound
		}
	}
	// Only update a session that still exists: a concurrent DELETE must win.
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.key(rec.ID)), ">", 0)).
		Then(clientv3.OpPut(s.key(rec.ID), string(b), clientv3.WithLease(e.lease))).
		Commit()
	if err != nil {
		return fmt.Errorf("update session: %w", err)
	}
	if !resp.Succeeded {
		s.forget(rec.ID)
		return ErrNotFound
	}
	s.remember(rec, e.lease)
	return nil
}

func (s *Store) remember(rec Record, lease clientv3.LeaseID) {
	s.mu.Lock()
	s.cache[rec.ID] = &entry{rec: rec, lease: lease, touchedAt: s.now()}
	s.mu.Unlock()
}

func (s *Store) forget(id string) {
	s.mu.Lock()
	delete(s.cache, id)
	s.mu.Unlock()
}

// Get returns a live session, from the cache when it holds it.
func (s *Store) Get(ctx context.Context, id string) (Record, error) {
	if !validID(id) {
		return Record{}, ErrNotFound
	}
	s.mu.RLock()
	e, ok := s.cache[id]
	s.mu.RUnlock()
	if ok {
		return e.rec, nil
	}
	resp, err := s.kv.Get(ctx, s.key(id))
	if err != nil {
		return Record{}, fmt.Errorf("read session: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Record{}, ErrNotFound
	}
	var rec Record
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return Record{}, fmt.Errorf("decode session %s: %w", id, err)
	}
	s.mu.Lock()
	s.cache[id] = &entry{rec: rec, lease: clientv3.LeaseID(resp.Kvs[0].Lease)}
	s.mu.Unlock()
	return rec, nil
}

// Touch extends a session's idle timeout. It talks to etcd at most once per quarter of the
// timeout per session, so the hot path rarely pays for it.
func (s *Store) Touch(ctx context.Context, id string) error {
	now := s.now()
	// The common case, touched recently, needs only the read lock that every call's Get takes.
	s.mu.RLock()
	e, ok := s.cache[id]
	fresh := ok && now.Sub(e.touchedAt) < s.ttl/4
	s.mu.RUnlock()
	if fresh {
		return nil
	}
	s.mu.Lock()
	e, ok = s.cache[id]
	if !ok {
		s.mu.Unlock()
		return ErrNotFound
	}
	if now.Sub(e.touchedAt) < s.ttl/4 {
		s.mu.Unlock()
		return nil
	}
	e.touchedAt = now
	lease := e.lease
	s.mu.Unlock()
	if _, err := s.kv.KeepAliveOnce(ctx, lease); err != nil {
		if strings.Contains(err.Error(), "requested lease not found") {
			s.forget(id)
			return ErrNotFound
		}
		return fmt.Errorf("keep session alive: %w", err)
	}
	return nil
}

// End ends a session: revoking its lease deletes the record everywhere.
func (s *Store) End(ctx context.Context, id string) error {
	if _, err := s.Get(ctx, id); err != nil {
		return err
	}
	s.mu.Lock()
	e, ok := s.cache[id]
	delete(s.cache, id)
	s.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	if _, err := s.kv.Revoke(ctx, e.lease); err != nil {
		if strings.Contains(err.Error(), "requested lease not found") {
			return ErrNotFound
		}
		return fmt.Errorf("revoke session lease: %w", err)
	}
	return nil
}

// Watch calls ended with the id of every session that ends (deleted, expired or revoked) until
// ctx ends, and drops it from the cache. It resumes after broken watches.
func (s *Store) Watch(ctx context.Context, ended func(id string)) {
	var next int64 // the revision to resume from after a broken watch; 0: from now
	for ctx.Err() == nil {
		wctx := clientv3.WithRequireLeader(ctx)
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithFilterPut()}
		if next > 0 {
			opts = append(opts, clientv3.WithRev(next))
		}
		for resp := range s.kv.Watch(wctx, s.prefix, opts...) {
			if resp.CompactRevision > 0 {
				// Deletes before the compaction are lost to this watch: their upstreams stay
				// until the bridge stops. Rare (the gap must outlast etcd's compaction), logged.
				s.logger.Warn("session watch compacted; resuming after it", "revision", resp.CompactRevision)
				next = resp.CompactRevision
				break
			}
			if err := resp.Err(); err != nil {
				s.logger.Warn("session watch", "err", err)
				break
			}
			next = resp.Header.Revision + 1
			for _, ev := range resp.Events {
				id := strings.TrimPrefix(string(ev.Kv.Key), s.prefix)
				s.forget(id)
				if ended != nil {
					ended(id)
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// Reset ends every session (for a single-process gateway starting over: the upstreams of
// its earlier sessions are gone). It returns how many there were.
func (s *Store) Reset(ctx context.Context) (int64, error) {
	resp, err := s.kv.Delete(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("reset sessions: %w", err)
	}
	if _, err := s.kv.Delete(ctx, strings.TrimSuffix(s.prefix, "/")+"-by-principal/", clientv3.WithPrefix()); err != nil {
		return 0, fmt.Errorf("reset sessions: %w", err)
	}
	s.mu.Lock()
	clear(s.cache)
	s.mu.Unlock()
	return resp.Deleted, nil
}

// validID bounds what reaches etcd: ids are 64 lowercase hex characters.
func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
