// Package cedarpolicy loads a directory of Cedar policies, and the schema they are written
// against, into an immutable Bundle named by its content digest, and evaluates requests
// against it. Policies are parsed and validated once, at load; evaluation allocates nothing
// per policy beyond what Cedar itself needs.
package cedarpolicy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

// File name extensions Load reads; every other file in the directory is ignored.
const (
	PolicyExt = ".cedar"
	SchemaExt = ".cedarschema"
)

// Gatehouse's entity model, as examples/policies/gatehouse.cedarschema declares it.
const (
	TypeTenant types.EntityType = "Gatehouse::Tenant"
	// TypeGateway is the gateway itself, what gateway-wide admin actions act on; its one
	// entity is GatewayID.
	TypeGateway   types.EntityType = "Gatehouse::Gateway"
	TypeGroup     types.EntityType = "Gatehouse::Group"
	TypePrincipal types.EntityType = "Gatehouse::Principal"
	TypeServer    types.EntityType = "Gatehouse::Server"
	TypeTool      types.EntityType = "Gatehouse::Tool"
	TypeResource  types.EntityType = "Gatehouse::Resource"
	TypePrompt    types.EntityType = "Gatehouse::Prompt"
	// TypeAction is the type of every action; an action's id is the MCP method.
	TypeAction types.EntityType = "Gatehouse::Action"
)

// Limits on what Load reads: a policy directory is operator input, but still bounded.
const (
	maxFileBytes = 4 << 20
	maxFiles     = 1024
)

// GatewayID is the id of the gateway's entity.
const GatewayID = "gateway"

// idAnnotation names a policy: decisions report it, and it must be unique in a bundle.
const idAnnotation = "id"

// Bundle is an immutable, parsed and validated policy set with its version.
type Bundle struct {
	version  string
	files    []string
	ids      []cedar.PolicyID
	policies []*cedar.Policy
	// validator is set when every policy was validated against a schema.
	validator *validate.Validator
	actions   map[types.EntityUID]types.Entity
	// forbids are the ids of the forbid policies.
	forbids map[cedar.PolicyID]bool
	// readsArguments: some policy text mentions "arguments" (context.arguments), so
	// requests need the arguments converted; no policy that does means none is.
	readsArguments bool
	// arguments and context: what the policies read of context.arguments and of the
	// context.
	arguments, context memberUse
	// readsContext: some policy text mentions "context"; none does means requests need no
	// context at all.
	readsContext bool
}

// Load reads the bundle in dir (see ReadDir) and builds it (see New). A policy's id is its
// @id annotation, or "<file>:<line>" without one; ids must be unique. The version is
// "sha256:" + the hex digest of the files' names and contents in name order (see Digest).
func Load(dir string) (*Bundle, error) {
	files, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	return New(files)
}

// ReadDir reads the bundle files of dir: every *.cedar and *.cedarschema file in it (not its
// subdirectories; hidden files are skipped, symlinks followed), in name order.
func ReadDir(dir string) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read policy dir: %w", err)
	}
	var names []string
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if strings.HasPrefix(name, ".") || (ext != PolicyExt && ext != SchemaExt) {
			continue
		}
		// Stat follows symlinks: a Kubernetes ConfigMap mounts its files as links.
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("policy dir %s: %w", dir, err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		names = append(names, name)
	}
	if len(names) > maxFiles {
		return nil, fmt.Errorf("policy dir %s: %d files, more than the limit of %d", dir, len(names), maxFiles)
	}
	files := make([]File, 0, len(names))
	for _, name := range names {
		content, err := readFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		files = append(files, File{Name: name, Content: content})
	}
	return files, nil
}

// File is one named file of a bundle.
type File struct {
	Name    string
	Content []byte
}

// New builds a bundle from files already in memory (for bundles that come from elsewhere
// than a directory, e.g. a store). Names ending in SchemaExt are the schema (at most one),
// names ending in PolicyExt are policies; anything else, and any name that is not a plain
// base name, is an error. The order of files does not matter: they are taken in name order.
// A bundle that fails is reported as an *Error listing every problem found (up to a limit),
// each at its file and, where cedar-go gives one, its line and column.
func New(files []File) (*Bundle, error) {
	files = slices.SortedFunc(slices.Values(files), func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	b := &Bundle{version: Digest(files), arguments: *newMemberUse("arguments"), context: *newMemberUse("context")}
	var probs problems
	var schemaFile *File
	var nPolicyFiles int
	seen := make(map[string]bool, len(files))
	ids := make(map[cedar.PolicyID]int)
	for i := range files {
		f := &files[i]
		if err := checkName(f.Name); err != nil {
			probs.add(Problem{Message: err.Error()})
			continue
		}
		if seen[f.Name] {
			probs.add(Problem{File: f.Name, Message: "the file appears twice in the bundle"})
			continue
		}
		seen[f.Name] = true
		b.files = append(b.files, f.Name)
		switch filepath.Ext(f.Name) {
		case SchemaExt:
			if schemaFile != nil {
				probs.add(Problem{File: f.Name, Message: fmt.Sprintf("more than one schema (%s, %s)", schemaFile.Name, f.Name)})
				continue
			}
			schemaFile = f
		case PolicyExt:
			nPolicyFiles++
			b.addPolicies(f, ids, &probs)
			b.readsArguments = b.readsArguments || bytes.Contains(f.Content, []byte("arguments"))
			b.arguments.note(f.Content)
			b.context.note(f.Content)
			b.readsContext = b.readsContext || bytes.Contains(f.Content, []byte("context"))
		}
	}
	if nPolicyFiles == 0 {
		probs.add(Problem{Message: fmt.Sprintf("no %s files", PolicyExt)})
	}
	if schemaFile != nil {
		b.validate(schemaFile, &probs)
	}
	if err := probs.err(); err != nil {
		return nil, err
	}
	return b, nil
}

// maxNameBytes bounds a file name; names come from the network when a bundle is applied.
const maxNameBytes = 255

// checkName accepts a plain base name ending in PolicyExt or SchemaExt.
func checkName(name string) error {
	switch {
	case name == "" || len(name) > maxNameBytes:
		return fmt.Errorf("file name %.64q: must be 1 to %d bytes", name, maxNameBytes)
	case !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return unicode.IsControl(r) || r == '/' || r == '\\' }):
		return fmt.Errorf("file name %.64q: must be a base name of printable UTF-8", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("file name %.64q: hidden files are not part of a bundle", name)
	}
	if ext := filepath.Ext(name); ext != PolicyExt && ext != SchemaExt {
		return fmt.Errorf("file name %.64q: neither a policy (%s) nor a schema (%s)", name, PolicyExt, SchemaExt)
	}
	return nil
}

// addPolicies parses one policy file and names its policies; ids maps each id taken so far to
// its policy's index.
func (b *Bundle) addPolicies(f *File, ids map[cedar.PolicyID]int, probs *problems) {
	if p, deep := checkNesting(f.Name, f.Content); deep {
		probs.add(p)
		return
	}
	list, err := cedar.NewPolicyListFromBytes(f.Name, f.Content)
	if err != nil {
		probs.add(parseProblem(f.Name, err))
		return
	}
	for _, p := range list {
		pos := p.Position()
		id := cedar.PolicyID(fmt.Sprintf("%s:%d", f.Name, pos.Line))
		if v, ok := p.Annotations()[idAnnotation]; ok {
			if v == "" {
				probs.add(Problem{File: f.Name, Line: pos.Line, Column: pos.Column, Message: "empty @id"})
				continue
			}
			id = cedar.PolicyID(v)
		}
		if i, ok := ids[id]; ok {
			op := b.policies[i].Position()
			probs.add(Problem{File: f.Name, Line: pos.Line, Column: pos.Column,
				Message: fmt.Sprintf("policy id %q already used at %s:%d", id, op.Filename, op.Line)})
			continue
		}
		ids[id] = len(b.ids)
		b.ids = append(b.ids, id)
		b.policies = append(b.policies, p)
		if p.Effect() == cedar.Forbid {
			if b.forbids == nil {
				b.forbids = map[cedar.PolicyID]bool{}
			}
			b.forbids[id] = true
		}
	}
}

// validate checks every policy against the schema (strict mode) and keeps the schema's
// action entities, so that policies may use action groups.
func (b *Bundle) validate(f *File, probs *problems) {
	if p, deep := checkNesting(f.Name, f.Content); deep {
		probs.add(p)
		return
	}
	var s schema.Schema
	s.SetFilename(f.Name)
	if err := s.UnmarshalCedar(f.Content); err != nil {
		probs.add(schemaProblem(f.Name, err))
		return
	}
	resolved, err := s.Resolve()
	if err != nil {
		probs.add(Problem{File: f.Name, Message: "resolve schema: " + err.Error()})
		return
	}
	v := validate.New(resolved)
	valid := true
	for i, p := range b.policies {
		err := v.Policy(string(b.ids[i]), (*xast.Policy)(p.AST()))
		if err == nil {
			continue
		}
		valid = false
		// cedar-go reports a policy's problems without positions inside it: each is placed
		// at the policy's first line (its annotations included).
		pos := p.Position()
		for _, e := range flatten(err) {
			probs.add(Problem{File: pos.Filename, Line: pos.Line, Column: pos.Column, Message: e.Error()})
		}
	}
	if !valid {
		return
	}
	b.validator = v
	b.actions = make(map[types.EntityUID]types.Entity, len(resolved.Actions))
	for uid, a := range resolved.Actions {
		b.actions[uid] = a.Entity
	}
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read policy file %s: %w", path, err)
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("policy file %s is larger than %d bytes", path, maxFileBytes)
	}
	return b, nil
}

// Digest returns a bundle's version: "sha256:" + hex SHA-256 over, for each file in the
// order given (New takes them in name order), the 8-byte big-endian length of its name, the name,
// the 8-byte big-endian length of its content and the content. Lengths make the encoding
// unambiguous: no two different sets of files share a digest input.
func Digest(files []File) string {
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		binary.BigEndian.PutUint64(n[:], uint64(len(f.Name)))
		h.Write(n[:])
		io.WriteString(h, f.Name)
		binary.BigEndian.PutUint64(n[:], uint64(len(f.Content)))
		h.Write(n[:])
		h.Write(f.Content)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Version is the bundle's content digest.
func (b *Bundle) Version() string { return b.version }

// Files lists the bundle's file names.
func (b *Bundle) Files() []string { return append([]string(nil), b.files...) }

// Validated reports whether the bundle had a schema that every policy was validated against.
func (b *Bundle) Validated() bool { return b.validator != nil }

// Len is the number of policies.
func (b *Bundle) Len() int { return len(b.policies) }

// All yields the policies in a stable order (file name, then position), so that decisions
// name their determining policies in that order. It makes a Bundle a cedar.PolicyIterator.
func (b *Bundle) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for i, p := range b.policies {
			if !yield(b.ids[i], p) {
				return
			}
		}
	}
}

// Forbids reports whether the policy with this id is a forbid.
func (b *Bundle) Forbids(id cedar.PolicyID) bool { return b.forbids[id] }

// memberUse is what policy texts read of a record they name by one word (context,
// arguments): the members they name (word.x, word has x, word["x"]), or all of them when a
// mention names none (the record as a whole, an escaped name). A mention after `has` tests
// the record's presence and reads none of it.
type memberUse struct {
	re      *regexp.Regexp
	members map[string]bool
	all     bool
}

func newMemberUse(word string) *memberUse {
	return &memberUse{re: regexp.MustCompile(`\b` + word + `\b(\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)|\s+has\s+([A-Za-z_][A-Za-z0-9_]*)|\s+has\s+"((?:[^"\\]|\\.)*)"|\s*\[\s*"((?:[^"\\]|\\.)*)"\s*\])?`)}
}

func (u *memberUse) note(text []byte) {
	for _, ix := range u.re.FindAllSubmatchIndex(text, -1) {
		if bytes.HasSuffix(bytes.TrimRight(text[:ix[0]], " \t\r\n"), []byte("has")) {
			continue
		}
		m := make([][]byte, len(ix)/2)
		for i := range m {
			if ix[2*i] >= 0 {
				m[i] = text[ix[2*i]:ix[2*i+1]]
			}
		}
		var name string
		switch {
		case m[2] != nil:
			name = string(m[2])
		case m[3] != nil:
			name = string(m[3])
		case m[4] != nil && !bytes.Contains(m[4], []byte(`\`)):
			name = string(m[4])
		case m[5] != nil && !bytes.Contains(m[5], []byte(`\`)):
			name = string(m[5])
		default:
			u.all = true
			continue
		}
		if u.members == nil {
			u.members = map[string]bool{}
		}
		u.members[name] = true
	}
}

// ArgumentMembers says which members of a call's arguments policies read: all, or those
// named in members (nil when no policy reads any).
func (b *Bundle) ArgumentMembers() (all bool, members map[string]bool) {
	return b.arguments.all, b.arguments.members
}

// ContextMembers says which members of the context policies read: all, or those named.
func (b *Bundle) ContextMembers() (all bool, members map[string]bool) {
	return b.context.all, b.context.members
}

// ReadsContext reports whether some policy may read the context (its text mentions context).
func (b *Bundle) ReadsContext() bool { return b.readsContext }

// ReadsArguments reports whether some policy may read context.arguments (its text mentions
// arguments): the caller then converts a call's arguments for the context.
func (b *Bundle) ReadsArguments() bool { return b.readsArguments }

// Action returns the action entity the schema declares for uid (with its action groups as
// parents); ok is false without a schema or for an undeclared action.
func (b *Bundle) Action(uid types.EntityUID) (types.Entity, bool) {
	e, ok := b.actions[uid]
	return e, ok
}

// ValidateRequest checks a request against the schema: the principal and resource types the
// action applies to, and its context. It is nil without a schema, and for an action the
// schema does not declare (Cedar denies those by default; the gateway still asks).
func (b *Bundle) ValidateRequest(req cedar.Request) error {
	if b.validator == nil {
		return nil
	}
	if _, ok := b.actions[req.Action]; !ok {
		return nil
	}
	return b.validator.Request(req)
}

// Authorize evaluates req with entities against every policy: Cedar's semantics, forbid
// overrides permit, deny by default.
func (b *Bundle) Authorize(entities types.EntityGetter, req cedar.Request) (cedar.Decision, cedar.Diagnostic) {
	return cedar.Authorize(b, entities, req)
}
