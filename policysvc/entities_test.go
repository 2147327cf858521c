package policysvc

import (
	"os"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
)

// TestEntitiesMatchSchema: the entities Check builds conform to the shipped schema, so the
// policies validated against it see exactly the attributes it promises.
func TestEntitiesMatchSchema(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("../examples/policies/gatehouse.cedarschema")
	if err != nil {
		t.Fatal(err)
	}
	var s schema.Schema
	if err := s.UnmarshalCedar(src); err != nil {
		t.Fatal(err)
	}
	resolved, err := s.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	v := validate.New(resolved)
	server := serverEntity(&registryv1.Server{Name: "echo", Tenants: []string{"a", "b"}})
	entities := map[string]types.Entity{
		"principal":          principalEntity("alice", "acme", "user", []string{"staff", "admins"}),
		"principal alone":    principalEntity("bob", "acme", "service", nil),
		"server":             server,
		"server, no tenants": serverEntity(&registryv1.Server{Name: "x"}),
	}
	for _, action := range []string{"tools/call", "resources/read", "prompts/get"} {
		typ, ok := itemType(action)
		if !ok {
			t.Fatalf("no item type for %s", action)
		}
		entities[action] = itemEntity(typ, server.UID, "thing")
	}
	for name, e := range entities {
		if err := v.Entity(e); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, action := range []string{"initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/templates/list",
		"resources/read", "resources/subscribe", "resources/unsubscribe", "prompts/list", "prompts/get",
		"completion/complete", "logging/setLevel", catchAll} {
		resource := server.UID
		if typ, ok := itemType(action); ok {
			resource = itemEntity(typ, server.UID, "thing").UID
		}
		// The context as Check builds it, arguments included.
		cctx, err := cedarContext(&policyv1.CheckRequest{Action: action, Context: &policyv1.RequestContext{
			Arguments: []byte(`{"force":true,"other":null}`), SourceAddress: "127.0.0.1", SessionId: "s", ProtocolVersion: "2025-11-25",
		}}, time.Now(), argumentsNeed{read: true, all: true, allContext: true})
		if err != nil {
			t.Fatal(err)
		}
		req := types.Request{
			Principal: entities["principal"].UID,
			Action:    types.NewEntityUID(cedarpolicy.TypeAction, types.String(action)),
			Resource:  resource,
			Context:   cctx,
		}
		if err := v.Request(req); err != nil {
			t.Errorf("request %s: %v", action, err)
		}
	}
}
