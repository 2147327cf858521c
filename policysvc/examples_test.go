package policysvc_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
)

// TestShippedPolicies evaluates examples/policies, the default bundle, as an operator
// would use it: it must load with its schema, and say what its README says.
func TestShippedPolicies(t *testing.T) {
	t.Parallel()
	b, err := cedarpolicy.Load(shippedDir)
	if err != nil {
		t.Fatalf("load %s: %v", shippedDir, err)
	}
	if !b.Validated() {
		t.Fatal("the shipped bundle has no schema")
	}
	cat := catalog.Static(
		&registryv1.Server{Name: "echo", Tenants: []string{"default"}},
		&registryv1.Server{Name: "shared", Tenants: []string{"default", "acme"}},
		&registryv1.Server{Name: "nobody"},
	)
	svc := newService(t, policysvc.Config{PolicyDir: shippedDir}, cat)
	if svc.BundleVersion() != b.Version() {
		t.Fatalf("service version %s, bundle %s", svc.BundleVersion(), b.Version())
	}
	dev := &policyv1.Subject{Id: "dev", Tenant: "default", Kind: "user"}
	acme := &policyv1.Subject{Id: "svc-1", Tenant: "acme", Kind: "service", Groups: []string{"bots"}}
	tests := []struct {
		name    string
		subject *policyv1.Subject
		action  string
		server  string
		item    string
		allowed string // the deciding policy; empty: denied by default
	}{
		{"open approved server", dev, "initialize", "echo", "", "tenant-may-initialize-approved-servers"},
		{"call tool on approved server", dev, "tools/call", "echo", "echo", "tenant-may-call-tools-on-approved-servers"},
		{"read resource on approved server", dev, "resources/read", "echo", "file:///x", "tenant-may-read-resources-on-approved-servers"},
		{"get prompt on approved server", dev, "prompts/get", "echo", "greet", "tenant-may-get-prompts-on-approved-servers"},
		{"server shared by tenants", acme, "tools/call", "shared", "echo", "tenant-may-call-tools-on-approved-servers"},
		{"other tenant cannot open", acme, "initialize", "echo", "", ""},
		{"other tenant cannot call", acme, "tools/call", "echo", "echo", ""},
		{"server approved for nobody", dev, "initialize", "nobody", "", ""},
		{"unknown server", dev, "initialize", "ghost", "", ""},
		{"a method the schema does not name", dev, "experimental/frobnicate", "echo", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := check(svc, &policyv1.CheckRequest{Subject: tt.subject, Action: tt.action, Resource: &policyv1.Resource{Server: tt.server, Name: tt.item}})
			if err != nil {
				t.Fatal(err)
			}
			want, wantIDs := policyv1.Decision_DECISION_DENY, []string(nil)
			if tt.allowed != "" {
				want, wantIDs = policyv1.Decision_DECISION_ALLOW, []string{tt.allowed}
			}
			if resp.GetDecision() != want || !slices.Equal(resp.GetPolicyIds(), wantIDs) {
				t.Errorf("got %v by %q, want %v by %q", resp.GetDecision(), resp.GetPolicyIds(), want, wantIDs)
			}
			if len(resp.GetErrors()) > 0 {
				t.Errorf("evaluation errors: %q", resp.GetErrors())
			}
		})
	}
}

// TestReadmePolicies: the examples in examples/policies/README.md load against the schema.
func TestReadmePolicies(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(shippedDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for rest := string(readme); ; {
		_, after, ok := strings.Cut(rest, "```cedar\n")
		if !ok {
			break
		}
		block, after, _ := strings.Cut(after, "```")
		blocks = append(blocks, block)
		rest = after
	}
	if len(blocks) == 0 {
		t.Fatal("no cedar examples in the README")
	}
	dir := writeDir(t, map[string]string{"gatehouse.cedarschema": shippedSchema(t), "readme.cedar": strings.Join(blocks, "\n")})
	b, err := cedarpolicy.Load(dir)
	if err != nil {
		t.Fatalf("README examples: %v", err)
	}
	if b.Len() < 3 {
		t.Fatalf("%d policies in the README examples, want at least 3", b.Len())
	}
}
