package config

import (
	"fmt"
	"sort"
	"unicode/utf8"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonredact"
)

// Bounds of a server's audit settings: a few tools singled out, not the whole catalogue.
const (
	MaxAuditTools        = 256
	maxAuditToolKeyBytes = 256
)

// Argument modes in the file.
const (
	ArgumentsDigest   = "digest"
	ArgumentsRedacted = "redacted"
	ArgumentsFull     = "full"
)

// auditYAML is a server's `audit:` entry: what its records keep of arguments beyond the
// digest, `audit: {arguments: redacted, redact: ["$.password"], tools: {login: {arguments:
// full}}}`.
type auditYAML struct {
	Arguments string                   `yaml:"arguments"`
	Redact    []string                 `yaml:"redact"`
	Tools     map[string]toolAuditYAML `yaml:"tools"`
}

type toolAuditYAML struct {
	Arguments string   `yaml:"arguments"`
	Redact    []string `yaml:"redact"`
}

// audit turns the YAML form into the registry's message; validateAudit judges the result.
func (a *auditYAML) audit(server string) (*registryv1.AuditSettings, error) {
	mode, err := argumentsMode(server, "audit.arguments", a.Arguments)
	if err != nil {
		return nil, err
	}
	out := &registryv1.AuditSettings{Arguments: mode, Redact: a.Redact}
	if len(a.Tools) > 0 {
		out.Tools = make(map[string]*registryv1.ToolAuditSettings, len(a.Tools))
	}
	for name, t := range a.Tools {
		mode, err := argumentsMode(server, fmt.Sprintf("audit.tools[%.60q].arguments", name), t.Arguments)
		if err != nil {
			return nil, err
		}
		out.Tools[name] = &registryv1.ToolAuditSettings{Arguments: mode, Redact: t.Redact}
	}
	return out, nil
}

func argumentsMode(server, field, s string) (registryv1.ArgumentsMode, error) {
	switch s {
	case "":
		return registryv1.ArgumentsMode_ARGUMENTS_MODE_UNSPECIFIED, nil
	case ArgumentsDigest:
		return registryv1.ArgumentsMode_ARGUMENTS_MODE_DIGEST, nil
	case ArgumentsRedacted:
		return registryv1.ArgumentsMode_ARGUMENTS_MODE_REDACTED, nil
	case ArgumentsFull:
		return registryv1.ArgumentsMode_ARGUMENTS_MODE_FULL, nil
	}
	return 0, &ValidationError{Server: server, Field: field, Problem: fmt.Sprintf("%.40q is not digest, redacted or full", s)}
}

// validateAudit checks a server's audit settings: known modes; redact paths only where the
// mode (the tool's, else the server's) is redacted, each compiling (jsonredact: at most 32
// paths of at most 16 segments); at most MaxAuditTools tool entries, each named (UTF-8, at
// most 256 bytes) and saying something. An imported server's settings come from the
// registry's store, so the message is judged, not only the YAML.
func validateAudit(a *registryv1.AuditSettings, bad func(string, string, ...any) error) error {
	if a == nil {
		return nil
	}
	if err := checkMode(a.GetArguments()); err != nil {
		return bad("audit.arguments", "%v", err)
	}
	serverMode := a.GetArguments()
	redacted := serverMode == registryv1.ArgumentsMode_ARGUMENTS_MODE_REDACTED
	for _, t := range a.GetTools() {
		redacted = redacted || t.GetArguments() == registryv1.ArgumentsMode_ARGUMENTS_MODE_REDACTED
	}
	if len(a.GetRedact()) > 0 && !redacted {
		return bad("audit.redact", "needs arguments: redacted, the server's or a tool's (the paths would mask nothing)")
	}
	if _, err := jsonredact.Compile(a.GetRedact()); err != nil {
		return bad("audit.redact", "%v", err)
	}
	if len(a.GetTools()) > MaxAuditTools {
		return bad("audit.tools", "%d tools, more than the limit of %d", len(a.GetTools()), MaxAuditTools)
	}
	// Sorted, so that the first problem reported is the same on every load.
	names := make([]string, 0, len(a.GetTools()))
	for name := range a.GetTools() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t := a.GetTools()[name]
		field := fmt.Sprintf("audit.tools[%.60q]", name)
		if name == "" || len(name) > maxAuditToolKeyBytes || !utf8.ValidString(name) {
			return bad(field, "want a tool or prompt name of 1 to %d bytes of UTF-8", maxAuditToolKeyBytes)
		}
		if err := checkMode(t.GetArguments()); err != nil {
			return bad(field+".arguments", "%v", err)
		}
		if t.GetArguments() == registryv1.ArgumentsMode_ARGUMENTS_MODE_UNSPECIFIED && len(t.GetRedact()) == 0 {
			return bad(field, "says nothing: give arguments or redact")
		}
		mode := t.GetArguments()
		if mode == registryv1.ArgumentsMode_ARGUMENTS_MODE_UNSPECIFIED {
			mode = serverMode
		}
		if len(t.GetRedact()) > 0 && mode != registryv1.ArgumentsMode_ARGUMENTS_MODE_REDACTED {
			return bad(field+".redact", "needs arguments: redacted, the tool's or the server's (the paths would mask nothing)")
		}
		// The server's paths apply too: together they are within the bound.
		if _, err := jsonredact.Compile(append(append([]string{}, a.GetRedact()...), t.GetRedact()...)); err != nil {
			return bad(field+".redact", "with the server's paths: %v", err)
		}
	}
	return nil
}

func checkMode(m registryv1.ArgumentsMode) error {
	if _, ok := registryv1.ArgumentsMode_name[int32(m)]; !ok {
		return fmt.Errorf("unknown mode %d", m)
	}
	return nil
}
