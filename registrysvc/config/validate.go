package config

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
)

// Limits on one server spec: generous for real servers, small enough that a bad spec cannot
// exhaust the registry, its watchers or the bridge.
const (
	maxArgs        = 256
	maxArgBytes    = 4096
	maxEnv         = 256
	maxEnvKeyBytes = 256
	maxEnvValBytes = 32 << 10
	maxDirBytes    = 4096
	maxURLBytes    = 2048
	maxTenants     = 256
	// MaxOwnerBytes, MaxDescriptionBytes and MaxInstructionsBytes bound the free texts.
	MaxOwnerBytes        = 256
	MaxDescriptionBytes  = 4096
	MaxInstructionsBytes = 16 << 10
	maxRevisions         = 16
	maxVersionBytes      = 64
)

// revisionRE is an MCP protocol revision: a date.
var revisionRE = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`)

// MaxCallTimeout bounds a server's call_timeout: a call held longer is a hung upstream.
const MaxCallTimeout = time.Hour

// ValidationError says which field of which server is wrong, and why.
type ValidationError struct {
	Server  string // the server's name as given (possibly invalid or empty)
	Field   string // e.g. "command[0]", "env", "url"
	Problem string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("server %q: %s: %s", e.Server, e.Field, e.Problem)
}

// Validate checks a server spec: a valid name, a transport, and the launch or connect
// details that transport needs and no others. stdio needs an argv (never run through a
// shell) whose first element is set, and no url; http needs an absolute http or https URL
// without credentials, and no command, env or dir. Env keys are environment variable names;
// tenants are non-empty ids; a call timeout, when set, is more than 0 and at most an hour;
// an upstream identity fits the transport (validateIdentity); a breaker is within its bounds
// (validateBreaker); audit settings are well formed and bounded (validateAudit). It returns a *ValidationError
// for the first problem.
func Validate(s *registryv1.Server) error {
	if s == nil {
		return &ValidationError{Field: "server", Problem: "missing"}
	}
	bad := func(field, format string, args ...any) error {
		return &ValidationError{Server: s.GetName(), Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	if !ident.ValidServerName(s.GetName()) {
		return bad("name", "want [a-z0-9][a-z0-9._-]{0,62}")
	}
	switch s.GetTransport() {
	case registryv1.Transport_TRANSPORT_STDIO:
		if err := validateStdio(s, bad); err != nil {
			return err
		}
	case registryv1.Transport_TRANSPORT_STREAMABLE_HTTP:
		if err := validateHTTP(s, bad); err != nil {
			return err
		}
	case registryv1.Transport_TRANSPORT_UNSPECIFIED:
		return bad("transport", "required: stdio or http")
	default:
		return bad("transport", "unknown transport %d", s.GetTransport())
	}
	if err := validateIdentity(s, bad); err != nil {
		return err
	}
	if ct := s.GetCallTimeout(); ct != nil {
		if err := ct.CheckValid(); err != nil {
			return bad("timeout", "%v", err)
		}
		if d := ct.AsDuration(); d <= 0 || d > MaxCallTimeout {
			return bad("timeout", "%v: want more than 0 and at most %v", d, MaxCallTimeout)
		}
	}
	if err := validateBreaker(s.GetBreaker(), bad); err != nil {
		return err
	}
	if err := validateAudit(s.GetAudit(), bad); err != nil {
		return err
	}
	if p := s.Prefix; p != nil && *p != "" && !ident.ValidServerName(*p) {
		return bad("prefix", "%.70q: want [a-z0-9][a-z0-9._-]{0,62}, or \"\" for none", *p)
	}
	for field, v := range map[string]struct {
		text  string
		limit int
	}{"owner": {s.GetOwner(), MaxOwnerBytes}, "description": {s.GetDescription(), MaxDescriptionBytes}, "instructions": {s.GetInstructions(), MaxInstructionsBytes}, "version": {s.GetVersion(), maxVersionBytes}} {
		if len(v.text) > v.limit {
			return bad(field, "longer than %d bytes", v.limit)
		}
		if !utf8.ValidString(v.text) || strings.ContainsRune(v.text, 0) {
			return bad(field, "not valid UTF-8, or contains a NUL byte")
		}
	}
	if len(s.GetRevisions()) > maxRevisions {
		return bad("revisions", "%d revisions, more than the limit of %d", len(s.GetRevisions()), maxRevisions)
	}
	for i, r := range s.GetRevisions() {
		if !revisionRE.MatchString(r) || slices.Contains(s.GetRevisions()[:i], r) {
			return bad(fmt.Sprintf("revisions[%d]", i), "%.20q: want a protocol revision such as 2025-06-18, each once", r)
		}
	}
	if len(s.GetTenants()) > maxTenants {
		return bad("tenants", "%d tenants, more than the limit of %d", len(s.GetTenants()), maxTenants)
	}
	for i, t := range s.GetTenants() {
		if !ident.ValidID(t) {
			return bad(fmt.Sprintf("tenants[%d]", i), "%q: want 1 to %d of [A-Za-z0-9._@-]", t, ident.MaxIDBytes)
		}
	}
	return nil
}

func validateStdio(s *registryv1.Server, bad func(string, string, ...any) error) error {
	cmd := s.GetCommand()
	if len(cmd) == 0 {
		return bad("command", "required for a stdio server (an argv list, run without a shell)")
	}
	if len(cmd) > maxArgs {
		return bad("command", "%d arguments, more than the limit of %d", len(cmd), maxArgs)
	}
	if cmd[0] == "" {
		return bad("command[0]", "the program must not be empty")
	}
	for i, arg := range cmd {
		if len(arg) > maxArgBytes {
			return bad(fmt.Sprintf("command[%d]", i), "longer than %d bytes", maxArgBytes)
		}
		if strings.ContainsRune(arg, 0) {
			return bad(fmt.Sprintf("command[%d]", i), "contains a NUL byte")
		}
	}
	if s.GetUrl() != "" {
		return bad("url", "not allowed for a stdio server")
	}
	if len(s.GetEnv()) > maxEnv {
		return bad("env", "%d variables, more than the limit of %d", len(s.GetEnv()), maxEnv)
	}
	for k, v := range s.GetEnv() {
		if !validEnvKey(k) {
			return bad("env", "%q is not a variable name ([A-Za-z_][A-Za-z0-9_]*, at most %d bytes)", k, maxEnvKeyBytes)
		}
		if len(v) > maxEnvValBytes || strings.ContainsRune(v, 0) {
			return bad("env", "the value of %s is longer than %d bytes or contains a NUL byte", k, maxEnvValBytes)
		}
	}
	if len(s.GetDir()) > maxDirBytes || strings.ContainsRune(s.GetDir(), 0) {
		return bad("dir", "longer than %d bytes or contains a NUL byte", maxDirBytes)
	}
	return nil
}

func validateHTTP(s *registryv1.Server, bad func(string, string, ...any) error) error {
	raw := s.GetUrl()
	if raw == "" {
		return bad("url", "required for an http server")
	}
	if len(raw) > maxURLBytes {
		return bad("url", "longer than %d bytes", maxURLBytes)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("url", "%v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return bad("url", "%q: want an absolute http or https URL", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return bad("url", "%q has no host", raw)
	}
	if u.User != nil {
		return bad("url", "must not carry credentials")
	}
	if len(s.GetCommand()) > 0 {
		return bad("command", "not allowed for an http server")
	}
	if len(s.GetEnv()) > 0 {
		return bad("env", "not allowed for an http server")
	}
	if s.GetDir() != "" {
		return bad("dir", "not allowed for an http server")
	}
	return nil
}

func validEnvKey(k string) bool {
	if len(k) == 0 || len(k) > maxEnvKeyBytes {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case i > 0 && c >= '0' && c <= '9':
		default:
			return false
		}
	}
	return true
}

// CheckPrefixes refuses a catalogue in which two servers' tool or prompt names could collide
// on the aggregated endpoint: two servers without a prefix, or two prefixes one of which,
// with the separator, begins the other's ("a" and "a__b" both claim "a__b__t"). Pairs are
// compared after sorting, so the check is n log n in the servers.
func CheckPrefixes(servers []*registryv1.Server) error {
	type named struct{ key, server string }
	keys := make([]named, 0, len(servers))
	var bare string
	for _, s := range servers {
		p := catalog.Prefix(s)
		if p == "" {
			if bare != "" {
				return &ValidationError{Server: s.GetName(), Field: "prefix", Problem: fmt.Sprintf("no prefix, as %q has: their names could collide (at most one server may have none)", bare)}
			}
			bare = s.GetName()
			continue
		}
		keys = append(keys, named{p + catalog.NameSeparator, s.GetName()})
	}
	slices.SortFunc(keys, func(a, b named) int { return strings.Compare(a.key, b.key) })
	// Sorted, a key that begins another sorts before it, and before everything between
	// them, which all begin with it too: comparing neighbours finds every such pair.
	for i := 1; i < len(keys); i++ {
		if strings.HasPrefix(keys[i].key, keys[i-1].key) {
			return &ValidationError{Server: keys[i].server, Field: "prefix", Problem: fmt.Sprintf("%q collides with server %q's prefix %q", strings.TrimSuffix(keys[i].key, catalog.NameSeparator), keys[i-1].server, strings.TrimSuffix(keys[i-1].key, catalog.NameSeparator))}
		}
	}
	return nil
}
