package stdio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// callQueue bounds the messages waiting for one Send stream; the reader waits for room (or
// for the Send to end), so a slow host slows only its own session's child.
const callQueue = 16

// Child is one running MCP server process.
//
// Routing of what the child writes: a response goes to the Send waiting for its id; a
// notifications/progress whose token matches an in-flight request's
// params._meta.progressToken goes to that request; any other notification or server→host
// request goes to the oldest in-flight request, else to a Listen stream (bounded queue; a full
// or absent one drops the message with a warning).
//
// A stdout line that is not JSON-RPC is logged and skipped rather than fatal: servers are known
// to print banners and debug output to stdout, and the line never reaches the host. A line over
// MaxLine kills the child: the stream cannot be resynchronised without reading it all.
type Child struct {
	sup    *Supervisor
	cmd    *exec.Cmd
	pid    int
	owner  owner
	marker string // EnvMarker token
	cgroup string // empty when the child has none
	log    *slog.Logger
	stdin  *os.File
	stdout *os.File
	stderr *os.File
	outLR  *lineReader
	errLR  *lineReader
	writes chan []byte

	stdinClose  sync.Once
	stdinClosed chan struct{} // closed when the bridge closes stdin
	stdinBroken chan struct{} // closed when a write to stdin failed
	closeOnce   sync.Once
	exited      chan struct{} // closed once the process is reaped
	stdoutDone  chan struct{}
	stderrDone  chan struct{}
	done        chan struct{} // closed once reaped, output drained and every call failed

	mu              sync.Mutex
	calls           map[string]*call
	progress        map[string]*call
	seq             uint64
	listeners       []*listener
	protocolVersion string
	fatal           error // set when the bridge killed the child for misbehaving
	stdinErr        error
	closing         bool
	err             error // why the child ended; set before done is closed

	// sigMu orders group signals against reaping: once the child is reaped its pid (which
	// is also its process group id) may be reused, so no signal may be sent after that.
	sigMu  sync.Mutex
	reaped bool
}

var _ upstream.Conn = (*Child)(nil)

type call struct {
	key   string
	token string
	seq   uint64
	msgs  chan upstream.Message
	gone  chan struct{} // closed when the Send has returned
}

type listener struct {
	msgs chan upstream.Message
}

func newChild(s *Supervisor, cmd *exec.Cmd, stdin, stdout, stderr *os.File, logger *slog.Logger) *Child {
	return &Child{
		sup:         s,
		cmd:         cmd,
		pid:         cmd.Process.Pid,
		log:         logger,
		stdin:       stdin,
		stdout:      stdout,
		stderr:      stderr,
		outLR:       newLineReader(stdout, s.opts.MaxLine),
		errLR:       newLineReader(stderr, s.opts.MaxStderrLine),
		writes:      make(chan []byte, 64),
		stdinClosed: make(chan struct{}),
		stdinBroken: make(chan struct{}),
		exited:      make(chan struct{}),
		stdoutDone:  make(chan struct{}),
		stderrDone:  make(chan struct{}),
		done:        make(chan struct{}),
		calls:       map[string]*call{},
		progress:    map[string]*call{},
	}
}

func (c *Child) start() {
	go c.writeStdin()
	go c.readStdout()
	go c.readStderr()
	go c.wait()
}

// Pid is the child's process id (also its process group id).
func (c *Child) Pid() int { return c.pid }

// BufferBytes is the memory the child's stdout and stderr readers hold for buffering: a few
// KiB while idle, up to MaxLine while a long line is read.
func (c *Child) BufferBytes() int { return c.outLR.bufferBytes() + c.errLR.bufferBytes() }

// Done is closed once the child has been reaped and every call on it has ended.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err says why the child ended; valid after Done is closed.
func (c *Child) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// SetProtocolVersion records the negotiated revision (informational for stdio).
func (c *Child) SetProtocolVersion(v string) {
	if !upstream.ValidProtocolVersion(v) {
		return
	}
	c.mu.Lock()
	c.protocolVersion = v
	c.mu.Unlock()
}

// Send writes m to the child's stdin. For a request it then emits every message routed to it
// and returns after the response.
func (c *Child) Send(ctx context.Context, m upstream.Message, emit upstream.Emit) error {
	select {
	case <-c.exited:
		return upstream.ErrGone // it died before this message; never report that as this call's failure
	default:
	}
	line, err := frame(m.Raw)
	if err != nil {
		return err
	}
	if m.Kind != upstream.KindRequest {
		return c.enqueue(ctx, line)
	}
	cl := &call{key: jsonrpc.IDKey(m.ID), msgs: make(chan upstream.Message, callQueue), gone: make(chan struct{})}
	c.mu.Lock()
	select {
	case <-c.done:
		c.mu.Unlock()
		return c.err
	default:
	}
	if _, dup := c.calls[cl.key]; dup {
		c.mu.Unlock()
		return fmt.Errorf("%w: %s", upstream.ErrDuplicateID, m.ID)
	}
	c.seq++
	cl.seq = c.seq
	c.calls[cl.key] = cl
	if m.ProgressToken != nil {
		tok := jsonrpc.IDKey(m.ProgressToken)
		if _, taken := c.progress[tok]; !taken {
			cl.token = tok
			c.progress[tok] = cl
		}
	}
	c.mu.Unlock()
	defer c.unregister(cl)

	if err := c.enqueue(ctx, line); err != nil {
		return err
	}
	deliver := func(out upstream.Message) (bool, error) {
		if v, ok := upstream.InitializeResult(&m, &out); ok {
			c.SetProtocolVersion(v)
		}
		if err := emit(out); err != nil {
			return true, err
		}
		return out.IsResponseTo(m.ID), nil
	}
	for {
		select {
		case out := <-cl.msgs:
			if last, err := deliver(out); last || err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			// The reader has finished, so everything routed to this call is queued.
			for {
				select {
				case out := <-cl.msgs:
					if last, err := deliver(out); last || err != nil {
						return err
					}
				default:
					return c.err
				}
			}
		}
	}
}

// frame returns raw as one line. The stdio transport forbids embedded newlines; JSON allows
// them only as whitespace, which compacting removes (rare: hosts seldom pretty-print).
func frame(raw []byte) ([]byte, error) {
	if bytes.ContainsAny(raw, "\r\n") {
		var b bytes.Buffer
		b.Grow(len(raw) + 1)
		if err := json.Compact(&b, raw); err != nil {
			return nil, fmt.Errorf("%w: %v", upstream.ErrInvalidMessage, err)
		}
		b.WriteByte('\n')
		return b.Bytes(), nil
	}
	line := make([]byte, len(raw)+1)
	copy(line, raw)
	line[len(raw)] = '\n'
	return line, nil
}

func (c *Child) unregister(cl *call) {
	close(cl.gone)
	c.mu.Lock()
	if c.calls[cl.key] == cl {
		delete(c.calls, cl.key)
	}
	if cl.token != "" && c.progress[cl.token] == cl {
		delete(c.progress, cl.token)
	}
	c.mu.Unlock()
}

// enqueue hands a line to the stdin writer, in order.
func (c *Child) enqueue(ctx context.Context, line []byte) error {
	select {
	case c.writes <- line:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.err
	case <-c.stdinClosed:
		return fmt.Errorf("%w: shutting down", upstream.ErrClosed)
	case <-c.stdinBroken:
		// Usually the child has just exited; report that when it is known soon.
		select {
		case <-c.done:
			return c.err
		case <-time.After(c.sup.opts.Grace):
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
		err := c.stdinErr
		c.mu.Unlock()
		return fmt.Errorf("%w: write to stdin: %v", upstream.ErrUnavailable, err)
	}
}

func (c *Child) writeStdin() {
	for {
		select {
		case line := <-c.writes:
			if _, err := c.stdin.Write(line); err != nil {
				select {
				case <-c.stdinClosed:
				default:
					c.log.Warn("write to upstream stdin failed", "err", err)
					c.mu.Lock()
					c.stdinErr = err
					c.mu.Unlock()
					close(c.stdinBroken)
				}
				return
			}
		case <-c.stdinClosed:
			return
		case <-c.exited:
			return
		}
	}
}

// Listen emits the child's messages that belong to no request until ctx ends or the child
// ends. With several Listen streams open, each message goes to one of them.
func (c *Child) Listen(ctx context.Context, emit upstream.Emit) error {
	l := &listener{msgs: make(chan upstream.Message, c.sup.opts.ListenQueue)}
	c.mu.Lock()
	c.listeners = append(c.listeners, l)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		for i, x := range c.listeners {
			if x == l {
				c.listeners = append(c.listeners[:i:i], c.listeners[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
	}()
	for {
		select {
		case m := <-l.msgs:
			if err := emit(m); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return c.err
		}
	}
}

// route delivers one message the child wrote.
func (c *Child) route(m upstream.Message) {
	c.mu.Lock()
	var target *call
	switch {
	case m.Kind == upstream.KindResponse:
		key := jsonrpc.IDKey(m.ID)
		if cl := c.calls[key]; cl != nil {
			target = cl
			delete(c.calls, key)
			if cl.token != "" && c.progress[cl.token] == cl {
				delete(c.progress, cl.token)
			}
		}
		if target == nil {
			c.mu.Unlock()
			c.log.Warn("upstream response matches no request in flight; dropped", "id", string(m.ID))
			return
		}
	case m.ProgressToken != nil && c.progress[jsonrpc.IDKey(m.ProgressToken)] != nil:
		target = c.progress[jsonrpc.IDKey(m.ProgressToken)]
	default:
		for _, cl := range c.calls {
			if target == nil || cl.seq < target.seq {
				target = cl
			}
		}
	}
	if target == nil {
		for _, l := range c.listeners {
			select {
			case l.msgs <- m:
				c.mu.Unlock()
				return
			default:
			}
		}
		open := len(c.listeners)
		c.mu.Unlock()
		c.log.Warn("upstream message has no request or listener with room; dropped", "method", m.Method, "listeners", open)
		return
	}
	c.mu.Unlock()
	select {
	case target.msgs <- m:
	case <-target.gone:
		c.log.Debug("upstream message for an abandoned request; dropped", "method", m.Method)
	}
}

func (c *Child) readStdout() {
	defer close(c.stdoutDone)
	lr := c.outLR
	for {
		line, err := lr.next()
		if err != nil {
			switch {
			case errors.Is(err, errLineTooLong):
				c.mu.Lock()
				c.fatal = fmt.Errorf("%w: the upstream wrote a line over %d bytes on stdout; it was killed", upstream.ErrTooLarge, c.sup.opts.MaxLine)
				c.mu.Unlock()
				c.log.Warn("upstream stdout line over the limit; killing the child", "limit", c.sup.opts.MaxLine)
				c.signalGroup(syscall.SIGKILL)
			case errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed):
			default:
				c.log.Warn("read upstream stdout", "err", err)
			}
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		msgs, err := jsonrpc.Split(line)
		if err != nil {
			c.log.Warn("upstream wrote a line that is not JSON-RPC on stdout; skipped", "err", err, "line", preview(line))
			continue
		}
		for _, m := range msgs {
			c.route(m)
		}
	}
}

func (c *Child) readStderr() {
	defer close(c.stderrDone)
	lr := c.errLR
	for {
		line, err := lr.nextTruncated()
		if len(line) > 0 {
			c.log.Info("upstream stderr", "line", string(bytes.ToValidUTF8(line, []byte("\uFFFD"))))
		}
		if err != nil {
			return
		}
	}
}

// wait reaps the child. It first waits for the exit without reaping, so that the process
// group id stays reserved while what is left of the child's process tree is killed; then it
// reaps, drains the output and fails what is still in flight.
func (c *Child) wait() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, c.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	c.sigMu.Lock()
	c.killTree()
	werr := c.cmd.Wait()
	own(c.pid, false)
	c.reaped = true
	c.sigMu.Unlock()
	close(c.exited)

	// The pipes reach EOF once every holder is gone. A process that left the group may still
	// hold them; bound the drain.
	drain := time.NewTimer(c.sup.opts.Grace)
	for _, ch := range []chan struct{}{c.stdoutDone, c.stderrDone} {
		select {
		case <-ch:
		case <-drain.C:
			_ = c.stdout.Close()
			_ = c.stderr.Close()
			<-ch
		}
	}
	drain.Stop()
	c.finish(werr)
}

func (c *Child) finish(werr error) {
	status := "exit status 0"
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		status = ee.ProcessState.String()
	} else if werr != nil {
		status = werr.Error()
	}
	c.mu.Lock()
	switch {
	case c.fatal != nil:
		c.err = c.fatal
	case c.closing:
		c.err = fmt.Errorf("%w: %s", upstream.ErrClosed, status)
	default:
		c.err = fmt.Errorf("%w: %s", upstream.ErrExited, status)
	}
	closing := c.closing
	c.mu.Unlock()
	c.closeStdin()
	_ = c.stdout.Close()
	_ = c.stderr.Close()
	keep := false
	if c.cgroup != "" {
		if err := removeCgroup(c.cgroup, 2*c.sup.opts.Grace+time.Second); err != nil {
			// Left recorded: the next start with the state dir retries.
			c.log.Warn("cannot remove the child's cgroup", "cgroup", c.cgroup, "err", err)
			keep = true
		}
	}
	c.sup.remove(c, keep) // before done: a reaped child no longer counts against the caps
	close(c.done)
	if closing {
		c.log.Info("upstream stopped", "status", status)
	} else {
		c.log.Warn("upstream ended", "err", c.err)
	}
}

func (c *Child) closeStdin() {
	c.stdinClose.Do(func() {
		close(c.stdinClosed)
		_ = c.stdin.Close()
	})
}

// killTree SIGKILLs what is left of the child's process tree once the child has exited
// (unreaped): its process group, and its cgroup or, without one, its descendants and marked
// orphans. c.sigMu must be held.
func (c *Child) killTree() {
	_ = syscall.Kill(-c.pid, syscall.SIGKILL)
	if c.cgroup != "" {
		if err := killCgroup(c.cgroup); err != nil {
			c.log.Warn("kill the child's cgroup", "cgroup", c.cgroup, "err", err)
		}
		return
	}
	killTree(c.pid, c.marker)
}

// signalGroup signals the child's process group unless the child has been reaped.
func (c *Child) signalGroup(sig syscall.Signal) {
	c.sigMu.Lock()
	defer c.sigMu.Unlock()
	if !c.reaped {
		_ = syscall.Kill(-c.pid, sig)
	}
}

// Close shuts the child down as the MCP stdio transport says: close stdin, wait Grace,
// SIGTERM the process group, wait Grace, SIGKILL the group. It returns once the child is
// reaped; when ctx ends first the group is killed at once. In-flight calls end with
// upstream.ErrClosed.
func (c *Child) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
		go c.shutdown()
	})
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		c.signalGroup(syscall.SIGKILL)
		<-c.done
		return ctx.Err()
	}
}

func (c *Child) shutdown() {
	c.closeStdin()
	t := time.NewTimer(c.sup.opts.Grace)
	defer t.Stop()
	select {
	case <-c.exited:
		return
	case <-t.C:
	}
	c.log.Info("upstream ignored stdin close; sending SIGTERM")
	c.signalGroup(syscall.SIGTERM)
	t.Reset(c.sup.opts.Grace)
	select {
	case <-c.exited:
		return
	case <-t.C:
	}
	c.log.Warn("upstream ignored SIGTERM; sending SIGKILL")
	c.signalGroup(syscall.SIGKILL)
}

// preview is a short, printable excerpt of a line for logs.
func preview(line []byte) string {
	const n = 200
	if len(line) > n {
		line = line[:n]
	}
	return string(bytes.ToValidUTF8(line, []byte("\uFFFD")))
}
