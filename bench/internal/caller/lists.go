package caller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/loadgen"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ListTarget is one MCP endpoint a list session reads tools/list from, and the tool names
// its whole list must hold (in any order; nil: not checked).
type ListTarget struct {
	Endpoint string
	Want     []string
}

// ListAnswer is what the last tools/list of a session saw, summed over its targets.
type ListAnswer struct {
	// Tools is the number of tools listed, Pages the number of tools/list requests it took.
	Tools, Pages int
	// Bytes is the size of the HTTP bodies of those requests' answers, as read from the wire
	// (the JSON-RPC response, with its SSE framing when the server streamed it).
	Bytes int64
}

// ListRecorder holds the answer of a session's last call, readable from another goroutine.
type ListRecorder struct {
	last atomic.Pointer[ListAnswer]
}

// Last returns the last call's answer (zero before any).
func (r *ListRecorder) Last() ListAnswer {
	if a := r.last.Load(); a != nil {
		return *a
	}
	return ListAnswer{}
}

// maxListPages bounds the pages one list may take, so that a server answering with cursors
// forever fails the run instead of hanging it.
const maxListPages = 100

// ToolsList returns a Dialer whose sessions hold one Go SDK client session per target and
// whose call lists every target's tools, one target after another (all pages of each), as
// a host that wants to see them all does. A call fails unless each target's list holds
// exactly its Want names. rec, when not nil, receives each call's answer.
func ToolsList(targets []ListTarget, protocol string, opts Options, rec *ListRecorder) (loadgen.Dialer, error) {
	if len(targets) == 0 {
		return nil, errors.New("no list target")
	}
	checks := make([]*nameCheck, len(targets))
	for i, t := range targets {
		if t.Want != nil {
			c, err := newNameCheck(t.Want)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.Endpoint, err)
			}
			checks[i] = c
		}
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "gatebench", Version: "v0.1.0"}, nil)
	return func(ctx context.Context) (loadgen.Session, error) {
		s := &listSession{checks: checks, rec: rec}
		for _, t := range targets {
			transport := newTransport()
			counter := &postCounter{base: bearer{base: transport, value: "Bearer " + opts.Token}}
			cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
				Endpoint:   t.Endpoint,
				HTTPClient: &http.Client{Transport: counter},
			}, &mcp.ClientSessionOptions{ProtocolVersion: protocol})
			if err != nil {
				transport.CloseIdleConnections()
				s.Close()
				return nil, fmt.Errorf("connect %s: %w", t.Endpoint, err)
			}
			s.targets = append(s.targets, listConn{endpoint: t.Endpoint, cs: cs, transport: transport, counter: counter})
		}
		return s, nil
	}, nil
}

type listConn struct {
	endpoint  string
	cs        *mcp.ClientSession
	transport *http.Transport
	counter   *postCounter
}

type listSession struct {
	targets []listConn
	checks  []*nameCheck
	rec     *ListRecorder
}

func (s *listSession) Call(ctx context.Context) error {
	var answer ListAnswer
	for i, t := range s.targets {
		before := t.counter.bytes.Load()
		var names []string
		cursor := ""
		for page := 1; ; page++ {
			if page > maxListPages {
				return fmt.Errorf("%s: tools/list still has a next page after %d", t.endpoint, maxListPages)
			}
			answer.Pages++
			res, err := t.cs.ListTools(ctx, &mcp.ListToolsParams{Cursor: cursor})
			if err != nil {
				return fmt.Errorf("%s: tools/list: %w", t.endpoint, err)
			}
			for _, tool := range res.Tools {
				names = append(names, tool.Name)
			}
			if cursor = res.NextCursor; cursor == "" {
				break
			}
		}
		n := t.counter.bytes.Load() - before
		if n <= 0 {
			// The SDK caches lists under some protocol revisions: a list that did not cross
			// the wire measured nothing.
			return fmt.Errorf("%s: tools/list answered without reading a byte from the wire", t.endpoint)
		}
		answer.Bytes += n
		answer.Tools += len(names)
		if c := s.checks[i]; c != nil {
			if err := c.check(names); err != nil {
				return fmt.Errorf("%s: %w", t.endpoint, err)
			}
		}
	}
	if s.rec != nil {
		s.rec.last.Store(&answer)
	}
	return nil
}

func (s *listSession) Close() error {
	var errs []error
	for _, t := range s.targets {
		done := make(chan error, 1)
		go func() { done <- t.cs.Close() }()
		select {
		case err := <-done:
			errs = append(errs, err)
		case <-time.After(closeTimeout):
			errs = append(errs, fmt.Errorf("%s: session close timed out", t.endpoint))
		}
		t.transport.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

// postCounter counts the body bytes of the answers to POSTs: the answers to requests the
// session sends, not the standalone GET stream's.
type postCounter struct {
	base  http.RoundTripper
	bytes atomic.Int64
}

func (c *postCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err != nil || r.Method != http.MethodPost {
		return resp, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.bytes}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// nameCheck verifies that a list holds exactly a set of names, each once.
type nameCheck struct {
	index map[string]int
	seen  []bool
}

func newNameCheck(want []string) (*nameCheck, error) {
	c := &nameCheck{index: make(map[string]int, len(want)), seen: make([]bool, len(want))}
	for i, name := range want {
		if _, dup := c.index[name]; dup {
			return nil, fmt.Errorf("tool %q is wanted twice", name)
		}
		c.index[name] = i
	}
	return c, nil
}

// check reports the first difference between got and the wanted names. A session's calls
// are sequential, so the scratch slice is not shared.
func (c *nameCheck) check(got []string) error {
	clear(c.seen)
	for _, name := range got {
		i, ok := c.index[name]
		switch {
		case !ok:
			return fmt.Errorf("tools/list holds %q, which it should not (%d tools, want %d)", name, len(got), len(c.seen))
		case c.seen[i]:
			return fmt.Errorf("tools/list holds %q twice", name)
		}
		c.seen[i] = true
	}
	if len(got) != len(c.seen) {
		for name, i := range c.index {
			if !c.seen[i] {
				return fmt.Errorf("tools/list lacks %q (%d tools, want %d)", name, len(got), len(c.seen))
			}
		}
	}
	return nil
}
