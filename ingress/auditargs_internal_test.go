package ingress

import (
	"strings"
	"testing"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
)

func TestKeptArguments(t *testing.T) {
	t.Parallel()
	const (
		digest   = registryv1.ArgumentsMode_ARGUMENTS_MODE_DIGEST
		redacted = registryv1.ArgumentsMode_ARGUMENTS_MODE_REDACTED
		full     = registryv1.ArgumentsMode_ARGUMENTS_MODE_FULL
	)
	login := `{"user":"a","password":"p"}`
	perTool := &registryv1.AuditSettings{Arguments: redacted, Redact: []string{"$.password"}, Tools: map[string]*registryv1.ToolAuditSettings{
		"search": {Arguments: full},
		"deploy": {Redact: []string{"$.token"}},
		"ping":   {Arguments: digest},
	}}
	// Quotes count twice once the record escapes them: under the bound raw, over it escaped.
	quoted := `{"q":"` + strings.Repeat(`\"`, maxStoredArguments/2-8) + `"}`
	if len(quoted) > maxStoredArguments || escapedLen([]byte(quoted)) <= maxStoredArguments {
		t.Fatalf("test input: %d bytes, %d escaped", len(quoted), escapedLen([]byte(quoted)))
	}
	big := `{"file":"` + strings.Repeat("x", maxStoredArguments) + `","user":"a"}`
	tests := []struct {
		name     string
		audit    *registryv1.AuditSettings
		tool     string
		args     string
		wantArgs string
		wantForm string
	}{
		{"unset mode", &registryv1.AuditSettings{}, "t", login, "", ""},
		{"digest", &registryv1.AuditSettings{Arguments: digest}, "t", login, "", ""},
		{"full", &registryv1.AuditSettings{Arguments: full}, "t", login, login, "full"},
		{"redacted", &registryv1.AuditSettings{Arguments: redacted, Redact: []string{"$.password"}}, "t", login, `{"user":"a","password":"[redacted]"}`, "redacted"},
		{"redacted, absent path", &registryv1.AuditSettings{Arguments: redacted, Redact: []string{"$.token"}}, "t", login, login, "redacted"},
		{"redacted, non-object arguments", &registryv1.AuditSettings{Arguments: redacted, Redact: []string{"$.password"}}, "t", `["password"]`, `["password"]`, "redacted"},
		{"no arguments", &registryv1.AuditSettings{Arguments: full}, "t", "", "", ""},
		{"tool's mode", perTool, "search", login, login, "full"},
		{"tool's paths added to the server's", perTool, "deploy", `{"password":1,"token":2,"x":3}`, `{"password":"[redacted]","token":"[redacted]","x":3}`, "redacted"},
		{"tool's digest", perTool, "ping", login, "", ""},
		{"another tool takes the server's", perTool, "other", login, `{"user":"a","password":"[redacted]"}`, "redacted"},
		{"full over the bound", &registryv1.AuditSettings{Arguments: full}, "t", big, "", "full"},
		{"full over the bound once escaped", &registryv1.AuditSettings{Arguments: full}, "t", quoted, "", "full"},
		{"redacted over the bound", &registryv1.AuditSettings{Arguments: redacted, Redact: []string{"$.user"}}, "t", big, "", "redacted"},
		{"redacted under the bound once masked", &registryv1.AuditSettings{Arguments: redacted, Redact: []string{"$.file"}}, "t", big, `{"file":"[redacted]","user":"a"}`, "redacted"},
		{"redacted, malformed arguments", &registryv1.AuditSettings{Arguments: redacted, Redact: []string{"$.a"}}, "t", `{"a":`, "", "redacted"},
		{"full, invalid UTF-8", &registryv1.AuditSettings{Arguments: full}, "t", "{\"a\":\"\xff\"}", "", "full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args, form := keptArguments(tt.audit, tt.tool, []byte(tt.args))
			if args != tt.wantArgs || form != tt.wantForm {
				t.Fatalf("keptArguments = %.80q, %q; want %.80q, %q", args, form, tt.wantArgs, tt.wantForm)
			}
		})
	}
}

// Every append to the server's paths is a copy: a call of one tool cannot add its paths to
// the server's settings, which the catalogue shares between calls.
func TestKeptArgumentsLeavesSettings(t *testing.T) {
	t.Parallel()
	server := make([]string, 1, 4)
	server[0] = "$.a"
	a := &registryv1.AuditSettings{Arguments: registryv1.ArgumentsMode_ARGUMENTS_MODE_REDACTED, Redact: server,
		Tools: map[string]*registryv1.ToolAuditSettings{"t": {Redact: []string{"$.b"}}}}
	keptArguments(a, "t", []byte(`{"b":1}`))
	if got, _ := keptArguments(a, "u", []byte(`{"b":1}`)); got != `{"b":1}` {
		t.Fatalf("tool u: %s, want $.b unmasked", got)
	}
	if len(a.GetRedact()) != 1 || server[:2][1] != "" {
		t.Fatalf("server paths changed: %v", server[:2])
	}
}
