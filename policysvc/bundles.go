package policysvc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"connectrpc.com/connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdfollow"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// DefaultKeyPrefix is where policysvc keeps the applied bundle in etcd.
const DefaultKeyPrefix = "/gatehouse/policy/"

// Limits on an applied bundle. The whole bundle is one etcd value, and etcd refuses requests
// over 1.5 MiB by default.
const (
	// MaxBundleBytes bounds the files of a bundle, names and contents together.
	MaxBundleBytes = 1 << 20
	// MaxBundleFiles bounds the number of files in a bundle.
	MaxBundleFiles = 256
	// maxApplyBytes is what the ApplyBundle handler reads: a full bundle and its framing.
	maxApplyBytes = MaxBundleBytes + 64<<10
	// maxStoredBytes is the largest stored value a replica reads.
	maxStoredBytes = maxApplyBytes
)

// storeTimeout bounds one read or write of the stored bundle.
const storeTimeout = 10 * time.Second

// gitCommit is what a bundle may name as its source: a hex object name (SHA-1 or SHA-256),
// "-dirty" when the work tree had changes.
var gitCommit = regexp.MustCompile(`^[0-9a-f]{7,64}(-dirty)?$`)

// watchStreamKey gives the bundle's etcd watch a gRPC stream of its own, apart from the other
// watches on the same client (single-process mode shares one client among the services).
var watchStreamKey = []string{"gatehouse-watcher", "policy"}

// Etcd is what policysvc needs of an etcd client (*clientv3.Client has it).
type Etcd interface {
	clientv3.KV
	clientv3.Watcher
}

// active is the bundle deciding now and where it came from.
type active struct {
	bundle *cedarpolicy.Bundle
	rev    int64  // the etcd revision it was stored at; 0 for a directory read at start
	commit string // the git commit it was applied from, when known
}

func bundleKey(prefix string) string {
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return prefix + "bundle"
}

// install makes a the active bundle unless the active one was stored later (a newer apply
// arrived first, through the watch or the RPC): replicas converge on the last stored bundle
// whatever order they learn of applies in. It reports whether a became active.
func (s *Service) install(a *active, source string) bool {
	for {
		cur := s.active.Load()
		if cur != nil && a.rev <= cur.rev {
			return false
		}
		if !s.active.CompareAndSwap(cur, a) {
			continue
		}
		attrs := []any{"source", source, "version", a.bundle.Version(), "policies", a.bundle.Len(),
			"files", a.bundle.Files(), "validated", a.bundle.Validated()}
		if cur != nil {
			attrs = append(attrs, "previous", cur.bundle.Version())
		}
		if a.rev != 0 {
			attrs = append(attrs, "rev", a.rev)
		}
		if a.commit != "" {
			attrs = append(attrs, "git_commit", a.commit)
		}
		s.logger.Info("policy bundle active", attrs...)
		return true
	}
}

// start loads the bundle a replica starts with (see New) and returns the etcd revision to
// watch after.
func (s *Service) start(cfg Config) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if cfg.ApplyDir {
		b, files, err := loadDir(cfg.PolicyDir, s.logger)
		if err != nil {
			return 0, err
		}
		rev, _, err := s.store(ctx, &policyv1.Bundle{Files: protoFiles(files), Version: b.Version()})
		if err != nil {
			return 0, fmt.Errorf("policysvc: apply %s: %w", cfg.PolicyDir, err)
		}
		s.install(&active{bundle: b, rev: rev}, "dir applied at start")
		return rev, nil
	}
	resp, err := s.kv.Get(ctx, s.key)
	if err != nil {
		return 0, fmt.Errorf("policysvc: read the stored policy bundle: %w", err)
	}
	if len(resp.Kvs) == 1 {
		a, err := decodeStored(resp.Kvs[0])
		if err != nil {
			return 0, fmt.Errorf("policysvc: the policy bundle stored at %s (revision %d) does not load, so this replica will not decide by it or by another: %w; apply a valid bundle (gatehouse policy apply through a running replica; gatehouse up --policy-dir applies one at start), or delete the key",
				s.key, resp.Kvs[0].ModRevision, err)
		}
		s.install(a, "etcd")
		return resp.Header.Revision, nil
	}
	if cfg.PolicyDir == "" {
		return 0, errors.New("policysvc: etcd holds no applied policy bundle and no policy directory is set")
	}
	b, _, err := loadDir(cfg.PolicyDir, s.logger)
	if err != nil {
		return 0, err
	}
	s.install(&active{bundle: b}, "dir")
	return resp.Header.Revision, nil
}

func protoFiles(files []cedarpolicy.File) []*policyv1.BundleFile {
	out := make([]*policyv1.BundleFile, len(files))
	for i, f := range files {
		out[i] = &policyv1.BundleFile{Name: f.Name, Content: f.Content}
	}
	return out
}

// ApplyBundle implements policyv1connect.PolicyServiceHandler.
func (s *Service) ApplyBundle(ctx context.Context, req *connect.Request[policyv1.ApplyBundleRequest]) (*connect.Response[policyv1.ApplyBundleResponse], error) {
	// An operator's request, decided by Cedar (admin/policy.apply on the gateway); the
	// internal token alone is not enough.
	p, err := rpcserver.AdminCaller(ctx)
	if err != nil {
		return nil, toConnect(fmt.Errorf("%w: %w", errCallerDenied, err))
	}
	if p != nil {
		if err := s.authorizeCaller(p, "admin/policy.apply", ""); err != nil {
			return nil, toConnect(err)
		}
	}
	resp, err := s.apply(ctx, req.Msg.GetBundle())
	if err != nil {
		s.logger.Info("policy bundle refused", "err", err)
		return nil, toConnect(err)
	}
	return connect.NewResponse(resp), nil
}

// apply validates a bundle, stores it and makes it active here at once; the other replicas
// follow through their watch.
func (s *Service) apply(ctx context.Context, in *policyv1.Bundle) (*policyv1.ApplyBundleResponse, error) {
	if s.kv == nil {
		return nil, errNoStore
	}
	files, err := bundleFiles(in)
	if err != nil {
		return nil, err
	}
	b, err := cedarpolicy.New(files)
	if err != nil {
		return nil, fmt.Errorf("%w:\n%w", errInvalidBundle, err)
	}
	if !b.Validated() {
		return nil, fmt.Errorf("%w: no schema (%s): an applied bundle is validated against its schema", errInvalidBundle, cedarpolicy.SchemaExt)
	}
	if v := in.GetVersion(); v != "" && v != b.Version() {
		return nil, fmt.Errorf("%w: the request names version %.80q, its files are %s", errInvalidBundle, v, b.Version())
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	stored := &policyv1.Bundle{Files: in.GetFiles(), Version: b.Version(), GitCommit: in.GetGitCommit()}
	rev, prev, err := s.store(ctx, stored)
	if err != nil {
		return nil, err
	}
	s.install(&active{bundle: b, rev: rev, commit: in.GetGitCommit()}, "apply")
	return &policyv1.ApplyBundleResponse{Version: b.Version(), PreviousVersion: prev}, nil
}

// bundleFiles checks the shape of a bundle from the network (counts, sizes, the commit) and
// returns its files; cedarpolicy.New checks names and contents.
func bundleFiles(in *policyv1.Bundle) ([]cedarpolicy.File, error) {
	if len(in.GetFiles()) == 0 {
		return nil, fmt.Errorf("%w: no files", errInvalidBundle)
	}
	if n := len(in.GetFiles()); n > MaxBundleFiles {
		return nil, fmt.Errorf("%w: %d files, more than %d", errInvalidBundle, n, MaxBundleFiles)
	}
	if c := in.GetGitCommit(); c != "" && !gitCommit.MatchString(c) {
		return nil, fmt.Errorf("%w: git commit %.80q is not a hex object name (with -dirty)", errInvalidBundle, c)
	}
	files := make([]cedarpolicy.File, len(in.GetFiles()))
	total := 0
	for i, f := range in.GetFiles() {
		total += len(f.GetName()) + len(f.GetContent())
		if total > MaxBundleBytes {
			return nil, fmt.Errorf("%w: larger than %d bytes", errInvalidBundle, MaxBundleBytes)
		}
		files[i] = cedarpolicy.File{Name: f.GetName(), Content: f.GetContent()}
	}
	return files, nil
}

// store writes the bundle as the applied one and returns the revision it was stored at and
// the version it replaced.
func (s *Service) store(ctx context.Context, b *policyv1.Bundle) (int64, string, error) {
	value, err := proto.Marshal(b)
	if err != nil {
		return 0, "", err
	}
	if len(value) > maxStoredBytes {
		return 0, "", fmt.Errorf("%w: %d bytes encoded, more than %d", errInvalidBundle, len(value), maxStoredBytes)
	}
	resp, err := s.kv.Put(ctx, s.key, string(value), clientv3.WithPrevKV())
	if err != nil {
		return 0, "", fmt.Errorf("%w: %w", errStore, err)
	}
	var prev string
	if resp.PrevKv != nil {
		var old policyv1.Bundle
		if proto.Unmarshal(resp.PrevKv.Value, &old) == nil {
			prev = old.GetVersion()
		}
	}
	return resp.Header.Revision, prev, nil
}

// decodeStored loads a stored bundle, validating it again: etcd is trusted, but a replica
// decides only by a bundle it has checked itself (another version may have stored it).
func decodeStored(kv *mvccpb.KeyValue) (*active, error) {
	if len(kv.Value) > maxStoredBytes {
		return nil, fmt.Errorf("%d bytes, more than %d", len(kv.Value), maxStoredBytes)
	}
	var stored policyv1.Bundle
	if err := proto.Unmarshal(kv.Value, &stored); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	files, err := bundleFiles(&stored)
	if err != nil {
		return nil, err
	}
	b, err := cedarpolicy.New(files)
	if err != nil {
		return nil, err
	}
	if stored.GetVersion() != b.Version() {
		return nil, fmt.Errorf("stored as version %.80q, its files are %s", stored.GetVersion(), b.Version())
	}
	return &active{bundle: b, rev: kv.ModRevision, commit: stored.GetGitCommit()}, nil
}

// follow keeps the active bundle in step with the stored one until ctx ends: a watch from
// rev, resumed where it broke; after a compaction, a fresh read.
func (s *Service) follow(ctx context.Context, rev int64) {
	defer close(s.done)
	etcdfollow.Follow(ctx, etcdfollow.Funcs{Load: s.reload, Watch: s.watch}, rev, s.logger, "the stored policy bundle")
}

// reload reads the stored bundle, installs it if it is newer than the active one, and
// returns the revision it read at.
func (s *Service) reload(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	resp, err := s.kv.Get(rctx, s.key)
	if err != nil {
		return 0, err
	}
	if len(resp.Kvs) == 1 {
		s.changed(resp.Kvs[0])
	}
	return resp.Header.Revision, nil
}

// watch applies the changes of the stored bundle after rev until the watch breaks, and
// returns the revision up to which every change has been applied.
func (s *Service) watch(ctx context.Context, rev int64) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(metadata.AppendToOutgoingContext(ctx, watchStreamKey...)))
	defer cancel()
	for wr := range s.kv.Watch(wctx, s.key, clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return rev, err
		}
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.PUT {
				s.changed(ev.Kv)
			} else {
				s.logger.Warn("the stored policy bundle was deleted; the active one decides until the next apply",
					"version", s.active.Load().bundle.Version(), "rev", ev.Kv.ModRevision)
			}
			rev = max(rev, ev.Kv.ModRevision)
		}
	}
	if err := ctx.Err(); err != nil {
		return rev, err
	}
	return rev, errors.New("watch channel closed")
}

// changed installs a stored bundle that is newer than the active one; one that does not load
// is refused, and the active one stays.
func (s *Service) changed(kv *mvccpb.KeyValue) {
	if cur := s.active.Load(); kv.ModRevision <= cur.rev {
		return // already active (this replica applied it) or superseded
	}
	a, err := decodeStored(kv)
	if err != nil {
		s.logger.Error("refusing the stored policy bundle; the active one stays", "rev", kv.ModRevision,
			"active", s.active.Load().bundle.Version(), "err", err)
		return
	}
	s.install(a, "etcd")
}
