// Package streamable is the bridge's client for MCP servers that speak the Streamable HTTP
// transport: one Client (one connection pool) for every upstream, one Conn per
// (session, server) holding the upstream's Mcp-Session-Id and protocol revision.
//
// A request carries only what the transport needs (Content-Type, Accept, Mcp-Session-Id,
// MCP-Protocol-Version, Last-Event-ID, User-Agent) and, when the server's config asks for
// one, the credential that identifies the gateway or its caller to the upstream (a
// Credential). No header of the host's request is ever copied upstream.
package streamable

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"go.opentelemetry.io/otel/trace"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/sse"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

const (
	userAgent = "gatehouse-bridge"
	// maxSessionID bounds an upstream's Mcp-Session-Id.
	maxSessionID = 1024
	// maxErrorBody bounds how much of an error response is quoted in the error.
	maxErrorBody = 512
	// maxRetry bounds the reconnection delay an upstream may ask for.
	maxRetry = 5 * time.Second
)

// Options configure a Client. Zero values take the defaults noted.
type Options struct {
	// MaxMessage bounds one upstream message (default 16 MiB).
	MaxMessage int
	// CloseTimeout bounds the DELETE that ends an upstream session (default 2s).
	CloseTimeout time.Duration
	// MaxResumes bounds consecutive reconnections of one response stream that bring nothing
	// (default 5).
	MaxResumes int
	// Logger receives lifecycle events (default slog.Default()).
	Logger *slog.Logger
	// Transport replaces the default transport (tests).
	Transport http.RoundTripper
}

// Client sends to Streamable HTTP upstreams over one shared connection pool.
type Client struct {
	opts Options
	hc   *http.Client
}

// NewClient returns a Client with its own transport: connection reuse, dial and TLS timeouts,
// no proxy from the environment, no cookies and no redirects (a redirect is answered as the
// error it is, never followed to another origin).
func NewClient(opts Options) *Client {
	if opts.MaxMessage <= 0 {
		opts.MaxMessage = 16 << 20
	}
	if opts.CloseTimeout <= 0 {
		opts.CloseTimeout = 2 * time.Second
	}
	if opts.MaxResumes <= 0 {
		opts.MaxResumes = 5
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	rt := opts.Transport
	if rt == nil {
		rt = &http.Transport{
			DialContext:            (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:      true,
			MaxIdleConns:           512,
			MaxIdleConnsPerHost:    64,
			IdleConnTimeout:        90 * time.Second,
			TLSHandshakeTimeout:    10 * time.Second,
			ExpectContinueTimeout:  time.Second,
			MaxResponseHeaderBytes: 64 << 10,
			// A call's request and its answer each in one system call up to 32 KiB (with
			// the default 4 KiB a 16 KiB call took two writes and three reads); the buffers
			// are per pooled connection, not per session.
			WriteBufferSize: 32 << 10,
			ReadBufferSize:  32 << 10,
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12},
		}
	}
	return &Client{opts: opts, hc: &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// CloseIdleConnections releases pooled connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Credential returns the header that identifies the gateway, or its caller, to the upstream
// on one request, from what ctx carries (the call's caller). An error fails the request, and
// is not sent; name "" sends no credential.
type Credential func(ctx context.Context) (name, value string, err error)

// Dial returns a Conn for the endpoint; cred, when not nil, adds its header to every request.
// No request is made until the first Send.
func (c *Client) Dial(endpoint string, logger *slog.Logger, cred Credential) (*Conn, error) {
	u, err := url.Parse(endpoint)
	switch {
	case err != nil:
		return nil, withReason(fmt.Errorf("%w: server url: %v", upstream.ErrSpawn, err), "the server's URL is not a valid http(s) URL")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return nil, withReason(fmt.Errorf("%w: server url %q is not an absolute http(s) URL", upstream.ErrSpawn, u.Redacted()), "the server's URL is not a valid http(s) URL")
	case u.User != nil:
		return nil, withReason(fmt.Errorf("%w: server url must not carry credentials", upstream.ErrSpawn), "the server's URL is not a valid http(s) URL")
	}
	u.Fragment = ""
	if logger == nil {
		logger = c.opts.Logger
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Conn{c: c, url: u.String(), log: logger, cred: cred, ctx: ctx, cancel: cancel, done: make(chan struct{})}, nil
}

// Conn is one upstream session over Streamable HTTP.
type Conn struct {
	c      *Client
	url    string
	log    *slog.Logger
	cred   Credential      // nil: no credential
	ctx    context.Context // ends when the Conn ends; every request is bound to it
	cancel context.CancelFunc

	mu              sync.Mutex
	sessionID       string
	protocolVersion string
	endOnce         sync.Once
	err             error
	done            chan struct{}
}

var _ upstream.Conn = (*Conn)(nil)

// Done is closed once the Conn has ended: closed, or its upstream session lost.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the Conn ended; valid after Done is closed.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// SetProtocolVersion records the negotiated revision for the MCP-Protocol-Version header.
func (c *Conn) SetProtocolVersion(v string) {
	if !upstream.ValidProtocolVersion(v) {
		return
	}
	c.mu.Lock()
	c.protocolVersion = v
	c.mu.Unlock()
}

// SessionID is the upstream's Mcp-Session-Id, "" when it assigned none.
func (c *Conn) SessionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionID
}

func (c *Conn) end(err error) {
	c.endOnce.Do(func() {
		c.err = err
		close(c.done) // before cancel: whoever sees the cancellation finds the reason
		c.cancel()
	})
}

// Close ends the Conn: requests in flight end with upstream.ErrClosed, then the upstream
// session is deleted (best effort, bounded by the close timeout and ctx).
func (c *Conn) Close(ctx context.Context) error {
	c.end(fmt.Errorf("%w: session ended", upstream.ErrClosed))
	sid := c.SessionID()
	if sid == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.c.opts.CloseTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.url, nil)
	if err != nil {
		return nil
	}
	if err := c.header(ctx, req, nil); err != nil {
		// Best effort: the upstream may end the session without the credential, or
		// expire it.
		c.log.Debug("delete upstream session without a credential", "err", err)
	}
	resp, err := c.c.hc.Do(req)
	if err != nil {
		c.log.Debug("delete upstream session", "err", err)
		return nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
		c.log.Debug("delete upstream session", "status", resp.Status)
	}
	return nil
}

// header sets the transport headers and the credential, from ctx (the caller's request).
// m is the message being posted, nil for GET and DELETE. It fails only when the credential
// cannot be had.
func (c *Conn) header(ctx context.Context, req *http.Request, m *upstream.Message) error {
	h := req.Header
	h.Set("User-Agent", userAgent)
	switch req.Method {
	case http.MethodPost:
		h.Set("Content-Type", "application/json")
		h.Set("Accept", "application/json, text/event-stream")
		// The span that sends the message is the upstream's parent (W3C trace context);
		// a request also carries it in params._meta.traceparent (the bridge's splice).
		if trace.SpanContextFromContext(ctx).IsValid() {
			telemetry.Inject(ctx, h)
		}
	case http.MethodGet:
		h.Set("Accept", "text/event-stream")
	}
	if c.cred != nil {
		name, value, err := c.cred(ctx)
		if err != nil {
			return err
		}
		if name != "" {
			h.Set(name, value)
		}
	}
	if m != nil && m.Method == "initialize" {
		// A new upstream session: no session id, no revision yet.
		return nil
	}
	c.mu.Lock()
	sid, pv := c.sessionID, c.protocolVersion
	c.mu.Unlock()
	if sid != "" {
		h.Set("Mcp-Session-Id", sid)
	}
	if pv != "" {
		h.Set("MCP-Protocol-Version", pv)
	}
	return nil
}

// bind returns a context that also ends when the Conn ends.
func (c *Conn) bind(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// bindDetachable returns the context of one POST: it ends when the caller's ctx ends
// (shortly after: the cancellation runs on a goroutine of its own), when the Conn ends, or
// at stop. detach makes it outlive the caller's ctx, for reading the end of a stream whose
// response the caller already has.
func (c *Conn) bindDetachable(ctx context.Context) (rctx context.Context, detach, stop func()) {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopCaller := context.AfterFunc(ctx, cancel)
	stopConn := context.AfterFunc(c.ctx, cancel)
	return rctx, func() { stopCaller() }, func() { stopCaller(); stopConn(); cancel() }
}

// ctxErr explains why a bound context ended: the Conn was closed, or the caller's ctx.
func (c *Conn) ctxErr(caller context.Context, err error) error {
	if caller.Err() != nil {
		return caller.Err()
	}
	select {
	case <-c.done:
		return c.err
	default:
	}
	return err
}

// Send posts m. For a request it emits every message of the response (one JSON message, or
// an event stream until the response to m) and returns after the response.
func (c *Conn) Send(ctx context.Context, m upstream.Message, emit upstream.Emit) error {
	select {
	case <-c.done:
		return c.err // ended: nothing may reach the upstream (bind cancels only asynchronously)
	default:
	}
	if err := ctx.Err(); err != nil {
		return err // the request context ends the caller's way only asynchronously (bind)
	}
	rctx, detach, stop := c.bindDetachable(ctx)
	var rest io.ReadCloser // the rest of a response stream whose response is in
	defer func() {
		if rest == nil {
			stop()
			return
		}
		// The caller has its response: the stream's end (and the connection's return to the
		// pool) is read after Send returns, no longer on the call's path. The caller's
		// context may end now without tearing the connection down; the drain is bounded
		// by drainTimeout and drainBytes, and by the Conn's end.
		detach()
		go func() {
			c.drain(rest)
			stop()
		}()
	}()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, c.url, bytes.NewReader(m.Raw))
	if err != nil {
		return withReason(fmt.Errorf("%w: %v", upstream.ErrUnavailable, err), "the upstream could not be reached")
	}
	if err := c.header(ctx, req, &m); err != nil {
		return err
	}
	resp, err := c.c.hc.Do(req)
	if err != nil {
		return c.ctxErr(ctx, withReason(fmt.Errorf("%w: %v", upstream.ErrUnavailable, err), "the upstream could not be reached"))
	}
	defer func() {
		if rest == nil {
			_ = resp.Body.Close()
		}
	}()
	if resp.StatusCode/100 != 2 {
		return c.statusErr(resp)
	}
	if m.Method == "initialize" {
		if err := c.takeSessionID(resp); err != nil {
			return err
		}
	}
	if m.Kind != upstream.KindRequest {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil
	}
	if resp.StatusCode == http.StatusAccepted {
		return withReason(fmt.Errorf("%w: the upstream accepted a request without answering it", upstream.ErrProtocol), "the upstream accepted a request without answering it")
	}
	switch mt := mediaType(resp.Header.Get("Content-Type")); mt {
	case "application/json":
		err = c.readJSON(resp, &m, emit)
	case "text/event-stream":
		rest, err = c.readStream(rctx, resp, &m, emit)
	default:
		err = withReason(fmt.Errorf("%w: unexpected content type %q", upstream.ErrProtocol, mt), "the upstream answered with an unexpected content type")
	}
	if err != nil && rctx.Err() != nil {
		return c.ctxErr(ctx, err)
	}
	return err
}

func (c *Conn) takeSessionID(resp *http.Response) error {
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		return nil
	}
	if len(sid) > maxSessionID || strings.IndexFunc(sid, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
		return withReason(fmt.Errorf("%w: invalid Mcp-Session-Id from the upstream", upstream.ErrProtocol), "the upstream sent an invalid Mcp-Session-Id")
	}
	c.mu.Lock()
	c.sessionID = sid
	c.mu.Unlock()
	return nil
}

// statusErr turns a non-2xx response into an error, quoting a bounded, printable excerpt of
// its body.
func (c *Conn) statusErr(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	detail := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(body), "\uFFFD"))
	if detail = strings.TrimSpace(detail); detail != "" {
		detail = ": " + detail
	}
	// The host is told the status only: the body is the upstream's (a traceback, a DSN).
	reason := fmt.Sprintf("the upstream answered HTTP %d", resp.StatusCode)
	switch {
	case resp.StatusCode == http.StatusNotFound && resp.Request.Header.Get("Mcp-Session-Id") != "":
		err := withReason(fmt.Errorf("%w: the upstream answered 404 Not Found for its session; the session must be initialized again", upstream.ErrSessionGone),
			"the upstream answered HTTP 404 for its session; start a new session")
		c.end(err)
		return err
	case resp.StatusCode/100 == 4:
		return withReason(fmt.Errorf("%w: %s%s", upstream.ErrRejected, resp.Status, detail), reason)
	default:
		return withReason(fmt.Errorf("%w: %s%s", upstream.ErrUnavailable, resp.Status, detail), reason)
	}
}

// deliver emits out when it belongs on this request's stream and reports whether it was the
// response to req.
func (c *Conn) deliver(req, out *upstream.Message, emit upstream.Emit) (bool, error) {
	if out.Kind == upstream.KindResponse && !out.IsResponseTo(req.ID) {
		c.log.Warn("upstream response to another request on a response stream; dropped", "id", string(out.ID))
		return false, nil
	}
	if v, ok := upstream.InitializeResult(req, out); ok {
		c.SetProtocolVersion(v)
	}
	if err := emit(*out); err != nil {
		return true, err
	}
	return out.Kind == upstream.KindResponse, nil
}

func (c *Conn) readJSON(resp *http.Response, req *upstream.Message, emit upstream.Emit) error {
	max := c.c.opts.MaxMessage
	if resp.ContentLength > int64(max) {
		return fmt.Errorf("%w: the upstream's response is %d bytes, over the %d-byte limit", upstream.ErrTooLarge, resp.ContentLength, max)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(max)+1))
	if err != nil {
		return withReason(fmt.Errorf("%w: read response: %v", upstream.ErrUnavailable, err), "the upstream's response could not be read")
	}
	if len(body) > max {
		return fmt.Errorf("%w: the upstream's response exceeds the %d-byte limit", upstream.ErrTooLarge, max)
	}
	msgs, err := jsonrpc.Split(body)
	if err != nil {
		return withReason(fmt.Errorf("%w: %v", upstream.ErrProtocol, err), "the upstream's response is not JSON-RPC")
	}
	for i := range msgs {
		if last, err := c.deliver(req, &msgs[i], emit); last || err != nil {
			return err
		}
	}
	return withReason(fmt.Errorf("%w: the upstream's JSON response holds no response to the request", upstream.ErrProtocol), "the upstream's response holds no response to the request")
}

// readStream emits the events of a response stream until the response to req. When the
// stream breaks after the upstream gave its events ids, it resumes with GET and
// Last-Event-ID, as the transport allows; otherwise the call fails. Once the response is
// emitted it returns the stream, for the caller to drain; otherwise it closes it.
func (c *Conn) readStream(ctx context.Context, resp *http.Response, req *upstream.Message, emit upstream.Emit) (rest io.ReadCloser, err error) {
	body := resp.Body
	defer func() {
		if body != nil {
			_ = body.Close()
		}
	}()
	r := sse.NewReader(body, c.c.opts.MaxMessage)
	defer func() { r.Release() }()
	resumes, lastID := 0, ""
	for {
		ev, err := r.Next()
		if err == nil {
			if ev.Type != "message" || len(bytes.TrimSpace(ev.Data)) == 0 {
				continue
			}
			resumes = 0
			msgs, perr := jsonrpc.Split(ev.Data)
			if perr != nil {
				c.log.Warn("upstream event is not JSON-RPC; skipped", "err", perr)
				continue
			}
			for i := range msgs {
				last, err := c.deliver(req, &msgs[i], emit)
				if last && err == nil {
					// The upstream ends the stream right after the response: it is read to
					// its end before the request's context is cancelled, so that the
					// connection goes back to the pool instead of being torn down.
					rest, body = body, nil
					return rest, nil
				}
				if last || err != nil {
					return nil, err
				}
			}
			continue
		}
		if errors.Is(err, sse.ErrTooLarge) {
			return nil, fmt.Errorf("%w: %v", upstream.ErrTooLarge, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if id := r.LastEventID(); id != "" {
			lastID = id
		}
		if lastID == "" {
			return nil, withReason(fmt.Errorf("%w: the upstream ended the response stream before the response (%v)", upstream.ErrUnavailable, streamEnd(err)), "the upstream ended the response stream before the response")
		}
		if resumes++; resumes > c.c.opts.MaxResumes {
			return nil, withReason(fmt.Errorf("%w: the response stream broke %d times without progress", upstream.ErrUnavailable, resumes-1), "the upstream's response stream broke repeatedly")
		}
		retry, _ := r.Retry()
		next, err := c.resume(ctx, lastID, min(retry, maxRetry))
		if err != nil {
			return nil, err
		}
		_ = body.Close()
		body = next
		r.Release()
		r = sse.NewReader(body, c.c.opts.MaxMessage)
	}
}

// mediaType is the media type of a Content-Type value, lower case, "" when it does not parse.
// The two an upstream sends on every call, bare, are answered without mime.ParseMediaType
// (its parameter map is an allocation a call).
func mediaType(ct string) string {
	switch ct {
	case "text/event-stream", "application/json":
		return ct
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt
}

// drain reads what is left of a finished response stream, at most drainBytes and for at most
// drainTimeout, then closes it. Reading to EOF returns the connection to the pool; an upstream
// that keeps the stream open after the response, or sends more, loses its connection instead.
// It runs before the caller cancels the request's context: a drain racing that cancellation
// tears the connection down.
func (c *Conn) drain(body io.ReadCloser) {
	t := time.AfterFunc(drainTimeout, func() { _ = body.Close() })
	n, err := io.Copy(io.Discard, io.LimitReader(body, drainBytes+1))
	t.Stop()
	_ = body.Close()
	if err != nil || n > drainBytes {
		c.log.Debug("upstream response stream not ended after the response; connection dropped", "bytes", n, "err", err)
	}
}

// Bounds of drain: a stream that ends with the response ends within microseconds.
const (
	drainTimeout = 100 * time.Millisecond
	drainBytes   = 64 << 10
)

func streamEnd(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed"
	}
	return err.Error()
}

// resume reopens a stream with GET and Last-Event-ID after waiting delay.
func (c *Conn) resume(ctx context.Context, lastID string, delay time.Duration) (io.ReadCloser, error) {
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	resp, err := c.get(ctx, lastID)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, c.statusErr(resp)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		_ = resp.Body.Close()
		return nil, withReason(fmt.Errorf("%w: unexpected content type %q on a resumed stream", upstream.ErrProtocol, mt), "the upstream answered with an unexpected content type")
	}
	return resp.Body, nil
}

func (c *Conn) get(ctx context.Context, lastID string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, withReason(fmt.Errorf("%w: %v", upstream.ErrUnavailable, err), "the upstream could not be reached")
	}
	if err := c.header(ctx, req, nil); err != nil {
		return nil, err
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := c.c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, withReason(fmt.Errorf("%w: %v", upstream.ErrUnavailable, err), "the upstream could not be reached")
	}
	return resp, nil
}

// Listen opens the upstream's standalone stream (GET) and emits its messages until ctx ends
// or the Conn ends, reconnecting (with Last-Event-ID when the upstream gives ids) when the
// stream ends. An upstream that offers no such stream (405) is waited out silently.
func (c *Conn) Listen(ctx context.Context, emit upstream.Emit) error {
	lctx, stop := c.bind(ctx)
	defer stop()
	lastID := ""
	backoff := 100 * time.Millisecond
	for {
		resp, err := c.get(lctx, lastID)
		if err != nil {
			return c.ctxErr(ctx, err)
		}
		switch {
		case resp.StatusCode == http.StatusMethodNotAllowed:
			_ = resp.Body.Close()
			<-lctx.Done()
			return c.ctxErr(ctx, lctx.Err())
		case resp.StatusCode != http.StatusOK:
			err := c.statusErr(resp)
			_ = resp.Body.Close()
			return err
		}
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
			_ = resp.Body.Close()
			return withReason(fmt.Errorf("%w: unexpected content type %q on the standalone stream", upstream.ErrProtocol, mt), "the upstream answered with an unexpected content type")
		}
		r := sse.NewReader(resp.Body, c.c.opts.MaxMessage)
		got, err := c.pump(r, emit)
		lastID = r.LastEventID()
		retry, hasRetry := r.Retry()
		r.Release()
		_ = resp.Body.Close()
		if lctx.Err() != nil {
			return c.ctxErr(ctx, lctx.Err())
		}
		if err != nil {
			return err
		}
		if got {
			backoff = 100 * time.Millisecond
		}
		delay := backoff
		if hasRetry {
			delay = min(retry, maxRetry)
		}
		backoff = min(2*backoff, maxRetry)
		c.log.Debug("upstream standalone stream ended; reconnecting", "after", delay)
		t := time.NewTimer(delay)
		select {
		case <-lctx.Done():
			t.Stop()
			return c.ctxErr(ctx, lctx.Err())
		case <-t.C:
		}
	}
}

// pump emits the stream's messages until it ends. It reports whether any arrived, and returns
// an error only when listening must stop: emit failed, or an event was over the limit.
func (c *Conn) pump(r *sse.Reader, emit upstream.Emit) (bool, error) {
	got := false
	for {
		ev, err := r.Next()
		if errors.Is(err, sse.ErrTooLarge) {
			return got, fmt.Errorf("%w: %v", upstream.ErrTooLarge, err)
		}
		if err != nil {
			return got, nil
		}
		if ev.Type != "message" || len(bytes.TrimSpace(ev.Data)) == 0 {
			continue
		}
		msgs, perr := jsonrpc.Split(ev.Data)
		if perr != nil {
			c.log.Warn("upstream event is not JSON-RPC; skipped", "err", perr)
			continue
		}
		got = true
		for _, m := range msgs {
			if err := emit(m); err != nil {
				return got, err
			}
		}
	}
}

// reasoned is an error with a short reason the host may be told: no URL, address or upstream
// body. Error is the full text, for the bridge's log; the bridge shows HostReason instead.
type reasoned struct {
	err    error
	reason string
}

func withReason(err error, reason string) error { return &reasoned{err: err, reason: reason} }

func (e *reasoned) Error() string      { return e.err.Error() }
func (e *reasoned) Unwrap() error      { return e.err }
func (e *reasoned) HostReason() string { return e.reason }
