package ingress

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
)

// The GET stream room: a session's standalone SSE stream of upstream messages that belong to
// no request. A session has at most one (a second is 409 Conflict); a principal has at most
// MaxStreamsPerPrincipal on this replica (503 beyond). Between the bridge and the HTTP write
// sits a queue bounded in bytes: a reader that falls behind past the bound is disconnected
// and its queue freed, and each write has a deadline.

// errQueueOverflow ends a stream whose reader fell behind.
var errQueueOverflow = errors.New("stream reader fell behind: queue bound reached")

// StreamStats is the GET streams' own accounting.
type StreamStats struct {
	Open        int   // streams open
	QueuedBytes int64 // bytes queued for all streams now
	HighWater   int64 // the most bytes one stream's queue has held
	Overflows   int64 // readers disconnected for falling behind
	Limit       int64 // the bound of one stream's queue (StreamQueueBytes)
}

// StreamStats returns the GET streams' accounting.
func (s *Service) StreamStats() StreamStats {
	r := s.streams
	r.mu.Lock()
	defer r.mu.Unlock()
	return StreamStats{Open: len(r.bySession), QueuedBytes: r.queued, HighWater: r.highWater, Overflows: r.overflows, Limit: r.queueBytes}
}

// streamRegistry counts open streams per session and per principal, atomically under one
// mutex, and keeps the queues' accounting.
type streamRegistry struct {
	perPrincipal int
	queueBytes   int64

	mu          sync.Mutex
	bySession   map[string]*stream
	byPrincipal map[string]int
	queued      int64
	highWater   int64
	overflows   int64
}

func newStreamRegistry(perPrincipal int, queueBytes int64) *streamRegistry {
	return &streamRegistry{perPrincipal: perPrincipal, queueBytes: queueBytes, bySession: map[string]*stream{}, byPrincipal: map[string]int{}}
}

// stream is one open GET stream and its queue.
type stream struct {
	reg       *streamRegistry
	session   string
	principal string
	token     string // the API token id that opened the session; "" for other credentials
	cancel    context.CancelFunc
	ready     chan struct{} // a message was queued (capacity 1)

	// guarded by reg.mu
	msgs     [][]byte
	bytes    int64
	closed   bool
	overflow bool
	sse      *sseWriter
}

func (st *stream) overflowed() bool {
	st.reg.mu.Lock()
	defer st.reg.mu.Unlock()
	return st.overflow
}

func (r *streamRegistry) open(principal, token, session string, cancel context.CancelFunc) (*stream, *Error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bySession[session] != nil {
		return nil, errStreamOpen
	}
	if r.perPrincipal > 0 && r.byPrincipal[principal] >= r.perPrincipal {
		return nil, errTooManyStreams
	}
	st := &stream{reg: r, session: session, principal: principal, token: token, cancel: cancel, ready: make(chan struct{}, 1)}
	r.bySession[session] = st
	r.byPrincipal[principal]++
	return st, nil
}

// close removes the stream and frees its queue.
func (r *streamRegistry) close(st *stream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st.freeLocked()
	if r.bySession[st.session] == st {
		delete(r.bySession, st.session)
	}
	if r.byPrincipal[st.principal]--; r.byPrincipal[st.principal] <= 0 {
		delete(r.byPrincipal, st.principal)
	}
}

// endSession ends the session's stream, if any: its writer stops at once and its queue is
// freed.
func (r *streamRegistry) endSession(session string) {
	r.mu.Lock()
	st := r.bySession[session]
	if st != nil {
		st.stopLocked()
	}
	r.mu.Unlock()
}

// endToken ends the streams of the sessions the API token opened (with "": of every session
// an API token opened) and returns how many it ended.
func (r *streamRegistry) endToken(token string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, st := range r.bySession {
		if st.token != "" && (token == "" || st.token == token) && !st.closed {
			st.stopLocked()
			n++
		}
	}
	return n
}

// freeLocked drops the queue; the caller holds reg.mu.
func (st *stream) freeLocked() {
	st.closed = true
	st.reg.queued -= st.bytes
	st.msgs, st.bytes = nil, 0
}

// stopLocked ends the stream: the queue is freed, the context cancelled and a write in
// progress fails now. The caller holds reg.mu.
func (st *stream) stopLocked() {
	st.freeLocked()
	st.cancel()
	if st.sse != nil {
		st.sse.abort()
	}
}

// push queues one message for the writer. Past the byte bound the stream is ended: a message
// is admitted when it fits, or when the queue is empty (one message of any size the bridge
// let through is always deliverable).
func (st *stream) push(msg []byte) error {
	r := st.reg
	r.mu.Lock()
	if st.closed {
		r.mu.Unlock()
		return errQueueOverflow
	}
	n := int64(len(msg))
	if st.bytes > 0 && st.bytes+n > r.queueBytes {
		r.overflows++
		st.overflow = true
		st.stopLocked()
		r.mu.Unlock()
		return errQueueOverflow
	}
	st.msgs = append(st.msgs, msg)
	st.bytes += n
	r.queued += n
	r.highWater = max(r.highWater, st.bytes)
	r.mu.Unlock()
	select {
	case st.ready <- struct{}{}:
	default:
	}
	return nil
}

// pop takes the oldest queued message.
func (st *stream) pop() ([]byte, bool) {
	r := st.reg
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(st.msgs) == 0 {
		return nil, false
	}
	m := st.msgs[0]
	st.msgs[0] = nil
	st.msgs = st.msgs[1:]
	st.bytes -= int64(len(m))
	r.queued -= int64(len(m))
	return m, true
}

func (st *stream) setWriter(sse *sseWriter) {
	st.reg.mu.Lock()
	st.sse = sse
	if st.closed {
		sse.abort()
	}
	st.reg.mu.Unlock()
}

// listen serves the standalone SSE stream (GET).
func (s *Service) listen(x *exchange) {
	x.bodyRead = true // a GET has none (net/http clears its read deadline once it is read)
	ctx, cancel := context.WithCancel(x.r.Context())
	defer cancel()
	st, e := s.streams.open(x.principal.GetTenant()+"\x00"+x.principal.GetId(), x.session.TokenID, x.session.ID, cancel)
	if e != nil {
		s.refuse(x, nil, e, nil)
		return
	}
	defer s.streams.close(st)
	// A revocation processed between this request's authentication and the stream's
	// registration found no stream to end: the stream ends here instead. (One processed
	// after the registration ends it through the registry.)
	if x.session.TokenID != "" && s.auth.isRevoked(x.session.TokenID) {
		s.refuseRevoked(x, nil)
		return
	}
	stop := context.AfterFunc(s.draining, cancel) // standalone streams end when the gateway drains
	defer stop()

	if x.aggregated {
		s.listenAggregated(ctx, cancel, x, st)
		return
	}
	opened := make(chan struct{})
	subscribed := make(chan error, 1)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		subscribed <- s.deps.Bridge.Subscribe(ctx, &bridgev1.ListenRequest{
			SessionId: x.session.ID, Server: x.server, ProtocolVersion: x.session.ProtocolVersion, SubjectToken: x.subject,
		}, func() error {
			close(opened)
			return nil
		}, func(msg *bridgev1.ListenResponse) error {
			return st.push(msg.GetMessage())
		})
	}()
	select {
	case <-opened:
	case err := <-subscribed:
		if err != nil && ctx.Err() == nil {
			s.refuse(x, nil, fromBridge(err), err)
		}
		return
	}
	sse := startSSE(x.w, s.cfg.StreamWriteTimeout)
	st.setWriter(sse)
	_ = s.write(ctx, st, sse, ended)
	cancel()
	<-ended
	if st.overflowed() {
		// Cut the connection rather than end the stream cleanly: the host must not take a
		// stream that lost messages for one that ended.
		panic(http.ErrAbortHandler)
	}
}

// write is the stream's writer: queued messages and keep-alive pings, until the stream ends.
func (s *Service) write(ctx context.Context, st *stream, sse *sseWriter, ended <-chan struct{}) error {
	if err := sse.flush(); err != nil { // the host learns at once that its stream is open
		return err
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-st.ready:
			for {
				m, ok := st.pop()
				if !ok {
					break
				}
				if err := sse.send(m); err != nil {
					return err
				}
			}
		case <-ping.C:
			if err := sse.comment("ping"); err != nil {
				return err
			}
		case <-ended: // the session's upstream stream ended: deliver what is queued, then end
			for {
				m, ok := st.pop()
				if !ok {
					return nil
				}
				if err := sse.send(m); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
