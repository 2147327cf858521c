package stdio_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/stdio"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/stdio/stdiotest"
	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/upstream"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

func TestMain(m *testing.M) {
	stdiotest.Run()
	if dir := os.Getenv(envOwner); dir != "" {
		runOwner(dir)
	}
	os.Exit(m.Run())
}

const grace = 200 * time.Millisecond

func newSupervisor(t *testing.T, opts stdio.Options) *stdio.Supervisor {
	t.Helper()
	if opts.Grace == 0 {
		opts.Grace = grace
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := stdio.NewSupervisor(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Supervisor.Close: %v", err)
		}
	})
	return s
}

func self(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func start(t *testing.T, s *stdio.Supervisor, mode string) *stdio.Child {
	t.Helper()
	c, err := s.Start(stdio.Spec{Argv: []string{self(t)}, Env: map[string]string{stdiotest.EnvMode: mode}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return c
}

func peek(t *testing.T, s string) upstream.Message {
	t.Helper()
	m, err := jsonrpc.Peek([]byte(s))
	if err != nil {
		t.Fatalf("Peek(%s): %v", s, err)
	}
	return m
}

// call sends a request and collects what the child emits for it.
func call(t *testing.T, c *stdio.Child, req string) ([]upstream.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []upstream.Message
	err := c.Send(ctx, peek(t, req), func(m upstream.Message) error {
		got = append(got, m)
		return nil
	})
	return got, err
}

func toolCall(id int, name, args string) string {
	if args == "" {
		args = "{}"
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, id, name, args)
}

// gone reports whether pid no longer runs (absent, or a zombie left for init to reap).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reaped asserts that the child was reaped by us: its pid is free, not a zombie.
func reaped(t *testing.T, c *stdio.Child) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("child not done")
	}
	if err := syscall.Kill(c.Pid(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("kill(%d, 0) = %v after reaping, want ESRCH", c.Pid(), err)
	}
}

func closeChild(t *testing.T, c *stdio.Child) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	reaped(t, c)
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	c := start(t, newSupervisor(t, stdio.Options{}), "server")

	got, err := call(t, c, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	if err != nil || len(got) != 1 || got[0].ProtocolVersion != "2025-06-18" {
		t.Fatalf("initialize = %v, %v", got, err)
	}
	if _, err := call(t, c, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil {
		t.Fatalf("initialized: %v", err)
	}

	t.Run("pretty-printed request is framed as one line", func(t *testing.T) {
		got, err := call(t, c, "{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1,\n  \"method\": \"tools/call\",\n  \"params\": {\"name\": \"echo\", \"arguments\": {\"text\": \"a\\nb\"}}\n}")
		if err != nil || len(got) != 1 || !strings.Contains(string(got[0].Raw), `a\nb`) {
			t.Fatalf("echo = %s, %v", raws(got), err)
		}
	})
	t.Run("progress goes to the request with the token", func(t *testing.T) {
		got, err := call(t, c, `{"jsonrpc":"2.0","id":"p","method":"tools/call","params":{"name":"progress","_meta":{"progressToken":"tok"}}}`)
		if err != nil || len(got) != 4 || got[0].Method != "notifications/progress" || got[3].Kind != upstream.KindResponse {
			t.Fatalf("progress = %s, %v", raws(got), err)
		}
	})
	t.Run("notification goes to the request in flight", func(t *testing.T) {
		got, err := call(t, c, toolCall(2, "log", ""))
		if err != nil || len(got) != 2 || got[0].Method != "notifications/message" {
			t.Fatalf("log = %s, %v", raws(got), err)
		}
	})
	t.Run("server request goes to the request in flight and is answered", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var got []upstream.Message
		err := c.Send(ctx, peek(t, toolCall(3, "ask", "")), func(m upstream.Message) error {
			got = append(got, m)
			if m.Method == "sampling/createMessage" {
				answer := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"role":"assistant","content":{"type":"text","text":"hi"},"model":"m"}}`, m.ID)
				return c.Send(ctx, peek(t, answer), nil)
			}
			return nil
		})
		if err != nil || len(got) != 2 || !strings.Contains(string(got[1].Raw), "host said") {
			t.Fatalf("ask = %s, %v", raws(got), err)
		}
	})
	t.Run("duplicate id in flight", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		started := make(chan struct{})
		go func() {
			close(started)
			errc <- c.Send(ctx, peek(t, toolCall(4, "block", "")), func(upstream.Message) error { return nil })
		}()
		<-started
		// Until the first Send registered, the second may win instead; either way exactly
		// one of them must fail with ErrDuplicateID.
		var err error
		deadline := time.Now().Add(10 * time.Second)
		for {
			select {
			case gerr := <-errc:
				// The loop's Send registered id 4 first: the goroutine's is the duplicate.
				if !errors.Is(gerr, upstream.ErrDuplicateID) {
					t.Fatalf("first Send = %v, want ErrDuplicateID or to block", gerr)
				}
				return
			default:
			}
			sctx, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
			err = c.Send(sctx, peek(t, toolCall(4, "block", "")), func(upstream.Message) error { return nil })
			scancel()
			if errors.Is(err, upstream.ErrDuplicateID) || time.Now().After(deadline) {
				break
			}
		}
		if !errors.Is(err, upstream.ErrDuplicateID) {
			t.Fatalf("second Send = %v, want ErrDuplicateID", err)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("blocked Send = %v, want context.Canceled", err)
		}
	})
	t.Run("a canceled request leaves the child usable", func(t *testing.T) {
		got, err := call(t, c, toolCall(5, "echo", `{"text":"still here"}`))
		if err != nil || len(got) != 1 || !strings.Contains(string(got[0].Raw), "still here") {
			t.Fatalf("echo = %s, %v", raws(got), err)
		}
	})
	closeChild(t, c)
	if err := c.Err(); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Err = %v, want ErrClosed", err)
	}
}

func raws(ms []upstream.Message) string {
	var b strings.Builder
	for _, m := range ms {
		b.Write(m.Raw)
		b.WriteByte('\n')
	}
	return b.String()
}

func TestListen(t *testing.T) {
	t.Parallel()
	c := start(t, newSupervisor(t, stdio.Options{}), "server")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan upstream.Message, 16)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Listen(ctx, func(m upstream.Message) error { got <- m; return nil })
	}()
	// The poke is dropped until Listen has registered; poke until one arrives.
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for received := false; !received; {
		if _, err := call(t, c, `{"jsonrpc":"2.0","method":"notifications/test/poke"}`); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m.Method != "notifications/message" {
				t.Fatalf("Listen got %s", m.Raw)
			}
			received = true
		case <-tick.C:
		case <-deadline:
			t.Fatal("no message on Listen")
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Listen = %v", err)
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mode    string
		tool    string
		opts    stdio.Options
		wantErr error
		wantMsg string
	}{
		{name: "crash mid-call", mode: "server", tool: "crash", wantErr: upstream.ErrExited, wantMsg: "upstream exited: exit status 3"},
		{name: "endless line", mode: "server", tool: "endless", opts: stdio.Options{MaxLine: 1 << 20}, wantErr: upstream.ErrTooLarge, wantMsg: "over 1048576 bytes"},
		{name: "result over the limit", mode: "server", tool: "big", opts: stdio.Options{MaxLine: 1 << 10}, wantErr: upstream.ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := start(t, newSupervisor(t, tc.opts), tc.mode)
			_, err := call(t, c, toolCall(1, tc.tool, `{"size":4096}`))
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Send = %v, want %v containing %q", err, tc.wantErr, tc.wantMsg)
			}
			reaped(t, c)
			// A message sent after the end is refused as such, not failed with the old cause.
			if _, err := call(t, c, toolCall(2, "echo", "")); !errors.Is(err, upstream.ErrGone) {
				t.Fatalf("Send after the end = %v, want %v", err, upstream.ErrGone)
			}
		})
	}
}

func TestNonJSONLinesAreSkipped(t *testing.T) {
	t.Parallel()
	c := start(t, newSupervisor(t, stdio.Options{}), "banner")
	got, err := call(t, c, toolCall(1, "garbage", ""))
	if err != nil || len(got) != 1 || !strings.Contains(string(got[0].Raw), "after garbage") {
		t.Fatalf("garbage = %s, %v", raws(got), err)
	}
	closeChild(t, c)
}

func TestStubbornChildIsKilled(t *testing.T) {
	t.Parallel()
	c := start(t, newSupervisor(t, stdio.Options{}), "stubborn")
	if _, err := call(t, c, toolCall(1, "echo", "")); err != nil {
		t.Fatal(err)
	}
	closeChild(t, c)
	if err := c.Err(); !errors.Is(err, upstream.ErrClosed) || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Err = %v, want ErrClosed after SIGKILL", err)
	}
}

func TestCloseInterruptsCalls(t *testing.T) {
	t.Parallel()
	c := start(t, newSupervisor(t, stdio.Options{}), "server")
	errc := make(chan error, 1)
	arrived := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var once sync.Once
		errc <- c.Send(ctx, peek(t, toolCall(1, "hold", "")), func(upstream.Message) error {
			once.Do(func() { close(arrived) })
			return nil
		})
	}()
	// Close only once the call is in flight: the child has it (its notification came back).
	select {
	case <-arrived:
	case err := <-errc:
		t.Fatalf("Send ended before the call arrived: %v", err)
	}
	closeChild(t, c)
	if err := <-errc; !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("in-flight Send = %v, want ErrClosed", err)
	}
}

func TestGrandchildIsKilledWithTheGroup(t *testing.T) {
	t.Parallel()
	c := start(t, newSupervisor(t, stdio.Options{}), "server")
	got, err := call(t, c, toolCall(1, "spawn", ""))
	if err != nil || len(got) != 1 {
		t.Fatalf("spawn = %s, %v", raws(got), err)
	}
	pid := pidIn(t, got[0])
	closeChild(t, c)
	waitGone(t, pid)
}

func pidIn(t *testing.T, m upstream.Message) int {
	t.Helper()
	s := string(m.Raw)
	i := strings.Index(s, `"text":"`)
	if i < 0 {
		t.Fatalf("no text in %s", s)
	}
	s = s[i+len(`"text":"`):]
	pid, err := strconv.Atoi(s[:strings.IndexByte(s, '"')])
	if err != nil {
		t.Fatalf("pid in %s: %v", m.Raw, err)
	}
	return pid
}

func TestEnvironmentIsScrubbed(t *testing.T) {
	t.Parallel()
	gateway := map[string]string{"PATH": "/usr/bin:/bin", "HOME": "/home/gw", "SECRET_TOKEN": "hunter2", "LANG": ""}
	s := newSupervisor(t, stdio.Options{Getenv: func(k string) string { return gateway[k] }})
	c, err := s.Start(stdio.Spec{Argv: []string{self(t)}, Env: map[string]string{stdiotest.EnvMode: "server", "HOME": "/srv", "API_KEY": "configured"}, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	got, err := call(t, c, toolCall(1, "env", ""))
	if err != nil || len(got) != 1 {
		t.Fatalf("env = %s, %v", raws(got), err)
	}
	env := string(got[0].Raw)
	for _, want := range []string{`PATH=/usr/bin:/bin`, `HOME=/srv`, `API_KEY=configured`, stdiotest.EnvMode + `=server`} {
		if !strings.Contains(env, want) {
			t.Errorf("child env lacks %s: %s", want, env)
		}
	}
	for _, banned := range []string{"SECRET_TOKEN", "hunter2", "LANG=", "/home/gw", "GOFLAGS", "GOCACHE"} {
		if strings.Contains(env, banned) {
			t.Errorf("child env has %s: %s", banned, env)
		}
	}
	closeChild(t, c)
}

func TestWorkingDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newSupervisor(t, stdio.Options{})
	c, err := s.Start(stdio.Spec{Argv: []string{self(t)}, Env: map[string]string{stdiotest.EnvMode: "server"}, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	got, err := call(t, c, toolCall(1, "cwd", ""))
	if err != nil || len(got) != 1 || !strings.Contains(string(got[0].Raw), dir) {
		t.Fatalf("cwd = %s, %v", raws(got), err)
	}
	closeChild(t, c)
}

func TestSpawnFailures(t *testing.T) {
	t.Parallel()
	s := newSupervisor(t, stdio.Options{})
	tests := []struct {
		name string
		spec stdio.Spec
		want string
	}{
		{name: "command not found", spec: stdio.Spec{Argv: []string{"gatehouse-no-such-command"}}, want: "executable file not found"},
		{name: "missing path", spec: stdio.Spec{Argv: []string{"/nonexistent/server"}}, want: "no such file"},
		{name: "no command", spec: stdio.Spec{}, want: "no command"},
		{name: "bad directory", spec: stdio.Spec{Argv: []string{self(t)}, Dir: "/nonexistent-dir"}, want: "working directory"},
		{name: "bad env", spec: stdio.Spec{Argv: []string{self(t)}, Env: map[string]string{"A=B": "c"}}, want: "environment"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Start(tc.spec)
			if !errors.Is(err, upstream.ErrSpawn) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start = %v, want ErrSpawn containing %q", err, tc.want)
			}
		})
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("Len = %d after failed starts", n)
	}
}

func TestMaxChildrenAndSupervisorClose(t *testing.T) {
	t.Parallel()
	s, err := stdio.NewSupervisor(stdio.Options{Grace: grace, MaxChildren: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, s, "server")
	b := start(t, s, "stubborn")
	if _, err := s.Start(stdio.Spec{Argv: []string{self(t)}}); !errors.Is(err, upstream.ErrTooMany) {
		t.Fatalf("third Start = %v, want ErrTooMany", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	wg.Wait()
	reaped(t, a)
	reaped(t, b)
	if _, err := s.Start(stdio.Spec{Argv: []string{self(t)}}); !errors.Is(err, upstream.ErrClosed) {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
}

// recorder is a slog handler that keeps the records it sees.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.records = append(r.records, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// stderrLines returns the "line" attribute of every "upstream stderr" record.
func (r *recorder) stderrLines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var lines []string
	for _, rec := range r.records {
		if rec.Message != "upstream stderr" {
			continue
		}
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "line" {
				lines = append(lines, a.Value.String())
			}
			return true
		})
	}
	return lines
}

func TestStderrIsLoggedLineByLine(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	s := newSupervisor(t, stdio.Options{MaxStderrLine: 100, Logger: slog.New(rec)})
	c := start(t, s, "server")
	if _, err := call(t, c, toolCall(1, "stderr", "")); err != nil {
		t.Fatal(err)
	}
	closeChild(t, c) // stderr is drained before the child is done
	lines := rec.stderrLines()
	if len(lines) != 2 || lines[0] != "diagnostic: "+strings.Repeat("z", 88) || lines[1] != "second line" {
		t.Fatalf("stderr lines = %q", lines)
	}
}
