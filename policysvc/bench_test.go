package policysvc_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
)

// BenchmarkCheck is the hot path without the network: one allowed tools/call.
func BenchmarkCheck(b *testing.B) {
	svc, err := policysvc.New(policysvc.Config{PolicyDir: shippedDir}, testCatalog(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	req := connect.NewRequest(&policyv1.CheckRequest{
		Subject:  &policyv1.Subject{Id: "alice", Tenant: "acme", Kind: "user", Groups: []string{"staff"}},
		Action:   "tools/call",
		Resource: &policyv1.Resource{Server: "files", Name: "read"},
	})
	b.ReportAllocs()
	for b.Loop() {
		resp, err := svc.Check(context.Background(), req)
		if err != nil || resp.Msg.GetDecision() != policyv1.Decision_DECISION_ALLOW {
			b.Fatal(resp, err)
		}
	}
}
