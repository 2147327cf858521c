package ingress

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// The POST room of Streamable HTTP: the host's messages, read once the edge, the principal
// and the session have admitted the request; each request becomes a call.

func (s *Service) post(x *exchange) {
	w, r := x.w, x.r
	body, err := readBody(w, r, s.maxBody)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.refuse(x, nil, errBodyTooLarge, nil)
			return
		}
		s.refuse(x, nil, errBodyRead, err)
		return
	}
	x.bodyRead = true // and net/http has cleared the read deadline: a call may outlive ReadTimeout
	hasSession := x.session.ID != ""
	msgs, batch, err := jsonrpc.Parse(body, hasSession && x.session.ProtocolVersion == "2025-03-26")
	if err != nil {
		pe := jsonrpc.AsError(err)
		e := *errInvalidMessage
		e.Code, e.Message = pe.Code, pe.Message
		s.refuse(x, pe.ID, &e, nil)
		return
	}
	if batch && len(msgs) > s.cfg.MaxBatch {
		s.refuse(x, nil, errBatchTooLarge, nil)
		return
	}
	for _, m := range msgs {
		if m.Kind == jsonrpc.KindNotification && !strings.HasPrefix(m.Method, "notifications/") {
			// A request without an id would reach the upstream with no decision and no audit
			// record: every method that is not a notification must be a request.
			s.refuse(x, nil, errNotNotification, nil)
			return
		}
		if m.Method == "initialize" && (batch || hasSession) {
			s.refuse(x, m.ID, errInitializeAlone, nil)
			return
		}
	}
	if !hasSession {
		if msgs[0].Method != "initialize" || msgs[0].Kind != jsonrpc.KindRequest {
			s.refuse(x, msgs[0].ID, errSessionRequired, nil)
			return
		}
		if x.aggregated {
			s.openAggregated(x, msgs[0])
			return
		}
		s.initialize(x, msgs[0])
		return
	}
	if batch {
		s.batch(x, msgs)
		return
	}
	m := msgs[0]
	if m.Kind != jsonrpc.KindRequest {
		if err := s.forward(x, m); err != nil {
			s.forwardFailed(x, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		return
	}
	s.request(r.Context(), x, m, &postReply{s: s, x: x, timeout: s.cfg.StreamWriteTimeout})
}

// request runs one request of the host: a call on the endpoint's server, or on the aggregated
// endpoint whatever that request needs.
func (s *Service) request(ctx context.Context, x *exchange, m *jsonrpc.Message, r replier) {
	if x.aggregated {
		s.aggregated(ctx, x, m, r)
		return
	}
	s.run(ctx, s.newCall(x, m), r)
}

// bodyPrealloc is how much of a declared body's length is allocated before its bytes arrive.
const bodyPrealloc = 64 << 10

// readBody reads the request body, at most max bytes (a longer one is a
// *http.MaxBytesError). A body of declared length is read into a buffer of that size (one
// allocation up to bodyPrealloc; past it the buffer doubles as bytes arrive, so a host that
// declares megabytes and sends them slowly holds only about what it sent), in as few reads as
// the connection allows; a chunked one grows as it comes.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, max)
	n := r.ContentLength
	if n < 0 || n > max {
		return io.ReadAll(body)
	}
	// net/http ends the body after n bytes: one more byte to read is an error of its own.
	b := make([]byte, 0, min(n, bodyPrealloc))
	for int64(len(b)) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, int(min(n, 2*int64(cap(b))))-len(b))
		}
		k, err := body.Read(b[len(b):min(cap(b), int(n))])
		b = b[:len(b)+k]
		if err == io.EOF && int64(len(b)) < n {
			return nil, io.ErrUnexpectedEOF
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
	}
	return b, nil
}

func (s *Service) newCall(x *exchange, m *jsonrpc.Message) *call {
	return &call{
		id: newCallID(), traceID: x.traceID, principal: x.principal, server: x.server,
		session: x.session, revision: x.session.ProtocolVersion, msg: m, source: sourceAddress(x.r), start: time.Now(), subject: x.subject,
	}
}

// forward delivers a notification or a response to the upstream.
func (s *Service) forward(x *exchange, m *jsonrpc.Message) error {
	if x.aggregated {
		return s.forwardAggregated(x, m)
	}
	req := s.sendRequest(x.principal, x.server, x.session.ID, x.session.ProtocolVersion, x.subject, m)
	return s.deps.Bridge.Deliver(x.r.Context(), req, func(*bridgev1.SendResponse) error { return nil })
}

// forwardFailed answers a notification or response the bridge could not deliver. When the
// session's upstream is gone for good the session ends: 404 tells the host to start over.
func (s *Service) forwardFailed(x *exchange, err error) {
	if own, ok := errors.AsType[*Error](err); ok {
		s.refuse(x, nil, own, nil)
		return
	}
	e := fromBridge(err)
	if e == errSessionEnded && x.aggregated {
		e = errUpstreamDown // one upstream ended; the aggregated session goes on
	}
	if e == errCancelled && x.r.Context().Err() != nil {
		return
	}
	if e == errSessionEnded {
		s.endSession(x.r.Context(), x.session.ID)
	}
	s.refuse(x, nil, e, err)
}

// postReply answers a call on its POST: the upstream's messages and its answer as SSE (every
// host accepts it; the conformance suite expects it), a refusal as JSON when nothing was
// streamed yet.
type postReply struct {
	s       *Service
	x       *exchange
	timeout time.Duration
	sse     *sseWriter
}

func (p *postReply) emit(msg []byte) error {
	if p.sse == nil {
		p.sse = startSSE(p.x.w, p.timeout)
	}
	return p.sse.send(msg)
}

func (p *postReply) answer(final []byte, refusal *Error) error {
	if p.sse == nil && refusal != nil {
		status := http.StatusOK
		if refusal == errSessionEnded {
			// The session's upstream has ended: the session ends too, and 404 tells the
			// host to start over.
			status = refusal.Status
			p.s.endSession(p.x.r.Context(), p.x.session.ID)
		}
		if isQuota(refusal) {
			status = quotaStatus(p.x.w, refusal) // 429 and Retry-After
		} else if refusal.Retry != "" {
			p.x.w.Header().Set("Retry-After", refusal.Retry) // the row's, as at the HTTP level
		}
		p.x.w.Header().Set("Content-Length", strconv.Itoa(len(final)))
		writeJSON(p.x.w, status, final)
		return http.NewResponseController(p.x.w).Flush()
	}
	// Both flush: the host has its answer even while a deferred audit append follows.
	if p.sse == nil {
		return writeLoneEvent(p.x.w, p.timeout, final)
	}
	return p.sse.send(final)
}

// batchReply collects a batched call's answer; a batch is answered with responses only, so a
// server request (sampling, elicitation, roots) could never be answered: the call fails
// rather than hangs.
type batchReply struct {
	responses *[][]byte
}

func (b batchReply) emit(msg []byte) error {
	// msg is what the upstream sent: read by the routing entry point, not the host's strict one.
	if m, err := jsonrpc.Peek(msg); err == nil && m.Kind == jsonrpc.KindRequest {
		return errBatchServerReq
	}
	return nil
}

func (b batchReply) answer(final []byte, _ *Error) error {
	*b.responses = append(*b.responses, final)
	return nil
}

// batch handles a JSON-RPC batch (2025-03-26): requests answered together in one array.
func (s *Service) batch(x *exchange, msgs []*jsonrpc.Message) {
	var responses [][]byte
	for _, m := range msgs {
		if m.Kind != jsonrpc.KindRequest {
			if err := s.forward(x, m); err != nil {
				e := fromBridge(err)
				responses = append(responses, jsonrpc.ErrorResponse(nil, e.Code, hostMessage(e, x.traceID)))
			}
			continue
		}
		s.request(x.r.Context(), x, m, batchReply{responses: &responses})
	}
	if len(responses) == 0 {
		x.w.WriteHeader(http.StatusAccepted)
		return
	}
	out := []byte{'['}
	for i, b := range responses {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, b...)
	}
	writeJSON(x.w, http.StatusOK, append(out, ']'))
}
