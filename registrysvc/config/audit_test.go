package config_test

import (
	"fmt"
	"strings"
	"testing"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
	"google.golang.org/protobuf/proto"
)

func TestParseAudit(t *testing.T) {
	t.Parallel()
	const head = "servers:\n  - name: a\n    transport: stdio\n    command: [x]\n"
	const (
		digest   = registryv1.ArgumentsMode_ARGUMENTS_MODE_DIGEST
		redacted = registryv1.ArgumentsMode_ARGUMENTS_MODE_REDACTED
		full     = registryv1.ArgumentsMode_ARGUMENTS_MODE_FULL
	)
	tests := []struct {
		name, yaml string
		want       *registryv1.AuditSettings
	}{
		{"absent", "", nil},
		{"redacted", `    audit: {arguments: redacted, redact: ["$.password", "$.items[*].token", "$.*"]}` + "\n",
			&registryv1.AuditSettings{Arguments: redacted, Redact: []string{"$.password", "$.items[*].token", "$.*"}}},
		{"full", "    audit: {arguments: full}\n", &registryv1.AuditSettings{Arguments: full}},
		{"redacted without paths", "    audit: {arguments: redacted}\n", &registryv1.AuditSettings{Arguments: redacted}},
		{"per tool", "    audit:\n      arguments: digest\n      tools:\n        login: {arguments: redacted, redact: [$.password]}\n        search: {arguments: full}\n",
			&registryv1.AuditSettings{Arguments: digest, Tools: map[string]*registryv1.ToolAuditSettings{
				"login": {Arguments: redacted, Redact: []string{"$.password"}}, "search": {Arguments: full}}}},
		{"server paths for a tool's redacted mode", "    audit:\n      redact: [$.token]\n      tools: {login: {arguments: redacted}}\n",
			&registryv1.AuditSettings{Redact: []string{"$.token"}, Tools: map[string]*registryv1.ToolAuditSettings{"login": {Arguments: redacted}}}},
		{"tool adds paths to the server's", "    audit:\n      arguments: redacted\n      redact: [$.a]\n      tools: {t: {redact: [$.b]}}\n",
			&registryv1.AuditSettings{Arguments: redacted, Redact: []string{"$.a"}, Tools: map[string]*registryv1.ToolAuditSettings{"t": {Redact: []string{"$.b"}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			servers, err := config.ParseConfig([]byte(head + tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := servers[0].GetAudit(); !proto.Equal(got, tt.want) {
				t.Fatalf("audit = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseAuditErrors(t *testing.T) {
	t.Parallel()
	const head = "servers:\n  - name: a\n    transport: stdio\n    command: [x]\n    audit: "
	paths := func(n int) string {
		p := make([]string, n)
		for i := range p {
			p[i] = fmt.Sprintf("$.p%d", i)
		}
		return "[" + strings.Join(p, ", ") + "]"
	}
	manyTools := "{arguments: full, tools: {"
	for i := range config.MaxAuditTools + 1 {
		manyTools += fmt.Sprintf("t%d: {arguments: digest}, ", i)
	}
	manyTools += "}}"
	tests := []struct{ name, yaml, want string }{
		{"unknown key", "{argument: full}", "field argument not found"},
		{"unknown tool key", "{tools: {t: {mode: full}}}", "field mode not found"},
		{"unknown mode", "{arguments: all}", `server "a": audit.arguments: "all" is not digest, redacted or full`},
		{"mode case", "{arguments: Full}", `"Full" is not digest, redacted or full`},
		{"unknown tool mode", "{tools: {t: {arguments: some}}}", `audit.tools["t"].arguments: "some" is not`},
		{"redact without redacted", "{arguments: full, redact: [$.a]}", "audit.redact: needs arguments: redacted"},
		{"redact with digest only", "{redact: [$.a]}", "audit.redact: needs arguments: redacted"},
		{"bad path", "{arguments: redacted, redact: [password]}", `audit.redact: [0] "password": want a path starting with "$"`},
		{"index path", "{arguments: redacted, redact: [\"$.a[0]\"]}", "want .name, .* or [*]"},
		{"too deep", "{arguments: redacted, redact: [$" + strings.Repeat(".a", 17) + "]}", "more than 16 segments"},
		{"too many paths", "{arguments: redacted, redact: " + paths(33) + "}", "33 paths, more than the limit of 32"},
		{"too many with the tool's", "{arguments: redacted, redact: " + paths(20) + ", tools: {t: {redact: " + paths(13) + "}}}", `audit.tools["t"].redact: with the server's paths: 33 paths`},
		{"empty tool entry", "{arguments: full, tools: {t: {}}}", `audit.tools["t"]: says nothing`},
		{"tool redact under full", "{arguments: full, tools: {t: {redact: [$.a]}}}", `audit.tools["t"].redact: needs arguments: redacted`},
		{"tool redact under its own full", "{arguments: redacted, tools: {t: {arguments: full, redact: [$.a]}}}", `audit.tools["t"].redact: needs arguments: redacted`},
		{"empty tool name", `{tools: {"": {arguments: full}}}`, `audit.tools[""]: want a tool or prompt name`},
		{"long tool name", "{tools: {" + strings.Repeat("t", 257) + ": {arguments: full}}}", "want a tool or prompt name of 1 to 256 bytes"},
		{"too many tools", manyTools, "257 tools, more than the limit of 256"},
		{"not a mapping", "full", "parse config"},
		{"paths not a list", "{arguments: redacted, redact: $.a}", "parse config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.ParseConfig([]byte(head + tt.yaml + "\n"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// Validate judges the message too: settings that reach the registry without the YAML (an
// import, a stored server) meet the same rules.
func TestValidateAuditMessage(t *testing.T) {
	t.Parallel()
	base := func(a *registryv1.AuditSettings) *registryv1.Server {
		return &registryv1.Server{Name: "a", Transport: registryv1.Transport_TRANSPORT_STDIO, Command: []string{"x"}, Audit: a}
	}
	if err := config.Validate(base(&registryv1.AuditSettings{Arguments: 9})); err == nil || !strings.Contains(err.Error(), "unknown mode 9") {
		t.Fatalf("unknown mode: err = %v", err)
	}
	if err := config.Validate(base(&registryv1.AuditSettings{Tools: map[string]*registryv1.ToolAuditSettings{"t": {Arguments: -1}}})); err == nil || !strings.Contains(err.Error(), "unknown mode -1") {
		t.Fatalf("unknown tool mode: err = %v", err)
	}
	if err := config.Validate(base(&registryv1.AuditSettings{Tools: map[string]*registryv1.ToolAuditSettings{"\xff": {Arguments: 1}}})); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("invalid tool name: err = %v", err)
	}
	if err := config.Validate(base(&registryv1.AuditSettings{Arguments: registryv1.ArgumentsMode_ARGUMENTS_MODE_REDACTED, Redact: []string{"$.a"}})); err != nil {
		t.Fatalf("valid: %v", err)
	}
}
