// Package etcdclient connects the split-mode binaries to etcd the same way.
package etcdclient

import (
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// New connects to the comma-separated endpoints, with etcd's own logging silenced (the
// services log through slog).
func New(endpoints string) (*clientv3.Client, error) {
	var list []string
	for _, e := range strings.Split(endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			list = append(list, e)
		}
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("etcd: no endpoints in %q", endpoints)
	}
	kv, err := clientv3.New(clientv3.Config{Endpoints: list, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	return kv, nil
}
