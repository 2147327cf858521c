// Package config parses Gatehouse's YAML configuration file (the servers the registry is
// seeded from, and the optional anonymous grant) and validates server specs. It depends only
// on the generated registry types and yaml.v3, so any binary can read the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
	"gopkg.in/yaml.v3"
)

// Limits on the configuration file.
const (
	// MaxFileBytes bounds the file; a catalogue is a few KiB.
	MaxFileBytes = 1 << 20
	// MaxServers bounds the servers of one file. The registry writes them in one etcd
	// transaction, and etcd allows 128 operations per transaction by default.
	MaxServers = 100
)

// Transport names in the file.
const (
	TransportStdio = "stdio"
	TransportHTTP  = "http"
)

// File is a parsed configuration file.
type File struct {
	// Servers are the registry's catalogue, validated, with unique names.
	Servers []*registryv1.Server
	// Anonymous is the optional grant for hosts without a credential; its zero value
	// grants nothing.
	Anonymous Anonymous
}

// Anonymous lets hosts without a credential use the named servers as a fixed principal.
type Anonymous struct {
	// Servers are the names of servers (from Servers) open to anonymous hosts.
	Servers []string
	// Principal and Tenant identify anonymous callers; empty means the auth service's
	// defaults ("anonymous" in tenant "default").
	Principal string
	Tenant    string
}

// fileYAML is the file's shape on disk. Every field is named so that unknown keys are errors.
type fileYAML struct {
	Servers   []serverYAML   `yaml:"servers"`
	Anonymous *anonymousYAML `yaml:"anonymous"`
	// Quotas are policysvc's (policysvc.ParseQuotas reads and validates them, as strictly);
	// the registry only lets the section be.
	Quotas yaml.Node `yaml:"quotas"`
	// Alerts are auditsvc's (auditsvc/alerts.Parse reads them, as strictly).
	Alerts yaml.Node `yaml:"alerts"`
}

type serverYAML struct {
	Name      string            `yaml:"name"`
	Transport string            `yaml:"transport"`
	Command   []string          `yaml:"command"`
	Env       map[string]string `yaml:"env"`
	Dir       string            `yaml:"dir"`
	URL       string            `yaml:"url"`
	Tenants   []string          `yaml:"tenants"`
	// Timeout bounds each call's wait for the upstream's answer (a Go duration, "30s");
	// empty leaves the bridge's default.
	Timeout string `yaml:"timeout"`
	// Identity says how the gateway identifies itself, or its caller, to the upstream
	// (identity.go); absent means not at all.
	Identity *identityYAML `yaml:"identity"`
	// Prefix is what the aggregated endpoint puts before the server's tool and prompt names
	// ("<prefix>__<name>"): absent means the server's name, "" means none.
	Prefix *string `yaml:"prefix"`
	// Breaker tunes the server's circuit breaker (breaker.go); absent means the bridge's
	// defaults.
	Breaker *breakerYAML `yaml:"breaker"`
	// Owner says who answers for the server; free text.
	Owner string `yaml:"owner"`
	// Revisions are the MCP protocol revisions the server supports ("2025-06-18").
	Revisions []string `yaml:"revisions"`
	// Capabilities are those the server declares, in the shape of MCP's initialize result.
	Capabilities *capabilitiesYAML `yaml:"capabilities"`
	// Instructions are the server's, for the aggregated endpoint's merged initialize.
	Instructions string `yaml:"instructions"`
	// Pin quarantines any tool whose definition differs from the one approved.
	Pin bool `yaml:"pin"`
	// Audit says what the server's audit records keep of arguments beyond their digest
	// (audit.go); absent means the digest only.
	Audit *auditYAML `yaml:"audit"`
}

// capabilitiesYAML mirrors MCP's server capabilities: `tools: {listChanged: true}`,
// `resources: {subscribe: true}`, `logging: {}`.
type capabilitiesYAML struct {
	Tools       *listChangedYAML `yaml:"tools"`
	Prompts     *listChangedYAML `yaml:"prompts"`
	Resources   *resourcesYAML   `yaml:"resources"`
	Logging     *struct{}        `yaml:"logging"`
	Completions *struct{}        `yaml:"completions"`
}

type listChangedYAML struct {
	ListChanged bool `yaml:"listChanged"`
}

type resourcesYAML struct {
	Subscribe   bool `yaml:"subscribe"`
	ListChanged bool `yaml:"listChanged"`
}

func (c *capabilitiesYAML) capabilities() *registryv1.ServerCapabilities {
	if c == nil {
		return nil
	}
	out := &registryv1.ServerCapabilities{Logging: c.Logging != nil, Completions: c.Completions != nil}
	if c.Tools != nil {
		out.Tools, out.ToolsListChanged = true, c.Tools.ListChanged
	}
	if c.Prompts != nil {
		out.Prompts, out.PromptsListChanged = true, c.Prompts.ListChanged
	}
	if c.Resources != nil {
		out.Resources, out.ResourcesSubscribe, out.ResourcesListChanged = true, c.Resources.Subscribe, c.Resources.ListChanged
	}
	return out
}

type anonymousYAML struct {
	Servers   []string `yaml:"servers"`
	Principal string   `yaml:"principal"`
	Tenant    string   `yaml:"tenant"`
}

// Parse reads a configuration file: YAML, one document, unknown keys and duplicate keys
// refused, every server validated, server names unique, anonymous servers among them.
func Parse(data []byte) (*File, error) {
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("config is %d bytes, more than the limit of %d", len(data), MaxFileBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var raw fileYAML
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty")
		}
		return nil, fmt.Errorf("parse config: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("parse config: %w", err)
		}
		return nil, errors.New("parse config: more than one YAML document")
	}
	if len(raw.Servers) > MaxServers {
		return nil, fmt.Errorf("config lists %d servers, more than the limit of %d", len(raw.Servers), MaxServers)
	}
	f := &File{Servers: make([]*registryv1.Server, 0, len(raw.Servers))}
	seen := make(map[string]bool, len(raw.Servers))
	for i, rs := range raw.Servers {
		s, err := rs.server()
		if err != nil {
			return nil, fmt.Errorf("servers[%d]: %w", i, err)
		}
		if err := Validate(s); err != nil {
			return nil, fmt.Errorf("servers[%d]: %w", i, err)
		}
		if seen[s.GetName()] {
			return nil, fmt.Errorf("servers[%d]: %w", i, &ValidationError{Server: s.GetName(), Field: "name", Problem: "listed twice"})
		}
		seen[s.GetName()] = true
		s.Position = int32(i)
		f.Servers = append(f.Servers, s)
	}
	if err := CheckPrefixes(f.Servers); err != nil {
		return nil, err
	}
	if a := raw.Anonymous; a != nil {
		for i, name := range a.Servers {
			if !seen[name] {
				return nil, fmt.Errorf("anonymous.servers[%d]: %q is not a listed server", i, name)
			}
		}
		if a.Principal != "" && !ident.ValidID(a.Principal) {
			return nil, fmt.Errorf("anonymous.principal %q: want 1 to %d of [A-Za-z0-9._@-]", a.Principal, ident.MaxIDBytes)
		}
		if a.Tenant != "" && !ident.ValidID(a.Tenant) {
			return nil, fmt.Errorf("anonymous.tenant %q: want 1 to %d of [A-Za-z0-9._@-]", a.Tenant, ident.MaxIDBytes)
		}
		f.Anonymous = Anonymous{Servers: a.Servers, Principal: a.Principal, Tenant: a.Tenant}
	}
	return f, nil
}

// ParseConfig reads a configuration file and returns its servers (see Parse).
func ParseConfig(data []byte) ([]*registryv1.Server, error) {
	f, err := Parse(data)
	if err != nil {
		return nil, err
	}
	return f.Servers, nil
}

// server turns the YAML form into the registry's message; Validate judges the result.
func (rs serverYAML) server() (*registryv1.Server, error) {
	s := &registryv1.Server{
		Name:    rs.Name,
		Command: rs.Command,
		Env:     rs.Env,
		Dir:     rs.Dir,
		Url:     rs.URL,
		Tenants: rs.Tenants,
		Prefix:  rs.Prefix,

		Owner:        rs.Owner,
		Revisions:    rs.Revisions,
		Capabilities: rs.Capabilities.capabilities(),
		Instructions: rs.Instructions,
		Pin:          rs.Pin,
	}
	if rs.Timeout != "" {
		d, err := time.ParseDuration(rs.Timeout)
		if err != nil {
			return nil, &ValidationError{Server: rs.Name, Field: "timeout", Problem: fmt.Sprintf("%q is not a duration such as 30s or 2m", rs.Timeout)}
		}
		s.CallTimeout = durationpb.New(d)
	}
	if rs.Breaker != nil {
		b, err := rs.Breaker.breaker(rs.Name)
		if err != nil {
			return nil, err
		}
		s.Breaker = b
	}
	if rs.Audit != nil {
		a, err := rs.Audit.audit(rs.Name)
		if err != nil {
			return nil, err
		}
		s.Audit = a
	}
	if rs.Identity != nil {
		id, err := rs.Identity.identity(rs.Name)
		if err != nil {
			return nil, err
		}
		s.Identity = id
	}
	switch strings.ToLower(rs.Transport) {
	case TransportStdio:
		s.Transport = registryv1.Transport_TRANSPORT_STDIO
	case TransportHTTP:
		s.Transport = registryv1.Transport_TRANSPORT_STREAMABLE_HTTP
	case "":
		return nil, &ValidationError{Server: rs.Name, Field: "transport", Problem: "required: stdio or http"}
	default:
		return nil, &ValidationError{Server: rs.Name, Field: "transport", Problem: fmt.Sprintf("%q is not stdio or http", rs.Transport)}
	}
	return s, nil
}
