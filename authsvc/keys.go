package authsvc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The gateway's signing keys for upstream tokens (gateway-jwt). Every authsvc replica signs
// with the same active key and publishes the same JWKS, so the keys live in etcd, in one
// document under the service's prefix (upstream-signing-keys) that every replica watches.
// The private keys are in that document: etcd is inside the gateway's trust boundary and
// reachable by the gateway only (docs/architecture.md).

const (
	// signingKeysName is the document's key under the prefix.
	signingKeysName = "upstream-signing-keys"
	// signingAlgorithm signs every upstream token: ECDSA P-256, which every JOSE library
	// verifies (EdDSA is still missing from some).
	signingAlgorithm = jose.ES256
	// maxPublishedKeys bounds the document: a rotation that would publish more keys than this
	// (rotations faster than tokens expire) is refused.
	maxPublishedKeys = 16
	// publishGrace keeps a retired key published this long beyond the longest lifetime of a
	// token it signed: clocks differ, and a replica may sign with it until its watch
	// delivers the rotation.
	publishGrace = time.Minute
	// maxKeysDocBytes bounds the document read from etcd.
	maxKeysDocBytes = 1 << 20
	// rotateAttempts bounds the retries of a rotation that raced another writer: each round
	// one writer wins, so this many concurrent rotations all land.
	rotateAttempts = 10
)

// keyDoc is the document in etcd. The last key signs; every earlier one has retired and
// stays published until the tokens it signed have expired (publishUntil).
type keyDoc struct {
	Keys []storedKey `json:"keys"`
}

type storedKey struct {
	KeyID      string          `json:"kid"`
	JWK        json.RawMessage `json:"jwk"` // the private key
	CreateTime time.Time       `json:"create_time"`
	// RetireTime is when the key stopped signing; nil for the active key.
	RetireTime *time.Time `json:"retire_time,omitempty"`
}

// signingKey is one parsed key.
type signingKey struct {
	kid     string
	private *ecdsa.PrivateKey
	public  jose.JSONWebKey
	created time.Time
	retired *time.Time
}

// publishUntil is when a retired key leaves the JWKS: no token it signed is valid then.
func (k *signingKey) publishUntil() time.Time {
	if k.retired == nil {
		return time.Time{}
	}
	return k.retired.Add(maxUpstreamTokenTTL + publishGrace)
}

// keyState is the document as one replica knows it.
type keyState struct {
	keys []*signingKey // in the document's order: the last one is active
	rev  int64         // the document's mod revision; 0 when there is none
}

func (st *keyState) active() *signingKey {
	if st == nil || len(st.keys) == 0 {
		return nil
	}
	return st.keys[len(st.keys)-1]
}

// keyring keeps this replica's copy of the keys, fed by an etcd watch.
type keyring struct {
	kv     Etcd
	key    string
	now    func() time.Time
	logger *slog.Logger
	ctx    context.Context // the service's: it ends at Close, and with it the watch

	mu        sync.Mutex
	state     *keyState     // nil until loaded
	flight    chan struct{} // closed when the load under way ends
	flightErr error
	watching  bool
}

func newKeyring(ctx context.Context, kv Etcd, prefix string, now func() time.Time, logger *slog.Logger) *keyring {
	return &keyring{kv: kv, key: prefix + signingKeysName, now: now, logger: logger, ctx: ctx}
}

// current returns the keys, loading them (and starting the watch) on first use.
func (kr *keyring) current(ctx context.Context) (*keyState, error) {
	for {
		kr.mu.Lock()
		if kr.state != nil {
			st := kr.state
			kr.mu.Unlock()
			return st, nil
		}
		if kr.flight == nil {
			kr.flight = make(chan struct{})
			go kr.load(kr.flight)
		}
		f := kr.flight
		kr.mu.Unlock()
		select {
		case <-f:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		kr.mu.Lock()
		err := kr.flightErr
		kr.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

// load reads the document, shared by every caller waiting for it; it runs detached from
// them, so one leaving does not fail the others.
func (kr *keyring) load(done chan struct{}) {
	ctx, cancel := context.WithTimeout(kr.ctx, 10*time.Second)
	st, seen, err := kr.readAt(ctx)
	cancel()
	kr.mu.Lock()
	kr.flightErr = err
	if err == nil {
		kr.setLocked(st)
		if !kr.watching {
			kr.watching = true
			go kr.watch(seen)
		}
	}
	kr.flight = nil
	kr.mu.Unlock()
	close(done)
}

// setLocked installs st unless this replica already knows a later document.
func (kr *keyring) setLocked(st *keyState) {
	if kr.state == nil || st.rev >= kr.state.rev {
		kr.state = st
	}
}

func (kr *keyring) set(st *keyState) {
	kr.mu.Lock()
	kr.setLocked(st)
	kr.mu.Unlock()
}

// read gets the document from etcd.
func (kr *keyring) read(ctx context.Context) (*keyState, error) {
	st, _, err := kr.readAt(ctx)
	return st, err
}

// readAt gets the document from etcd, and the store's revision it was read at: a watch from
// the next one misses no change.
func (kr *keyring) readAt(ctx context.Context) (*keyState, int64, error) {
	resp, err := kr.kv.Get(ctx, kr.key)
	if err != nil {
		return nil, 0, storeError(ctx, "read signing keys", err)
	}
	if len(resp.Kvs) == 0 {
		return &keyState{}, resp.Header.Revision, nil
	}
	st, err := parseKeys(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	return st, resp.Header.Revision, err
}

// watch follows the document from after the store's revision rev until Close, starting over
// from a fresh read when the watch breaks (compaction, a lost leader).
func (kr *keyring) watch(rev int64) {
	backoff := 100 * time.Millisecond
	for kr.ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(kr.ctx))
		for resp := range kr.kv.Watch(wctx, kr.key, clientv3.WithRev(rev+1)) {
			if resp.Err() != nil {
				break
			}
			backoff = 100 * time.Millisecond
			for _, ev := range resp.Events {
				rev = ev.Kv.ModRevision
				if ev.Type == clientv3.EventTypeDelete {
					kr.set(&keyState{rev: rev})
					continue
				}
				st, err := parseKeys(ev.Kv.Value, ev.Kv.ModRevision)
				if err != nil {
					kr.logger.Error("signing keys in etcd do not parse; keeping the previous ones", "err", err)
					continue
				}
				kr.set(st)
			}
		}
		cancel()
		if kr.ctx.Err() != nil {
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-kr.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
		rctx, rcancel := context.WithTimeout(kr.ctx, 10*time.Second)
		st, seen, err := kr.readAt(rctx)
		rcancel()
		if err != nil {
			kr.logger.Warn("signing keys: watch broken and etcd unreadable; retrying", "err", err)
			continue
		}
		kr.set(st)
		rev = max(rev, seen)
	}
}

// signer returns the active key, creating the first one when there is none. Replicas that
// create it at once agree on one: only the first transaction writes.
func (kr *keyring) signer(ctx context.Context) (*signingKey, error) {
	st, err := kr.current(ctx)
	if err != nil {
		return nil, err
	}
	if k := st.active(); k != nil {
		return k, nil
	}
	doc := keyDoc{}
	if _, err := kr.addKey(&doc); err != nil {
		return nil, err
	}
	st, err = kr.write(ctx, &doc, st.rev)
	if errors.Is(err, errConflict) {
		if st, err = kr.read(ctx); err == nil && st.active() == nil {
			err = errors.New("signing keys: the document has no key after a concurrent write")
		}
	}
	if err != nil {
		return nil, err
	}
	kr.set(st)
	kr.logger.Info("upstream signing key created", "kid", st.active().kid)
	return st.active(), nil
}

// rotate adds a new active key and retires the current one, which stays published until
// every token it signed has expired. It returns the state written.
func (kr *keyring) rotate(ctx context.Context) (*keyState, error) {
	for attempt := range rotateAttempts {
		if attempt > 0 {
			// A lost race: wait a random moment, so the writers stop colliding.
			t := time.NewTimer(time.Duration(mathrand.Int64N(int64(attempt) * int64(10*time.Millisecond))))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		st, err := kr.read(ctx)
		if err != nil {
			return nil, err
		}
		now := kr.now().UTC()
		doc := keyDoc{}
		for _, k := range st.keys {
			if k.retired != nil && !now.Before(k.publishUntil()) {
				continue // no token it signed is valid any more
			}
			sk, err := k.stored()
			if err != nil {
				return nil, err
			}
			if sk.RetireTime == nil {
				sk.RetireTime = &now
			}
			doc.Keys = append(doc.Keys, sk)
		}
		if len(doc.Keys) >= maxPublishedKeys {
			oldest := doc.Keys[0].RetireTime.Add(maxUpstreamTokenTTL + publishGrace)
			return nil, fmt.Errorf("%w: %d keys are published and the oldest stays until %s; rotate again after it",
				errTooManyKeys, len(doc.Keys), oldest.Format(time.RFC3339))
		}
		if _, err := kr.addKey(&doc); err != nil {
			return nil, err
		}
		next, err := kr.write(ctx, &doc, st.rev)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		kr.set(next)
		return next, nil
	}
	return nil, fmt.Errorf("%w: the signing keys kept changing; try again", errUnavailable)
}

// errConflict: the document changed since it was read.
var errConflict = errors.New("signing keys changed concurrently")

// write stores doc if the document is still at rev (0: absent) and returns the new state.
func (kr *keyring) write(ctx context.Context, doc *keyDoc, rev int64) (*keyState, error) {
	value, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode signing keys: %w", err)
	}
	cmp := clientv3.Compare(clientv3.ModRevision(kr.key), "=", rev)
	if rev == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(kr.key), "=", 0)
	}
	txn, err := kr.kv.Txn(ctx).If(cmp).Then(clientv3.OpPut(kr.key, string(value))).Commit()
	if err != nil {
		return nil, storeError(ctx, "store signing keys", err)
	}
	if !txn.Succeeded {
		return nil, errConflict
	}
	return parseKeys(value, txn.Header.Revision)
}

// addKey appends a fresh active key to doc.
func (kr *keyring) addKey(doc *keyDoc) (string, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate a signing key: %w", err)
	}
	jwk := jose.JSONWebKey{Key: priv, Algorithm: string(signingAlgorithm), Use: "sig"}
	pub := jwk.Public()
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("signing key thumbprint: %w", err)
	}
	// The key id is the key's RFC 7638 thumbprint: two keys never share one.
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	raw, err := json.Marshal(jwk)
	if err != nil {
		return "", fmt.Errorf("encode a signing key: %w", err)
	}
	doc.Keys = append(doc.Keys, storedKey{KeyID: jwk.KeyID, JWK: raw, CreateTime: kr.now().UTC()})
	return jwk.KeyID, nil
}

func (k *signingKey) stored() (storedKey, error) {
	raw, err := json.Marshal(jose.JSONWebKey{Key: k.private, KeyID: k.kid, Algorithm: string(signingAlgorithm), Use: "sig"})
	if err != nil {
		return storedKey{}, fmt.Errorf("encode signing key %s: %w", k.kid, err)
	}
	return storedKey{KeyID: k.kid, JWK: raw, CreateTime: k.created, RetireTime: k.retired}, nil
}

// parseKeys reads the document: every key an ES256 private key whose id is its own, every
// key but the last retired.
func parseKeys(value []byte, rev int64) (*keyState, error) {
	if len(value) > maxKeysDocBytes {
		return nil, fmt.Errorf("signing keys: the document is %d bytes, over %d", len(value), maxKeysDocBytes)
	}
	var doc keyDoc
	if err := json.Unmarshal(value, &doc); err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	st := &keyState{rev: rev}
	for i, sk := range doc.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(sk.JWK); err != nil {
			return nil, fmt.Errorf("signing keys: key %d: %w", i, err)
		}
		priv, ok := jwk.Key.(*ecdsa.PrivateKey)
		if !ok || priv.Curve != elliptic.P256() || jwk.KeyID != sk.KeyID || jwk.KeyID == "" {
			return nil, fmt.Errorf("signing keys: key %d is not a P-256 private key with its id", i)
		}
		if (sk.RetireTime == nil) != (i == len(doc.Keys)-1) {
			return nil, fmt.Errorf("signing keys: key %d: only the last key may be active", i)
		}
		st.keys = append(st.keys, &signingKey{
			kid: sk.KeyID, private: priv, created: sk.CreateTime, retired: sk.RetireTime,
			public: jose.JSONWebKey{Key: &priv.PublicKey, KeyID: sk.KeyID, Algorithm: string(signingAlgorithm), Use: "sig"},
		})
	}
	return st, nil
}

// published are the keys of the JWKS at now: the active one and the retired ones some token
// may still need.
func (st *keyState) published(now time.Time) []*signingKey {
	return slices.DeleteFunc(slices.Clone(st.keys), func(k *signingKey) bool {
		return k.retired != nil && !now.Before(k.publishUntil())
	})
}
