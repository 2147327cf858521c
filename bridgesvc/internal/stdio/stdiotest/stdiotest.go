// Package stdiotest is a scriptable stdio MCP server for tests of the bridge. A test binary
// becomes the server when it is re-executed with EnvMode set: call Run first thing in TestMain.
//
// Modes (the value of EnvMode): "server" answers requests; "stubborn" also ignores SIGTERM and
// keeps running after stdin closes; "banner" writes a non-JSON line before serving; "sleep"
// blocks forever (a grandchild for process-group tests).
//
// Tools (tools/call params.name): echo (returns arguments.text), progress (three
// notifications/progress on the request's token, then the result), log (a notifications/message,
// then the result), ask (a sampling/createMessage request to the host; the result carries the
// host's answer), crash (exits with status 3 without answering), garbage (a non-JSON line, then
// the result), endless (a line that never ends), big (a result of arguments.size bytes), env
// (the environment), cwd (the working directory), pid, stderr (a 10 KB line and a short one
// on stderr), spawn (starts a "sleep" grandchild in the same process group and returns its
// pid), setsid (starts a "sleep" grandchild that calls setsid, leaving the process group and
// the session, and returns its pid), block (never answers).
// The notification notifications/test/poke makes the server send a notifications/message that
// belongs to no request.
package stdiotest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// EnvMode selects the mode; the test passes it in the server's configured environment.
const EnvMode = "GATEHOUSE_STDIOTEST_MODE"

// Run serves and exits when EnvMode is set, and returns at once otherwise.
func Run() {
	mode := os.Getenv(EnvMode)
	if mode == "" {
		return
	}
	os.Exit(serve(mode))
}

type server struct {
	out     sync.Mutex
	mu      sync.Mutex
	waiting map[string]chan json.RawMessage
}

type message struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  json.RawMessage `json:"error,omitempty"`
}

func serve(mode string) int {
	switch mode {
	case "sleep":
		forever()
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
	case "banner":
		fmt.Println("starting up, not JSON")
	}
	s := &server{waiting: map[string]chan json.RawMessage{}}
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			if mode == "stubborn" {
				forever()
			}
			return 0
		}
		var m message
		if err := json.Unmarshal(line, &m); err != nil {
			fmt.Fprintln(os.Stderr, "bad input:", err)
			continue
		}
		switch {
		case m.Method == "" && m.ID != nil:
			s.mu.Lock()
			ch := s.waiting[string(m.ID)]
			s.mu.Unlock()
			if ch != nil {
				ch <- line
			}
		case m.Method == "notifications/test/poke":
			s.send(map[string]any{"jsonrpc": "2.0", "method": "notifications/message", "params": map[string]any{"level": "info", "data": "poked"}})
		case m.ID == nil:
			// Other notifications need no answer.
		default:
			go s.handle(m)
		}
	}
}

func (s *server) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	s.writeLine(b)
}

func (s *server) writeLine(b []byte) {
	s.out.Lock()
	defer s.out.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func (s *server) result(id json.RawMessage, v any) {
	s.send(map[string]any{"jsonrpc": "2.0", "id": id, "result": v})
}

func text(t string) map[string]any {
	return map[string]any{"content": []any{map[string]any{"type": "text", "text": t}}}
}

func (s *server) handle(m message) {
	var p struct {
		ProtocolVersion string         `json:"protocolVersion"`
		Name            string         `json:"name"`
		Arguments       map[string]any `json:"arguments"`
		Meta            struct {
			ProgressToken json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
	}
	_ = json.Unmarshal(m.Params, &p)
	switch m.Method {
	case "initialize":
		v := p.ProtocolVersion
		if v == "" {
			v = "2025-11-25"
		}
		s.result(m.ID, map[string]any{"protocolVersion": v, "capabilities": map[string]any{"tools": map[string]any{}}, "serverInfo": map[string]any{"name": "stdiotest", "version": "1"}})
	case "tools/list":
		s.result(m.ID, map[string]any{"tools": []any{map[string]any{"name": "echo", "inputSchema": map[string]any{"type": "object"}}}})
	case "tools/call":
		s.tool(m.ID, p.Name, p.Arguments, p.Meta.ProgressToken)
	default:
		s.send(map[string]any{"jsonrpc": "2.0", "id": m.ID, "error": map[string]any{"code": -32601, "message": "method not found"}})
	}
}

func (s *server) tool(id json.RawMessage, name string, args map[string]any, token json.RawMessage) {
	switch name {
	case "echo":
		t, _ := args["text"].(string)
		s.result(id, text(t))
	case "progress":
		for i := range 3 {
			s.send(map[string]any{"jsonrpc": "2.0", "method": "notifications/progress", "params": map[string]any{"progressToken": token, "progress": i, "total": 3}})
		}
		s.result(id, text("done"))
	case "log":
		s.send(map[string]any{"jsonrpc": "2.0", "method": "notifications/message", "params": map[string]any{"level": "info", "data": "working"}})
		s.result(id, text("logged"))
	case "ask":
		askID := `"ask-` + strings.Trim(string(id), `"`) + `"`
		ch := make(chan json.RawMessage, 1)
		s.mu.Lock()
		s.waiting[askID] = ch
		s.mu.Unlock()
		s.send(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(askID), "method": "sampling/createMessage", "params": map[string]any{"messages": []any{}, "maxTokens": 10}})
		answer := <-ch
		s.result(id, text("host said "+string(answer)))
	case "crash":
		os.Exit(3)
	case "garbage":
		s.writeLine([]byte("this is not JSON"))
		s.result(id, text("after garbage"))
	case "endless":
		s.out.Lock()
		chunk := []byte(strings.Repeat("x", 64<<10))
		for {
			if _, err := os.Stdout.Write(chunk); err != nil {
				os.Exit(1)
			}
		}
	case "big":
		n, _ := args["size"].(float64)
		s.result(id, text(strings.Repeat("b", int(n))))
	case "env":
		s.result(id, text(strings.Join(os.Environ(), "\n")))
	case "cwd":
		wd, _ := os.Getwd()
		s.result(id, text(wd))
	case "pid":
		s.result(id, text(strconv.Itoa(os.Getpid())))
	case "spawn":
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), EnvMode+"=sleep")
		if err := cmd.Start(); err != nil {
			s.result(id, text("spawn: "+err.Error()))
			return
		}
		s.result(id, text(strconv.Itoa(cmd.Process.Pid)))
	case "setsid":
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), EnvMode+"=sleep")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			s.result(id, text("setsid: "+err.Error()))
			return
		}
		s.result(id, text(strconv.Itoa(cmd.Process.Pid)))
	case "stderr":
		fmt.Fprintln(os.Stderr, "diagnostic: "+strings.Repeat("z", 10000))
		fmt.Fprintln(os.Stderr, "second line")
		s.result(id, text("wrote stderr"))
	case "block":
	case "hold":
		// Like block, after a notification that tells the caller the call has arrived.
		s.send(map[string]any{"jsonrpc": "2.0", "method": "notifications/message", "params": map[string]any{"level": "info", "data": "holding"}})
	default:
		s.send(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{"code": -32602, "message": "unknown tool " + name}})
	}
}

// forever blocks without tripping the runtime's deadlock detector.
func forever() {
	for {
		time.Sleep(time.Hour)
	}
}
