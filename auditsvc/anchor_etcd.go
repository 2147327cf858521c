package auditsvc

import (
	"context"
	"fmt"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// AnchorKey is the etcd key of the log's anchored checkpoint.
const AnchorKey = "audit/anchor"

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

// Store implements Anchor.
func (a *EtcdAnchor) Store(ctx context.Context, c *auditv1.Checkpoint) error {
	b, err := protojson.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode audit anchor: %w", err)
	}
	if _, err := a.kv.Put(ctx, a.key, string(b)); err != nil {
		return fmt.Errorf("store audit anchor: %w", err)
	}
	return nil
}
