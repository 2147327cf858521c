package ingress

import (
	"bytes"
	"unicode/utf8"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonredact"
)

// Stored arguments. Every audit record keeps the SHA-256 of a call's arguments; a server
// whose registry entry says `audit: {arguments: redacted | full}` (for all its tools, or per
// tool or prompt) has its tools/call and prompts/get records keep the arguments too: as sent,
// or with the values at its redact paths replaced by "[redacted]". They are kept by the
// record policy decided on (the decision record of an allowed call, the one record of a
// refused one), not repeated in the outcome record, which shares its call_id.
//
// What is stored is bounded by maxStoredArguments as the record encodes it (quotes and
// backslashes escaped): auditsvc refuses a record over 64 KiB, and a refused decision record
// refuses the call, which the arguments' size must never do. Arguments over the bound are
// kept as the digest only, and the record says so: arguments_form is set and arguments
// empty. A server without the setting costs a catalogue lookup and a nil check per call.

// maxStoredArguments bounds stored arguments, escaped as in the record (auditsvc's
// maxArgumentsBytes).
const maxStoredArguments = 16 << 10

// The record's arguments_form values (auditsvc.ArgumentsRedacted, ArgumentsFull).
const (
	formRedacted = "redacted"
	formFull     = "full"
)

// storedArguments is what c's audit record keeps of its arguments besides the digest, and
// in which form; both empty for the digest only.
func (s *Service) storedArguments(c *call) (arguments, form string) {
	if c.msg.Method != toolsCall && c.msg.Method != "prompts/get" {
		return "", ""
	}
	srv, ok := s.deps.Catalog.Server(c.server)
	if !ok || srv.GetAudit() == nil {
		return "", ""
	}
	return keptArguments(srv.GetAudit(), c.msg.Name, c.msg.Arguments)
}

// keptArguments applies a server's audit settings to the arguments of a call of name: the
// tool's entry, when it has one, overrides the server's mode and adds its paths to the
// server's.
func keptArguments(a *registryv1.AuditSettings, name string, args []byte) (arguments, form string) {
	mode, paths := a.GetArguments(), a.GetRedact()
	if t := a.GetTools()[name]; t != nil {
		if t.GetArguments() != registryv1.ArgumentsMode_ARGUMENTS_MODE_UNSPECIFIED {
			mode = t.GetArguments()
		}
		if len(t.GetRedact()) > 0 {
			paths = append(append(make([]string, 0, len(paths)+len(t.GetRedact())), paths...), t.GetRedact()...)
		}
	}
	switch mode {
	case registryv1.ArgumentsMode_ARGUMENTS_MODE_FULL:
		form = formFull
	case registryv1.ArgumentsMode_ARGUMENTS_MODE_REDACTED:
		form = formRedacted
	default:
		return "", ""
	}
	if len(args) == 0 {
		return "", "" // none sent: nothing to keep, and the digest is empty too
	}
	if form == formRedacted {
		// The registry validated the paths; compiling them here (a few small allocations,
		// only for servers that asked) keeps the catalogue free of derived state.
		p, err := jsonredact.Compile(paths)
		if err != nil {
			return "", form
		}
		if args, err = p.Redact(args, maxStoredArguments); err != nil {
			return "", form // over the bound once masked, or not JSON: the digest only
		}
	}
	if escapedLen(args) > maxStoredArguments || !utf8.Valid(args) {
		return "", form
	}
	return string(args), form
}

// escapedLen is the length of b as a JSON string's contents: the arguments are valid JSON,
// so their only bytes to escape are quotes and backslashes (control characters appear only
// escaped already).
func escapedLen(b []byte) int {
	return len(b) + bytes.Count(b, []byte{'"'}) + bytes.Count(b, []byte{'\\'})
}
