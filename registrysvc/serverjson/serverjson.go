// Package serverjson reads the official MCP registry's server.json (the format
// registry.modelcontextprotocol.io publishes: name, description, version, packages and
// remotes) into a registry server. It is strict: every shape Gatehouse cannot run as
// described, or could only run by storing a secret, is refused with an error naming it.
package serverjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
)

// Limits on a server.json.
const (
	// MaxBytes bounds the file.
	MaxBytes = 256 << 10
	maxList  = 32  // packages, remotes, headers, environment variables
	maxArgs  = 128 // runtime plus package arguments
)

// Options say what the file does not: the server's name in Gatehouse, its tenants, which of
// its ways to run it to use, and whether to pin its tools.
type Options struct {
	// Name is the server's name; empty derives it from the file's name (the part after the
	// last "/", lower-cased).
	Name string
	// Tenants are the tenants the server is approved for.
	Tenants []string
	// Package and Remote choose one of the file's packages or remotes by index; both -1
	// means the only one there is.
	Package, Remote int
	// NoPin turns pinning off (imported servers are pinned by default).
	NoPin bool
	// AllowRuntimeArguments accepts a package's runtimeArguments: options of npx, uvx or
	// docker themselves (a registry to fetch from, a volume, --privileged), which a
	// third-party file should not choose unseen. Refused unless set.
	AllowRuntimeArguments bool
}

// loaderVariable reports an environment variable that changes how the runtime loads code (a
// preload, a module path, a package index), which a third-party file may not set.
func loaderVariable(name string) bool {
	n := strings.ToUpper(name)
	for _, p := range []string{"LD_", "DYLD_", "NODE_", "NPM_CONFIG_", "PYTHON", "PIP_", "UV_", "DOCKER_", "BASH_", "PERL", "RUBY"} {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	switch n {
	case "PATH", "HOME", "SHELL", "ENV", "IFS", "TMPDIR", "XDG_CONFIG_HOME", "GIT_SSH_COMMAND":
		return true
	}
	return false
}

// file is server.json's shape; unknown members are refused.
type file struct {
	Schema      string          `json:"$schema"`
	Name        string          `json:"name"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Version     string          `json:"version"`
	Status      string          `json:"status"`
	WebsiteURL  string          `json:"websiteUrl"`
	Repository  json.RawMessage `json:"repository"`
	Icons       json.RawMessage `json:"icons"`
	Meta        json.RawMessage `json:"_meta"`
	Packages    []pkg           `json:"packages"`
	Remotes     []remote        `json:"remotes"`
}

type pkg struct {
	RegistryType         string          `json:"registryType"`
	RegistryBaseURL      string          `json:"registryBaseUrl"`
	Identifier           string          `json:"identifier"`
	Version              string          `json:"version"`
	FileSHA256           string          `json:"fileSha256"`
	RuntimeHint          string          `json:"runtimeHint"`
	Transport            transport       `json:"transport"`
	RuntimeArguments     []argument      `json:"runtimeArguments"`
	PackageArguments     []argument      `json:"packageArguments"`
	EnvironmentVariables []keyValueInput `json:"environmentVariables"`
}

type transport struct {
	Type    string          `json:"type"`
	URL     string          `json:"url"`
	Headers []keyValueInput `json:"headers"`
}

type remote struct {
	Type      string          `json:"type"`
	URL       string          `json:"url"`
	Headers   []keyValueInput `json:"headers"`
	Variables json.RawMessage `json:"variables"`
}

// input is the common part of arguments, variables and headers.
type input struct {
	Description string          `json:"description"`
	IsRequired  bool            `json:"isRequired"`
	Format      string          `json:"format"`
	Value       string          `json:"value"`
	IsSecret    bool            `json:"isSecret"`
	Default     string          `json:"default"`
	Placeholder string          `json:"placeholder"`
	Choices     []string        `json:"choices"`
	Variables   json.RawMessage `json:"variables"`
}

type argument struct {
	input
	Type       string `json:"type"`
	Name       string `json:"name"`
	ValueHint  string `json:"valueHint"`
	IsRepeated bool   `json:"isRepeated"`
}

type keyValueInput struct {
	input
	Name string `json:"name"`
}

// exactVersion is a version a package can be pinned to: no range, no "latest".
var exactVersion = regexp.MustCompile(`^v?[0-9]+(\.[0-9]+)*([-+][0-9A-Za-z.+-]+)?$`)

// placeholder finds a {variable} in a value, which server.json fills from user input.
var placeholder = regexp.MustCompile(`\{[A-Za-z0-9_]+\}`)

// Parse reads one server.json. It returns the server (validated, imported, pinned unless
// opts.NoPin) and notes on what it left out (optional arguments, variables and headers).
func Parse(data []byte, opts Options) (*registryv1.Server, []string, error) {
	if len(data) > MaxBytes {
		return nil, nil, fmt.Errorf("server.json is %d bytes, more than the limit of %d", len(data), MaxBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, nil, fmt.Errorf("server.json: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("server.json: data after the object")
	}
	if f.Name == "" {
		return nil, nil, errors.New("server.json: name is required")
	}
	if f.Version == "" {
		return nil, nil, errors.New("server.json: version is required")
	}
	if f.Status != "" && f.Status != "active" {
		return nil, nil, fmt.Errorf("server.json: status %q: only active servers are imported", f.Status)
	}
	if len(f.Packages) > maxList || len(f.Remotes) > maxList {
		return nil, nil, fmt.Errorf("server.json: more than %d packages or remotes", maxList)
	}
	name := opts.Name
	if name == "" {
		name = strings.ToLower(f.Name[strings.LastIndex(f.Name, "/")+1:])
		if !ident.ValidServerName(name) {
			return nil, nil, fmt.Errorf("server.json: cannot derive a server name from %.100q; give one with --name", f.Name)
		}
	}
	srv := &registryv1.Server{
		Name: name, Tenants: opts.Tenants, Description: f.Description, Version: f.Version,
		Pin: !opts.NoPin, Imported: true,
	}
	var notes []string
	var err error
	switch {
	case opts.Package >= 0 && opts.Remote >= 0:
		return nil, nil, errors.New("choose a package or a remote, not both")
	case opts.Package >= 0:
		if opts.Package >= len(f.Packages) {
			return nil, nil, fmt.Errorf("server.json has %d packages; there is no package %d", len(f.Packages), opts.Package)
		}
		notes, err = fromPackage(srv, f.Packages[opts.Package], opts)
	case opts.Remote >= 0:
		if opts.Remote >= len(f.Remotes) {
			return nil, nil, fmt.Errorf("server.json has %d remotes; there is no remote %d", len(f.Remotes), opts.Remote)
		}
		notes, err = fromRemote(srv, f.Remotes[opts.Remote])
	case len(f.Packages)+len(f.Remotes) == 0:
		return nil, nil, errors.New("server.json has no packages and no remotes: nothing to run")
	case len(f.Packages)+len(f.Remotes) > 1:
		return nil, nil, fmt.Errorf("server.json offers %d packages and %d remotes; choose one with --package I or --remote I", len(f.Packages), len(f.Remotes))
	case len(f.Packages) == 1:
		notes, err = fromPackage(srv, f.Packages[0], opts)
	default:
		notes, err = fromRemote(srv, f.Remotes[0])
	}
	if err != nil {
		return nil, nil, fmt.Errorf("server.json: %w", err)
	}
	if err := config.Validate(srv); err != nil {
		return nil, nil, fmt.Errorf("server.json: %w", err)
	}
	return srv, notes, nil
}

// fromRemote makes an HTTP server of a remote: streamable-http only (the bridge speaks no
// legacy SSE to registry servers), and no header the gateway would have to invent or store
// (a credential belongs in the server's identity, which refers to a secret, never holds it).
func fromRemote(srv *registryv1.Server, r remote) ([]string, error) {
	switch r.Type {
	case "streamable-http":
	case "sse":
		return nil, errors.New("remote of type sse: legacy HTTP+SSE servers are not imported; use a streamable-http remote")
	default:
		return nil, fmt.Errorf("remote of type %.40q: want streamable-http", r.Type)
	}
	if placeholder.MatchString(r.URL) || len(r.Variables) > 0 {
		return nil, errors.New("remote URL has {variables}: give the server in the configuration with its URL filled in")
	}
	var notes []string
	if len(r.Headers) > maxList {
		return nil, fmt.Errorf("more than %d headers", maxList)
	}
	for _, h := range r.Headers {
		if h.IsRequired || h.IsSecret {
			return nil, fmt.Errorf("remote requires header %.64q: a credential is configured as the server's identity (docs/configuration.md), not imported", h.Name)
		}
		notes = append(notes, fmt.Sprintf("optional header %q left out", h.Name))
	}
	srv.Transport, srv.Url = registryv1.Transport_TRANSPORT_STREAMABLE_HTTP, r.URL
	return notes, nil
}

// runtimes are the package registries Gatehouse can launch from, with the program that runs
// a package and how a pinned version is named.
var runtimes = map[string]struct {
	hint string
	argv []string
	ref  func(id, version string) string
}{
	"npm":  {"npx", []string{"npx", "-y"}, func(id, v string) string { return id + "@" + v }},
	"pypi": {"uvx", []string{"uvx"}, func(id, v string) string { return id + "==" + v }},
	"oci":  {"docker", []string{"docker", "run", "-i", "--rm"}, func(id, v string) string { return id + ":" + v }},
}

// fromPackage makes a stdio server of a package: its runtime's argv (never a shell), the
// runtime arguments, the package pinned to its exact version, the package arguments, and the
// environment variables that have a value and are not secrets.
func fromPackage(srv *registryv1.Server, p pkg, opts Options) ([]string, error) {
	rt, ok := runtimes[p.RegistryType]
	if !ok {
		return nil, fmt.Errorf("package registryType %.40q: want npm, pypi or oci", p.RegistryType)
	}
	if p.Transport.Type != "stdio" {
		return nil, fmt.Errorf("package transport %.40q: only stdio packages are launched by the gateway; a package serving HTTP must run elsewhere and be configured by its URL", p.Transport.Type)
	}
	if p.RuntimeHint != "" && p.RuntimeHint != rt.hint {
		return nil, fmt.Errorf("package runtimeHint %.40q: %s packages are run with %s", p.RuntimeHint, p.RegistryType, rt.hint)
	}
	if p.Identifier == "" || strings.ContainsAny(p.Identifier, " \t\n\x00") || strings.HasPrefix(p.Identifier, "-") {
		return nil, fmt.Errorf("package identifier %.100q is not a package name", p.Identifier)
	}
	if !exactVersion.MatchString(p.Version) {
		return nil, fmt.Errorf("package version %.40q: an exact version is required (no range, no latest)", p.Version)
	}
	if len(p.RuntimeArguments)+len(p.PackageArguments) > maxArgs {
		return nil, fmt.Errorf("more than %d arguments", maxArgs)
	}
	if len(p.RuntimeArguments) > 0 && !opts.AllowRuntimeArguments {
		return nil, fmt.Errorf("the package has runtimeArguments (options of %s itself): refused unless allowed (gatehouse servers import --allow-runtime-args), after reading them", rt.argv[0])
	}
	var notes []string
	argv := append([]string{}, rt.argv...)
	for _, a := range p.RuntimeArguments {
		args, note, err := a.render()
		if err != nil {
			return nil, fmt.Errorf("runtimeArguments: %w", err)
		}
		argv, notes = append(argv, args...), appendNote(notes, note)
	}
	id := p.Identifier
	if p.RegistryType == "oci" && strings.Contains(id[strings.LastIndex(id, "/")+1:], ":") {
		return nil, fmt.Errorf("package identifier %.100q names a tag: give the version in version", id)
	}
	argv = append(argv, rt.ref(id, p.Version))
	for _, a := range p.PackageArguments {
		args, note, err := a.render()
		if err != nil {
			return nil, fmt.Errorf("packageArguments: %w", err)
		}
		argv, notes = append(argv, args...), appendNote(notes, note)
	}
	if len(p.EnvironmentVariables) > maxList {
		return nil, fmt.Errorf("more than %d environment variables", maxList)
	}
	env := map[string]string{}
	for _, e := range p.EnvironmentVariables {
		if loaderVariable(e.Name) {
			return nil, fmt.Errorf("environment variable %.64q changes how the runtime loads code: a server.json may not set it", e.Name)
		}
		v, note, err := e.input.value("environment variable " + e.Name)
		if err != nil {
			return nil, err
		}
		if note != "" {
			notes = append(notes, note)
			continue
		}
		env[e.Name] = v
	}
	srv.Transport, srv.Command = registryv1.Transport_TRANSPORT_STDIO, argv
	if len(env) > 0 {
		srv.Env = env
	}
	return notes, nil
}

func appendNote(notes []string, note string) []string {
	if note == "" {
		return notes
	}
	return append(notes, note)
}

// render turns one argument into argv elements: a positional argument's value, a named
// one's name and value (a required named argument without a value is a flag: its name
// alone). An optional argument without a value is left out, with a note.
func (a argument) render() ([]string, string, error) {
	switch a.Type {
	case "positional":
		v, note, err := a.input.value(fmt.Sprintf("positional argument (%.40s)", cmpOr(a.ValueHint, a.Description)))
		if err != nil || note != "" {
			return nil, note, err
		}
		return []string{v}, "", nil
	case "named":
		if a.Name == "" || strings.ContainsAny(a.Name, " \t\n\x00") {
			return nil, "", fmt.Errorf("named argument %.64q has no usable name", a.Name)
		}
		if a.IsRequired && a.Value == "" && a.Default == "" && !a.IsSecret && len(a.Variables) == 0 {
			return []string{a.Name}, "", nil
		}
		v, note, err := a.input.value("argument " + a.Name)
		if err != nil || note != "" {
			return nil, note, err
		}
		return []string{a.Name, v}, "", nil
	}
	return nil, "", fmt.Errorf("argument type %.40q: want positional or named", a.Type)
}

// value is an input's value (its value, else its default). A secret, a value with
// {variables} to fill, or a required input with no value is an error: the gateway would have
// to store a secret or guess. An optional input with no value gives a note instead.
func (in input) value(what string) (string, string, error) {
	if in.IsSecret {
		return "", "", fmt.Errorf("%s is a secret: secrets are never stored in the registry; configure the server in YAML with an identity", what)
	}
	v := in.Value
	if v == "" {
		v = in.Default
	}
	if placeholder.MatchString(v) || len(in.Variables) > 0 {
		return "", "", fmt.Errorf("%s has {variables} to fill in: configure the server in YAML instead", what)
	}
	if strings.ContainsRune(v, 0) {
		return "", "", fmt.Errorf("%s contains a NUL byte", what)
	}
	if v == "" {
		if in.IsRequired {
			return "", "", fmt.Errorf("%s is required and has no value or default", what)
		}
		return "", what + " left out (optional, no value)", nil
	}
	return v, "", nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
