package auditsvc

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc/query"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

// ActionRead is the admin action that reads the log (Query, Tail): Cedar decides it for the
// operator's own credential, on the gateway as a whole.
const ActionRead = "admin/audit.read"

// Bounds of the Tail streams open at once: in all, and per principal, so that one operator's
// forgotten tails cannot take every slot.
const (
	maxTails             = 32
	maxTailsPerPrincipal = 4
)

// commitNotice publishes how far the log is durable, for readers: the last committed
// sequence and the live file's size after it, and a channel closed at each commit.
type commitNotice struct {
	seq  atomic.Uint64 // also under mu, with size
	mu   sync.Mutex
	size int64
	ch   chan struct{} // nil until a reader waits
}

// publish is called by the committer after each commit (and once at open).
func (n *commitNotice) publish(seq uint64, size int64) {
	n.mu.Lock()
	n.seq.Store(seq)
	n.size = size
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}

// poke wakes the readers waiting, without a commit of this process: the postgres store's
// poller, for what other replicas committed.
func (n *commitNotice) poke() {
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}

// end is the last committed sequence and the live file's size after it.
func (n *commitNotice) end() (uint64, int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.seq.Load(), n.size
}

// wait returns a channel closed at the next commit.
func (n *commitNotice) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

// reads serves Query and Tail: readers of the files with handles of their own, which never
// take the writer's lock; they see committed records only. With the postgres store, they
// read the records table (pgread.go).
type reads struct {
	engine *query.Engine
	// end is where a follow from now starts: after the last committed record.
	end func(ctx context.Context) (query.Position, error)
	// wait returns a channel closed when more may have been committed.
	wait      func() <-chan struct{}
	authorize rpcserver.Authorizer
	closing   chan struct{}
	closeOnce sync.Once

	mu    sync.Mutex
	tails map[string]int // open tails by principal id ("" within the process)
	total int
}

func newReads(l *chainLog, authorize rpcserver.Authorizer) *reads {
	dir := filepath.Dir(*l.path.Load())
	r := &reads{
		engine: query.NewEngine(query.NewReader(SegmentFiles(dir), l.notice.seq.Load)),
		end: func(context.Context) (query.Position, error) {
			seq, size := l.notice.end()
			return query.Position{Seq: seq + 1, File: filepath.Base(*l.path.Load()), Offset: size}, nil
		},
		wait:      l.notice.wait,
		authorize: authorize,
		closing:   make(chan struct{}),
		tails:     make(map[string]int),
	}
	return r
}

func (r *reads) close() { r.closeOnce.Do(func() { close(r.closing) }) }

// EndTails ends every Tail stream, now and from now on: a server draining before Close is
// not held by them.
func (s *Service) EndTails() {
	if s.reads != nil {
		s.reads.close()
	}
}

// admit authorizes the caller in ctx for ActionRead and returns its id ("" within the
// process).
func (r *reads) admit(ctx context.Context) (string, error) {
	p, err := rpcserver.AdminCaller(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errCallerDenied, err)
	}
	if p == nil {
		return "", nil // a call within the process
	}
	if r.authorize == nil {
		return "", fmt.Errorf("%w: no policy decides %s here", errCallerDenied, ActionRead)
	}
	if err := r.authorize(ctx, p, ActionRead, ""); err != nil {
		if errors.Is(err, rpcserver.ErrPolicyUnavailable) {
			return "", fmt.Errorf("%w: %w", errPolicyUnavailable, err)
		}
		return "", fmt.Errorf("%w: %w", errCallerDenied, err)
	}
	return p.GetId(), nil
}

// Query implements auditv1connect.AuditServiceHandler: one page of the committed records that
// match the filter (see query.Engine.Query for the bounds). Errors: PermissionDenied for a
// caller policy does not let read the log, InvalidArgument for a bad filter, page size or
// token.
func (s *Service) Query(ctx context.Context, req *connect.Request[auditv1.QueryRequest]) (*connect.Response[auditv1.QueryResponse], error) {
	if _, err := s.reads.admit(ctx); err != nil {
		return nil, toConnect(err)
	}
	resp, err := s.reads.engine.Query(ctx, req.Msg)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(resp), nil
}

// Tail implements auditv1connect.AuditServiceHandler: the committed records that match the
// filter, from from_sequence (0: the next one committed), as they are committed, until the
// caller goes away or the service closes. Errors as Query's, and ResourceExhausted when too
// many tails are open (in all, or of this caller).
func (s *Service) Tail(ctx context.Context, req *connect.Request[auditv1.TailRequest], stream *connect.ServerStream[auditv1.TailResponse]) error {
	who, err := s.reads.admit(ctx)
	if err != nil {
		return toConnect(err)
	}
	release, err := s.reads.acquire(who)
	if err != nil {
		return toConnect(err)
	}
	defer release()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.reads.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	pos := query.Position{Seq: req.Msg.GetFromSequence()}
	if pos.Seq == 0 {
		// From now: the line after the last committed one.
		if pos, err = s.reads.end(ctx); err != nil {
			return toConnect(fmt.Errorf("%w: %w", errUnavailable, err))
		}
	}
	err = s.reads.engine.Follow(ctx, req.Msg.GetFilter(), pos, s.reads.wait, func(entries []*auditv1.Entry) error {
		// A client that stops reading must not hold its slot (and this goroutine) forever.
		return rpcserver.SendWithin(ctx, tailSendTimeout, func() error {
			return stream.Send(&auditv1.TailResponse{Entries: entries})
		})
	})
	select {
	case <-s.reads.closing:
		return nil // the service is closing: the stream ends cleanly
	default:
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return toConnect(err)
}

// tailSendTimeout bounds one write of a Tail stream: a client that has not read a page in
// that long is dropped, freeing its slot.
var tailSendTimeout = 30 * time.Second

// acquire takes a tail slot for who, or fails when none is left.
func (r *reads) acquire(who string) (func(), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.total >= maxTails {
		return nil, fmt.Errorf("%w: %d tails are open, the most the audit service serves", errTooManyTails, maxTails)
	}
	if r.tails[who] >= maxTailsPerPrincipal {
		return nil, fmt.Errorf("%w: %d tails of this caller are open, the most one may have", errTooManyTails, maxTailsPerPrincipal)
	}
	r.total++
	r.tails[who]++
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.total--
		if r.tails[who]--; r.tails[who] == 0 {
			delete(r.tails, who)
		}
	}, nil
}
