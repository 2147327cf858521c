package config_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
	"google.golang.org/protobuf/proto"
)

const example = `
servers:
  - name: echo
    transport: stdio
    command: ["go", "run", "./examples/servers/echo"]
    env: {LOG_LEVEL: debug}
    dir: .
    tenants: [default]

  - name: search
    transport: http
    url: https://mcp.internal.example/mcp
    tenants: [default, research]
    timeout: 90s

anonymous:
  servers: [echo]
  principal: anonymous
  tenant: default
`

func TestParseExample(t *testing.T) {
	t.Parallel()
	f, err := config.Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	want := []*registryv1.Server{
		{
			Name:      "echo",
			Transport: registryv1.Transport_TRANSPORT_STDIO,
			Command:   []string{"go", "run", "./examples/servers/echo"},
			Env:       map[string]string{"LOG_LEVEL": "debug"},
			Dir:       ".",
			Tenants:   []string{"default"},
		},
		{
			Name:        "search",
			Transport:   registryv1.Transport_TRANSPORT_STREAMABLE_HTTP,
			Url:         "https://mcp.internal.example/mcp",
			Tenants:     []string{"default", "research"},
			CallTimeout: durationpb.New(90 * time.Second),
			Position:    1,
		},
	}
	if len(f.Servers) != len(want) {
		t.Fatalf("got %d servers, want %d", len(f.Servers), len(want))
	}
	for i := range want {
		if !proto.Equal(f.Servers[i], want[i]) {
			t.Errorf("servers[%d] = %v, want %v", i, f.Servers[i], want[i])
		}
	}
	if got := f.Anonymous; len(got.Servers) != 1 || got.Servers[0] != "echo" || got.Principal != "anonymous" || got.Tenant != "default" {
		t.Errorf("anonymous = %+v", got)
	}
	servers, err := config.ParseConfig([]byte(example))
	if err != nil || len(servers) != 2 {
		t.Fatalf("ParseConfig: %v, %v", servers, err)
	}
}

func TestParseServersOnly(t *testing.T) {
	t.Parallel()
	for _, data := range []string{"servers: []\n", "servers:\n"} {
		f, err := config.Parse([]byte(data))
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if len(f.Servers) != 0 || len(f.Anonymous.Servers) != 0 {
			t.Fatalf("%q: %+v", data, f)
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	stdio := func(name string) string {
		return fmt.Sprintf("  - name: %s\n    transport: stdio\n    command: [x]\n", name)
	}
	var many strings.Builder
	many.WriteString("servers:\n")
	for i := range config.MaxServers + 1 {
		many.WriteString(stdio(fmt.Sprintf("s%d", i)))
	}
	tests := []struct {
		name, data, want string
	}{
		{"empty", "", "empty"},
		{"unknown top-level key", "servers: []\nserver: []\n", "field server not found"},
		{"unknown server key", "servers:\n  - name: a\n    transport: stdio\n    commnd: [x]\n", "field commnd not found"},
		{"unknown anonymous key", "servers: []\nanonymous:\n  tenants: [x]\n", "field tenants not found"},
		{"bad yaml", "servers: [\n", "parse config"},
		{"tab indentation", "servers:\n\t- name: a\n", "parse config"},
		{"not a mapping", "- a\n- b\n", "parse config"},
		{"duplicate key", "servers: []\nservers: []\n", "already defined"},
		{"two documents", "servers: []\n---\nservers: []\n", "more than one YAML document"},
		{"command as a string", "servers:\n  - name: a\n    transport: stdio\n    command: go run x\n", "parse config"},
		{"too large", "servers: []\n#" + strings.Repeat("x", config.MaxFileBytes), "limit"},
		{"too many servers", many.String(), "limit of 100"},
		{"duplicate server", "servers:\n" + stdio("a") + stdio("a"), "listed twice"},
		{"no transport", "servers:\n  - name: a\n    command: [x]\n", `server "a": transport: required`},
		{"unknown transport", "servers:\n  - name: a\n    transport: grpc\n", `"grpc" is not stdio or http`},
		{"invalid server", "servers:\n  - name: a\n    transport: stdio\n", `server "a": command: required`},
		{"anonymous unknown server", "servers:\n" + stdio("a") + "anonymous:\n  servers: [b]\n", `"b" is not a listed server`},
		{"anonymous bad principal", "servers:\n" + stdio("a") + "anonymous:\n  principal: 'a b'\n", "anonymous.principal"},
		{"timeout not a duration", "servers:\n" + stdio("a") + "    timeout: 30\n", `server "a": timeout: "30" is not a duration`},
		{"timeout zero", "servers:\n" + stdio("a") + "    timeout: 0s\n", `server "a": timeout: 0s: want more than 0`},
		{"timeout negative", "servers:\n" + stdio("a") + "    timeout: -5s\n", `server "a": timeout: -5s: want more than 0`},
		{"timeout over an hour", "servers:\n" + stdio("a") + "    timeout: 61m\n", `server "a": timeout: 1h1m0s: want more than 0 and at most 1h0m0s`},
		{"anonymous bad tenant", "servers:\n" + stdio("a") + "anonymous:\n  tenant: 'x/y'\n", "anonymous.tenant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.ParseConfig([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	stdio := func(mod func(*registryv1.Server)) *registryv1.Server {
		s := &registryv1.Server{
			Name:      "echo",
			Transport: registryv1.Transport_TRANSPORT_STDIO,
			Command:   []string{"echo-server", "--flag"},
			Env:       map[string]string{"LOG_LEVEL": "debug", "_X1": ""},
			Dir:       "/srv",
			Tenants:   []string{"default", "team.a@example-1"},
		}
		if mod != nil {
			mod(s)
		}
		return s
	}
	http := func(mod func(*registryv1.Server)) *registryv1.Server {
		s := &registryv1.Server{
			Name:      "web-1.x_y",
			Transport: registryv1.Transport_TRANSPORT_STREAMABLE_HTTP,
			Url:       "https://[::1]:8443/mcp",
			Tenants:   []string{"default"},
		}
		if mod != nil {
			mod(s)
		}
		return s
	}
	for _, s := range []*registryv1.Server{
		stdio(nil), http(nil),
		stdio(func(s *registryv1.Server) { s.Env, s.Dir, s.Tenants = nil, "", nil }),
		http(func(s *registryv1.Server) { s.CallTimeout = durationpb.New(config.MaxCallTimeout) }),
		stdio(func(s *registryv1.Server) { s.CallTimeout = durationpb.New(time.Nanosecond) }),
	} {
		if err := config.Validate(s); err != nil {
			t.Errorf("Validate(%v) = %v, want nil", s, err)
		}
	}
	many := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "x"
		}
		return out
	}
	tests := []struct {
		name   string
		server *registryv1.Server
		field  string
	}{
		{"nil", nil, "server"},
		{"empty name", stdio(func(s *registryv1.Server) { s.Name = "" }), "name"},
		{"uppercase name", stdio(func(s *registryv1.Server) { s.Name = "Echo" }), "name"},
		{"name starting with a dash", stdio(func(s *registryv1.Server) { s.Name = "-echo" }), "name"},
		{"name with a slash", stdio(func(s *registryv1.Server) { s.Name = "a/b" }), "name"},
		{"name too long", stdio(func(s *registryv1.Server) { s.Name = strings.Repeat("a", 64) }), "name"},
		{"no transport", stdio(func(s *registryv1.Server) { s.Transport = registryv1.Transport_TRANSPORT_UNSPECIFIED }), "transport"},
		{"unknown transport", stdio(func(s *registryv1.Server) { s.Transport = 99 }), "transport"},
		{"stdio without command", stdio(func(s *registryv1.Server) { s.Command = nil }), "command"},
		{"stdio with empty program", stdio(func(s *registryv1.Server) { s.Command = []string{"", "x"} }), "command[0]"},
		{"stdio argument with NUL", stdio(func(s *registryv1.Server) { s.Command = []string{"x", "a\x00b"} }), "command[1]"},
		{"stdio argument too long", stdio(func(s *registryv1.Server) { s.Command = []string{"x", strings.Repeat("a", 4097)} }), "command[1]"},
		{"stdio too many arguments", stdio(func(s *registryv1.Server) { s.Command = many(257) }), "command"},
		{"stdio with url", stdio(func(s *registryv1.Server) { s.Url = "http://127.0.0.1/mcp" }), "url"},
		{"env key starting with a digit", stdio(func(s *registryv1.Server) { s.Env = map[string]string{"1A": "x"} }), "env"},
		{"env key with a dash", stdio(func(s *registryv1.Server) { s.Env = map[string]string{"A-B": "x"} }), "env"},
		{"env key with =", stdio(func(s *registryv1.Server) { s.Env = map[string]string{"A=B": "x"} }), "env"},
		{"empty env key", stdio(func(s *registryv1.Server) { s.Env = map[string]string{"": "x"} }), "env"},
		{"env value with NUL", stdio(func(s *registryv1.Server) { s.Env = map[string]string{"A": "x\x00"} }), "env"},
		{"dir with NUL", stdio(func(s *registryv1.Server) { s.Dir = "/a\x00" }), "dir"},
		{"http without url", http(func(s *registryv1.Server) { s.Url = "" }), "url"},
		{"http relative url", http(func(s *registryv1.Server) { s.Url = "/mcp" }), "url"},
		{"http url without scheme", http(func(s *registryv1.Server) { s.Url = "127.0.0.1:8080/mcp" }), "url"},
		{"http ftp url", http(func(s *registryv1.Server) { s.Url = "ftp://example.com/mcp" }), "url"},
		{"http url without host", http(func(s *registryv1.Server) { s.Url = "http:///mcp" }), "url"},
		{"http url with credentials", http(func(s *registryv1.Server) { s.Url = "https://user:pw@example.com/mcp" }), "url"},
		{"http url unparsable", http(func(s *registryv1.Server) { s.Url = "http://[::1/mcp" }), "url"},
		{"http url too long", http(func(s *registryv1.Server) { s.Url = "https://example.com/" + strings.Repeat("a", 2048) }), "url"},
		{"http with command", http(func(s *registryv1.Server) { s.Command = []string{"x"} }), "command"},
		{"http with env", http(func(s *registryv1.Server) { s.Env = map[string]string{"A": "b"} }), "env"},
		{"http with dir", http(func(s *registryv1.Server) { s.Dir = "/srv" }), "dir"},
		{"empty tenant", stdio(func(s *registryv1.Server) { s.Tenants = []string{"default", ""} }), "tenants[1]"},
		{"tenant with a space", http(func(s *registryv1.Server) { s.Tenants = []string{"a b"} }), "tenants[0]"},
		{"tenant too long", http(func(s *registryv1.Server) { s.Tenants = []string{strings.Repeat("t", 129)} }), "tenants[0]"},
		{"zero call timeout", http(func(s *registryv1.Server) { s.CallTimeout = durationpb.New(0) }), "timeout"},
		{"negative call timeout", stdio(func(s *registryv1.Server) { s.CallTimeout = durationpb.New(-time.Second) }), "timeout"},
		{"call timeout over an hour", http(func(s *registryv1.Server) { s.CallTimeout = durationpb.New(config.MaxCallTimeout + time.Nanosecond) }), "timeout"},
		{"call timeout out of range", http(func(s *registryv1.Server) { s.CallTimeout = &durationpb.Duration{Seconds: 1, Nanos: -1} }), "timeout"},
		{"too many tenants", http(func(s *registryv1.Server) { s.Tenants = many(257) }), "tenants"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := config.Validate(tt.server)
			var ve *config.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want a *ValidationError", err)
			}
			if ve.Field != tt.field {
				t.Fatalf("field %q (%v), want %q", ve.Field, err, tt.field)
			}
			if tt.server != nil && !strings.Contains(err.Error(), fmt.Sprintf("server %q", tt.server.GetName())) {
				t.Fatalf("error %q does not name the server", err)
			}
		})
	}
}

// FuzzParse checks that no input panics the parser and that whatever it accepts is valid.
func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("servers: []\n"))
	f.Add([]byte("servers:\n  - name: a\n    transport: http\n    url: http://x/\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("servers: [{name: x, transport: stdio, command: [\"\"]}]"))
	f.Add([]byte("servers:\n  - name: a\n    transport: http\n    url: http://x/\n    identity:\n      mode: gateway-jwt\n      ttl: 1m\n      scheme: \"\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := config.Parse(data)
		if err != nil {
			return
		}
		for _, s := range file.Servers {
			if err := config.Validate(s); err != nil {
				t.Fatalf("Parse accepted an invalid server: %v", err)
			}
		}
	})
}

func TestPrefixes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, wantErr string
		want                []string // the servers' effective prefixes
	}{
		{name: "defaults to the name", yaml: "servers:\n- {name: a, transport: http, url: 'http://127.0.0.1:1/mcp'}\n- {name: b, transport: http, url: 'http://127.0.0.1:2/mcp'}\n", want: []string{"a", "b"}},
		{name: "own and none", yaml: "servers:\n- {name: a, transport: http, url: 'http://127.0.0.1:1/mcp', prefix: x}\n- {name: b, transport: http, url: 'http://127.0.0.1:2/mcp', prefix: ''}\n", want: []string{"x", ""}},
		{name: "two without", yaml: "servers:\n- {name: a, transport: http, url: 'http://127.0.0.1:1/mcp', prefix: ''}\n- {name: b, transport: http, url: 'http://127.0.0.1:2/mcp', prefix: ''}\n", wantErr: "at most one server may have none"},
		{name: "same prefix", yaml: "servers:\n- {name: a, transport: http, url: 'http://127.0.0.1:1/mcp', prefix: p}\n- {name: b, transport: http, url: 'http://127.0.0.1:2/mcp', prefix: p}\n", wantErr: "collides"},
		{name: "one begins the other", yaml: "servers:\n- {name: a, transport: http, url: 'http://127.0.0.1:1/mcp'}\n- {name: z, transport: http, url: 'http://127.0.0.1:2/mcp', prefix: a__b}\n- {name: m, transport: http, url: 'http://127.0.0.1:3/mcp'}\n", wantErr: `"a__b" collides with server "a"`},
		{name: "underscore names", yaml: "servers:\n- {name: a, transport: http, url: 'http://127.0.0.1:1/mcp'}\n- {name: a_, transport: http, url: 'http://127.0.0.1:2/mcp'}\n", wantErr: "collides"},
		{name: "bad prefix", yaml: "servers:\n- {name: a, transport: http, url: 'http://127.0.0.1:1/mcp', prefix: 'A B'}\n", wantErr: "prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := config.Parse([]byte(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse: err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range f.Servers {
				got = append(got, catalog.Prefix(s))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("prefixes %q, want %q", got, tt.want)
			}
		})
	}
}

// TestParseRegistryFields: owner, revisions, capabilities, instructions and pin are read,
// and each is refused when malformed or over its bound.
func TestParseRegistryFields(t *testing.T) {
	t.Parallel()
	const head = "servers:\n  - name: gh\n    transport: http\n    url: https://gh.example/mcp\n"
	f, err := config.Parse([]byte(head + `    owner: platform-team
    revisions: ["2025-06-18", "2025-03-26"]
    capabilities:
      tools: {listChanged: true}
      resources: {subscribe: true}
      logging: {}
    instructions: Use the search tool first.
    pin: true
`))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Servers[0]
	c := s.GetCapabilities()
	if s.GetOwner() != "platform-team" || len(s.GetRevisions()) != 2 || !s.GetPin() || s.GetInstructions() != "Use the search tool first." ||
		!c.GetTools() || !c.GetToolsListChanged() || !c.GetResources() || !c.GetResourcesSubscribe() || c.GetResourcesListChanged() || !c.GetLogging() || c.GetPrompts() || c.GetCompletions() {
		t.Fatalf("parsed %v", s)
	}
	for name, extra := range map[string]string{
		"revision not a date":  "    revisions: [latest]\n",
		"revision twice":       "    revisions: [2025-06-18, 2025-06-18]\n",
		"too many revisions":   "    revisions: [" + strings.TrimSuffix(strings.Repeat("2025-01-01, ", 17), ", ") + "]\n",
		"unknown capability":   "    capabilities: {sampling: {}}\n",
		"unknown sub-key":      "    capabilities: {tools: {subscribe: true}}\n",
		"owner too long":       "    owner: " + strings.Repeat("o", config.MaxOwnerBytes+1) + "\n",
		"instructions too big": "    instructions: " + strings.Repeat("i", config.MaxInstructionsBytes+1) + "\n",
		"pin not a bool":       "    pin: sometimes\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := config.Parse([]byte(head + extra)); err == nil {
				t.Fatalf("accepted %q", extra)
			}
		})
	}
}
