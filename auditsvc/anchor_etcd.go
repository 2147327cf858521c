package auditsvc

import (
	"context"
	"errors"
	"fmt"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// DefaultKeyPrefix is the etcd prefix under which auditsvc keeps its keys (Config.KeyPrefix).
const DefaultKeyPrefix = "/gatehouse/"

// AnchorKey is the etcd key of the log's anchored checkpoint under prefix (empty:
// DefaultKeyPrefix): <prefix>audit/anchor.
func AnchorKey(prefix string) string {
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	return prefix + "audit/anchor"
}

// AnchorKeyFor is the anchor's key of the store Config.Store names: AnchorKey for the file
// store, <prefix>audit/anchor-postgres for the PostgreSQL store. The two keep separate
// chains (the same key would make each store's checkpoints refuse or overwrite the other's).
func AnchorKeyFor(prefix, store string) string {
	if store == StorePostgres {
		return AnchorKey(prefix) + "-postgres"
	}
	return AnchorKey(prefix)
}

// ErrAnchorAhead is Store's error when the anchor holds a later sequence than the checkpoint
// given: a stale or replayed checkpoint never moves it back.
var ErrAnchorAhead = errors.New("the anchor holds a later checkpoint")

// maxStoreAttempts bounds Store's retries when another writer changes the anchor between its
// read and its transaction.
const maxStoreAttempts = 8

// maxAnchorBytes bounds the anchor read back from etcd.
const maxAnchorBytes = 4096

// EtcdAnchor keeps the log's latest checkpoint in etcd under key (AnchorKey).
type EtcdAnchor struct {
	kv  clientv3.KV
	key string
}

// NewEtcdAnchor returns the anchor at key in kv.
func NewEtcdAnchor(kv clientv3.KV, key string) *EtcdAnchor { return &EtcdAnchor{kv: kv, key: key} }

// Load implements Anchor.
func (a *EtcdAnchor) Load(ctx context.Context) (*auditv1.Checkpoint, error) {
	resp, err := a.kv.Get(ctx, a.key)
	if err != nil {
		return nil, fmt.Errorf("read audit anchor: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	v := resp.Kvs[0].Value
	if len(v) > maxAnchorBytes {
		return nil, fmt.Errorf("audit anchor %s is %d bytes, more than %d", a.key, len(v), maxAnchorBytes)
	}
	var c auditv1.Checkpoint
	if err := protojson.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("audit anchor %s: %w", a.key, err)
	}
	return &c, nil
}

// Store implements Anchor: one transaction that puts c only if the anchor is still what was
// read, and what was read is not of a later sequence.
func (a *EtcdAnchor) Store(ctx context.Context, c *auditv1.Checkpoint) error {
	return a.put(ctx, c, false)
}

// Reset implements Anchor.
func (a *EtcdAnchor) Reset(ctx context.Context, c *auditv1.Checkpoint) error {
	return a.put(ctx, c, true)
}

func (a *EtcdAnchor) put(ctx context.Context, c *auditv1.Checkpoint, back bool) error {
	b, err := protojson.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode audit anchor: %w", err)
	}
	for range maxStoreAttempts {
		resp, err := a.kv.Get(ctx, a.key)
		if err != nil {
			return fmt.Errorf("store audit anchor: %w", err)
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(a.key), "=", 0)
		if len(resp.Kvs) > 0 {
			kv := resp.Kvs[0]
			var cur auditv1.Checkpoint
			// An anchor that does not parse is replaced: it anchors nothing.
			if !back && len(kv.Value) <= maxAnchorBytes && protojson.Unmarshal(kv.Value, &cur) == nil && cur.GetSequence() > c.GetSequence() {
				return fmt.Errorf("store audit anchor of sequence %d: %w (sequence %d)", c.GetSequence(), ErrAnchorAhead, cur.GetSequence())
			}
			cmp = clientv3.Compare(clientv3.ModRevision(a.key), "=", kv.ModRevision)
		}
		tr, err := a.kv.Txn(ctx).If(cmp).Then(clientv3.OpPut(a.key, string(b))).Commit()
		if err != nil {
			return fmt.Errorf("store audit anchor: %w", err)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("store audit anchor: changed by another writer %d times in a row", maxStoreAttempts)
}
