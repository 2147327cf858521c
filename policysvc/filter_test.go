package policysvc_test

import (
	"context"
	"fmt"
	"testing"

	"connectrpc.com/connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
)

// Filter decides each item as Check does, in one request, within its bound.
func TestFilter(t *testing.T) {
	t.Parallel()
	dir := writeDir(t, map[string]string{"gatehouse.cedarschema": shippedSchema(t), "p.cedar": `
@id("tenant-tools") permit (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.server.tenants.contains(principal.tenant) };
@id("no-delete") forbid (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.name == "delete" };
`})
	svc := newService(t, policysvc.Config{PolicyDir: dir}, nil)
	filter := func(sub *policyv1.Subject, server string, names ...string) ([]bool, error) {
		resp, err := svc.Filter(context.Background(), connect.NewRequest(&policyv1.FilterRequest{Subject: sub, Action: "tools/call", Server: server, Names: names}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetAllowed(), nil
	}
	names := []string{"read", "delete", "write"}
	got, err := filter(subject("alice", "acme"), "files", names...)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		resp, err := check(svc, &policyv1.CheckRequest{Subject: subject("alice", "acme"), Action: "tools/call", Resource: &policyv1.Resource{Server: "files", Name: name}})
		if err != nil {
			t.Fatal(err)
		}
		if got[i] != (resp.GetDecision() == policyv1.Decision_DECISION_ALLOW) {
			t.Errorf("%s: Filter %v, Check %v", name, got[i], resp.GetDecision())
		}
	}
	if fmt.Sprint(got) != "[true false true]" {
		t.Fatalf("Filter = %v", got)
	}
	if got, _ := filter(subject("bob", "globex"), "files", names...); fmt.Sprint(got) != "[false false false]" {
		t.Fatalf("another tenant: %v", got)
	}
	if got, _ := filter(subject("alice", "acme"), "nosuch", names...); fmt.Sprint(got) != "[false false false]" {
		t.Fatalf("an unknown server: %v", got)
	}
	if _, err := filter(subject("alice", "acme"), "files", make([]string, policysvc.MaxFilterNames+1)...); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("over the bound: %v, want InvalidArgument", err)
	}
}
