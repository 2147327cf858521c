package serverjson_test

import (
	"slices"
	"strings"
	"testing"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/serverjson"
)

var any1 = serverjson.Options{Package: -1, Remote: -1, Tenants: []string{"acme"}}

func TestParseGood(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, json string
		opts       serverjson.Options
		check      func(*registryv1.Server) bool
	}{
		{"npm package", `{"$schema":"https://static.modelcontextprotocol.io/schemas/2025-09-29/server.schema.json","name":"io.github.acme/Weather","description":"Weather","version":"1.0.2",
			"repository":{"url":"https://github.com/acme/weather","source":"github"},
			"packages":[{"registryType":"npm","registryBaseUrl":"https://registry.npmjs.org","identifier":"@acme/weather","version":"1.0.2","runtimeHint":"npx","transport":{"type":"stdio"},
				"packageArguments":[{"type":"named","name":"--units","value":"metric"},{"type":"positional","valueHint":"dir","default":"/tmp"},{"type":"named","name":"--verbose"}],
				"environmentVariables":[{"name":"LOG_LEVEL","default":"info"},{"name":"OPTIONAL_THING","description":"x"}]}]}`, any1,
			func(s *registryv1.Server) bool {
				return s.GetName() == "weather" && s.GetPin() && s.GetImported() && s.GetVersion() == "1.0.2" &&
					slices.Equal(s.GetCommand(), []string{"npx", "-y", "@acme/weather@1.0.2", "--units", "metric", "/tmp"}) &&
					s.GetEnv()["LOG_LEVEL"] == "info" && len(s.GetEnv()) == 1 && slices.Equal(s.GetTenants(), []string{"acme"})
			}},
		{"pypi with runtime arguments", `{"name":"io.github.acme/tool","version":"0.3.0","packages":[{"registryType":"pypi","identifier":"acme-tool","version":"0.3.0","transport":{"type":"stdio"},"runtimeArguments":[{"type":"named","name":"--python","value":"3.12"}]}]}`,
			serverjson.Options{Package: -1, Remote: -1, AllowRuntimeArguments: true},
			func(s *registryv1.Server) bool {
				return slices.Equal(s.GetCommand(), []string{"uvx", "--python", "3.12", "acme-tool==0.3.0"})
			}},
		{"oci", `{"name":"io.github.acme/box","version":"2.0.0","packages":[{"registryType":"oci","identifier":"ghcr.io/acme/box","version":"2.0.0","transport":{"type":"stdio"}}]}`, any1,
			func(s *registryv1.Server) bool {
				return slices.Equal(s.GetCommand(), []string{"docker", "run", "-i", "--rm", "ghcr.io/acme/box:2.0.0"})
			}},
		{"remote, chosen, renamed, unpinned", `{"name":"io.github.acme/remote","version":"1.0.0","packages":[{"registryType":"npm","identifier":"x","version":"1.0.0","transport":{"type":"stdio"}}],"remotes":[{"type":"sse","url":"https://a.example/sse"},{"type":"streamable-http","url":"https://a.example/mcp","headers":[{"name":"X-Trace","description":"optional"}]}]}`,
			serverjson.Options{Name: "acme-remote", Package: -1, Remote: 1, NoPin: true},
			func(s *registryv1.Server) bool {
				return s.GetName() == "acme-remote" && !s.GetPin() && s.GetTransport() == registryv1.Transport_TRANSPORT_STREAMABLE_HTTP && s.GetUrl() == "https://a.example/mcp"
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _, err := serverjson.Parse([]byte(tc.json), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(srv) {
				t.Errorf("got %v", srv)
			}
		})
	}
}

// TestParseRefusesLoaderControls: runtime arguments unless allowed, and environment
// variables that change how the runtime loads code, whatever the options.
func TestParseRefusesLoaderControls(t *testing.T) {
	t.Parallel()
	for name, js := range map[string]string{
		"runtime arguments": `{"name":"io.github.acme/t","version":"1.0.0","packages":[{"registryType":"npm","identifier":"@acme/t","version":"1.0.0","transport":{"type":"stdio"},"runtimeArguments":[{"type":"named","name":"--registry","value":"https://evil.example"}]}]}`,
		"NODE_OPTIONS":      `{"name":"io.github.acme/t","version":"1.0.0","packages":[{"registryType":"npm","identifier":"@acme/t","version":"1.0.0","transport":{"type":"stdio"},"environmentVariables":[{"name":"NODE_OPTIONS","value":"--require /tmp/x.js"}]}]}`,
		"LD_PRELOAD":        `{"name":"io.github.acme/t","version":"1.0.0","packages":[{"registryType":"npm","identifier":"@acme/t","version":"1.0.0","transport":{"type":"stdio"},"environmentVariables":[{"name":"LD_PRELOAD","value":"/tmp/x.so"}]}]}`,
	} {
		if _, _, err := serverjson.Parse([]byte(js), serverjson.Options{Package: -1, Remote: -1}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseBad(t *testing.T) {
	t.Parallel()
	const pkg = `{"registryType":"npm","identifier":"@acme/x","version":"1.0.0","transport":{"type":"stdio"}}`
	for _, tc := range []struct{ name, json, want string }{
		{"not json", `{"name":`, "server.json"},
		{"unknown member", `{"name":"a/b","version":"1","packages":[` + pkg + `],"surprise":1}`, "unknown field"},
		{"trailing data", `{"name":"a/b","version":"1","packages":[` + pkg + `]} {}`, "data after"},
		{"no name", `{"version":"1","packages":[` + pkg + `]}`, "name is required"},
		{"no version", `{"name":"a/b","packages":[` + pkg + `]}`, "version is required"},
		{"nothing to run", `{"name":"a/b","version":"1"}`, "no packages and no remotes"},
		{"two ways", `{"name":"a/b","version":"1","packages":[` + pkg + `],"remotes":[{"type":"streamable-http","url":"https://x/mcp"}]}`, "choose one"},
		{"bad derived name", `{"name":"a/Bad Name!","version":"1","packages":[` + pkg + `]}`, "--name"},
		{"deleted", `{"name":"a/b","version":"1","status":"deleted","packages":[` + pkg + `]}`, "only active"},
		{"nuget", `{"name":"a/b","version":"1","packages":[{"registryType":"nuget","identifier":"X","version":"1.0.0","transport":{"type":"stdio"}}]}`, "want npm, pypi or oci"},
		{"http package", `{"name":"a/b","version":"1","packages":[{"registryType":"npm","identifier":"x","version":"1.0.0","transport":{"type":"streamable-http","url":"http://localhost:3000/mcp"}}]}`, "only stdio packages"},
		{"version range", `{"name":"a/b","version":"1","packages":[{"registryType":"npm","identifier":"x","version":"^1.0.0","transport":{"type":"stdio"}}]}`, "exact version"},
		{"latest", `{"name":"a/b","version":"1","packages":[{"registryType":"npm","identifier":"x","version":"latest","transport":{"type":"stdio"}}]}`, "exact version"},
		{"option identifier", `{"name":"a/b","version":"1","packages":[{"registryType":"npm","identifier":"--eval","version":"1.0.0","transport":{"type":"stdio"}}]}`, "not a package name"},
		{"other runtime", `{"name":"a/b","version":"1","packages":[{"registryType":"npm","runtimeHint":"bunx","identifier":"x","version":"1.0.0","transport":{"type":"stdio"}}]}`, "run with npx"},
		{"secret env", `{"name":"a/b","version":"1","packages":[{"registryType":"npm","identifier":"x","version":"1.0.0","transport":{"type":"stdio"},"environmentVariables":[{"name":"API_KEY","isRequired":true,"isSecret":true}]}]}`, "secret"},
		{"required env", `{"name":"a/b","version":"1","packages":[{"registryType":"npm","identifier":"x","version":"1.0.0","transport":{"type":"stdio"},"environmentVariables":[{"name":"REGION","isRequired":true}]}]}`, "required"},
		{"variables", `{"name":"a/b","version":"1","packages":[{"registryType":"npm","identifier":"x","version":"1.0.0","transport":{"type":"stdio"},"packageArguments":[{"type":"positional","value":"{path}"}]}]}`, "variables"},
		{"arg type", `{"name":"a/b","version":"1","packages":[{"registryType":"npm","identifier":"x","version":"1.0.0","transport":{"type":"stdio"},"packageArguments":[{"type":"spread","value":"x"}]}]}`, "want positional or named"},
		{"sse remote", `{"name":"a/b","version":"1","remotes":[{"type":"sse","url":"https://x/sse"}]}`, "sse"},
		{"required header", `{"name":"a/b","version":"1","remotes":[{"type":"streamable-http","url":"https://x/mcp","headers":[{"name":"Authorization","isRequired":true,"isSecret":true}]}]}`, "identity"},
		{"remote url variables", `{"name":"a/b","version":"1","remotes":[{"type":"streamable-http","url":"https://{tenant}.x/mcp"}]}`, "variables"},
		{"bad url", `{"name":"a/b","version":"1","remotes":[{"type":"streamable-http","url":"ftp://x/mcp"}]}`, "url"},
		{"too big", `{"name":"a/b","version":"1","description":"` + strings.Repeat("x", serverjson.MaxBytes) + `"}`, "limit"},
		{"too many packages", `{"name":"a/b","version":"1","packages":[` + strings.Repeat(pkg+",", 32) + pkg + `]}`, "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _, err := serverjson.Parse([]byte(tc.json), any1)
			if err == nil {
				t.Fatalf("Parse accepted it: %v", srv)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"name":"a/b","version":"1","packages":[{"registryType":"npm","identifier":"x","version":"1.0.0","transport":{"type":"stdio"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		srv, _, err := serverjson.Parse(data, any1)
		if err == nil && (srv.GetName() == "" || !srv.GetImported()) {
			t.Fatalf("accepted %q as %v", data, srv)
		}
	})
}
