package registrysvc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const (
	// seedAttempts bounds retries when another writer changes the registry mid-seed.
	seedAttempts = 5
	// seedTimeout bounds a whole Seed, including the wait for this replica's cache.
	seedTimeout = 30 * time.Second
)

// Seed makes etcd hold exactly servers: each is validated, then, in one transaction that
// applies only if nothing under the prefix changed since it was read, changed servers are
// written and servers not listed are deleted. The configuration is the source of truth at
// startup; unchanged servers are not rewritten, so watchers see only real changes. Seed
// returns once this replica's cache reflects the result.
func (s *Service) Seed(ctx context.Context, servers []*registryv1.Server) error {
	if len(servers) > config.MaxServers {
		return fmt.Errorf("seed registry: %d servers, more than the limit of %d", len(servers), config.MaxServers)
	}
	want := make(map[string]*registryv1.Server, len(servers))
	for i, srv := range servers {
		if err := config.Validate(srv); err != nil {
			return fmt.Errorf("seed registry: servers[%d]: %w", i, err)
		}
		if _, dup := want[srv.GetName()]; dup {
			return fmt.Errorf("seed registry: servers[%d]: %w", i, &config.ValidationError{Server: srv.GetName(), Field: "name", Problem: "listed twice"})
		}
		want[srv.GetName()] = srv
	}
	if err := config.CheckPrefixes(servers); err != nil {
		return fmt.Errorf("seed registry: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, seedTimeout)
	defer cancel()
	for range seedAttempts {
		rev, done, err := s.trySeed(ctx, want)
		if err != nil {
			return fmt.Errorf("seed registry: %w", err)
		}
		if done {
			if err := s.waitRev(ctx, rev); err != nil {
				return fmt.Errorf("seed registry: %w", err)
			}
			return nil
		}
	}
	return errors.New("seed registry: other writers kept changing the registry; try again")
}

// trySeed reads the stored servers and writes the difference to want, if nothing under the
// prefix changed in between. It returns the revision the result is at, or done=false when
// the transaction lost a race.
func (s *Service) trySeed(ctx context.Context, want map[string]*registryv1.Server) (rev int64, done bool, err error) {
	resp, err := s.kv.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, false, fmt.Errorf("read servers: %w", err)
	}
	rev = resp.Header.Revision
	if err := s.checkImported(ctx, want); err != nil {
		return 0, false, err
	}
	var ops []clientv3.Op
	var written, deleted []string
	stored := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), s.prefix)
		srv, ok := want[name]
		if !ok {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
			deleted = append(deleted, name)
			continue
		}
		stored[name] = true
		cur := &registryv1.Server{}
		if protojson.Unmarshal(kv.Value, cur) == nil && proto.Equal(cur, srv) {
			continue
		}
		op, err := s.put(srv)
		if err != nil {
			return 0, false, err
		}
		ops = append(ops, op)
		written = append(written, name)
	}
	names := make([]string, 0, len(want))
	for name := range want {
		if !stored[name] {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		op, err := s.put(want[name])
		if err != nil {
			return 0, false, err
		}
		ops = append(ops, op)
		written = append(written, name)
	}
	if len(ops) == 0 {
		s.logger.Info("registry already matches the configuration", "servers", len(want), "rev", rev)
		return rev, true, nil
	}
	txn, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(s.prefix), "<", rev+1).WithPrefix()).
		Then(ops...).
		Commit()
	if err != nil {
		return 0, false, fmt.Errorf("write servers: %w", err)
	}
	if !txn.Succeeded {
		return 0, false, nil
	}
	s.logger.Info("registry seeded", "written", written, "deleted", deleted, "rev", txn.Header.Revision)
	return txn.Header.Revision, true, nil
}

func (s *Service) put(srv *registryv1.Server) (clientv3.Op, error) {
	b, err := protojson.Marshal(srv)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("encode server %q: %w", srv.GetName(), err)
	}
	return clientv3.OpPut(s.prefix+srv.GetName(), string(b)), nil
}

// checkImported refuses a configuration whose prefixes collide with the imported servers'
// (those it does not shadow), and logs the imported servers it shadows: a server of the
// configuration wins its name.
func (s *Service) checkImported(ctx context.Context, want map[string]*registryv1.Server) error {
	resp, err := s.kv.Get(ctx, s.importedPrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read imported servers: %w", err)
	}
	all := make([]*registryv1.Server, 0, len(want)+len(resp.Kvs))
	for _, srv := range want {
		all = append(all, srv)
	}
	for _, kv := range resp.Kvs {
		srv, ok := s.decode(kv, s.importedPrefix, true)
		if !ok {
			continue
		}
		if _, shadowed := want[srv.GetName()]; shadowed {
			s.logger.Warn("the configuration names an imported server: the configuration's is served", "server", srv.GetName())
			continue
		}
		all = append(all, srv)
	}
	if err := config.CheckPrefixes(all); err != nil {
		return fmt.Errorf("with the imported servers: %w", err)
	}
	return nil
}
