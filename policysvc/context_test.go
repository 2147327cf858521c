package policysvc_test

import (
	"strings"
	"testing"
	"time"

	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
)

// Conditions on the request's context: arguments, time, source, and the catch-all action.
const contextPolicies = `
@id("tenant-tools")
permit (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.server.tenants.contains(principal.tenant) };

@id("no-forced-delete")
forbid (principal, action == Gatehouse::Action::"tools/call", resource is Gatehouse::Tool)
when { resource.name == "delete_repo" && context has arguments && context.arguments has force && context.arguments.force };

@id("night-off")
forbid (principal in Gatehouse::Tenant::"globex", action, resource)
unless { context.time.hour >= 8 && context.time.hour < 18 };

@id("loopback-lists")
permit (principal, action == Gatehouse::Action::"tools/list", resource is Gatehouse::Server)
when { context.source == "127.0.0.1" };

@id("other-for-acme")
permit (principal in Gatehouse::Tenant::"acme", action == Gatehouse::Action::"other", resource)
when { context.method == "experimental/ok" };
`

func contextService(t *testing.T, at time.Time) *policysvc.Service {
	t.Helper()
	dir := writeDir(t, map[string]string{"gatehouse.cedarschema": shippedSchema(t), "c.cedar": contextPolicies})
	return newService(t, policysvc.Config{PolicyDir: dir, Clock: func() time.Time { return at }}, nil)
}

func decide(t *testing.T, svc *policysvc.Service, sub *policyv1.Subject, action, server, name string, rc *policyv1.RequestContext) *policyv1.CheckResponse {
	t.Helper()
	resp, err := check(svc, &policyv1.CheckRequest{Subject: sub, Action: action, Resource: &policyv1.Resource{Server: server, Name: name}, Context: rc})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// A policy on tool arguments allows and denies the same tool by its arguments.
func TestArgumentsDecide(t *testing.T) {
	t.Parallel()
	svc := contextService(t, time.Date(2026, 1, 7, 12, 0, 0, 0, time.UTC))
	alice := subject("alice", "acme")
	for _, tt := range []struct {
		args string
		want policyv1.Decision
		by   string
	}{
		{``, policyv1.Decision_DECISION_ALLOW, "tenant-tools"},
		{`null`, policyv1.Decision_DECISION_ALLOW, "tenant-tools"},
		{`{}`, policyv1.Decision_DECISION_ALLOW, "tenant-tools"},
		{`{"force":false,"name":"x","n":2,"f":1.5,"list":[1,2],"deep":{"a":{"b":null}}}`, policyv1.Decision_DECISION_ALLOW, "tenant-tools"},
		{`{"force":true}`, policyv1.Decision_DECISION_DENY, "no-forced-delete"},
		{`{"name":"x","force":true,"other":null}`, policyv1.Decision_DECISION_DENY, "no-forced-delete"},
		// A forbid that cannot evaluate (force of another type) denies: it is never skipped.
		{`{"force":"true"}`, policyv1.Decision_DECISION_DENY, "tenant-tools"},
		{`{"force":1}`, policyv1.Decision_DECISION_DENY, "tenant-tools"},
		{`{"force":[true]}`, policyv1.Decision_DECISION_DENY, "tenant-tools"},
	} {
		resp := decide(t, svc, alice, "tools/call", "files", "delete_repo", &policyv1.RequestContext{Arguments: []byte(tt.args)})
		if resp.GetDecision() != tt.want || strings.Join(resp.GetPolicyIds(), ",") != tt.by {
			t.Errorf("arguments %s: %v by %v, want %v by %s", tt.args, resp.GetDecision(), resp.GetPolicyIds(), tt.want, tt.by)
		}
	}
}

// Arguments that cannot be converted are a deny with the reason, never a silent skip.
func TestArgumentsThatCannotBeConverted(t *testing.T) {
	t.Parallel()
	svc := contextService(t, time.Date(2026, 1, 7, 12, 0, 0, 0, time.UTC))
	// The policies read force: what is wrong with it cannot be converted. (Members no policy
	// reads are stepped over, not converted.)
	deep := `{"force":` + strings.Repeat(`{"a":`, 20) + `1` + strings.Repeat(`}`, 20) + `}`
	many := `{"force":[` + strings.TrimSuffix(strings.Repeat(`1,`, 5000), ",") + `]}`
	for _, tt := range []struct{ name, args, want string }{
		{"too deep", deep, "nested deeper"},
		{"too many values", many, "more than 4096 values"},
		{"too large", `{"a":"` + strings.Repeat("x", 50<<10) + `"}`, "bytes, more than"},
		{"a number Cedar cannot hold", `{"force":1e400}`, "neither a 64-bit integer nor a decimal"},
		{"an unterminated string elsewhere", `{"text":"abc,"force":true}`, "not a JSON object"},
		{"not an object", `[1]`, "not a JSON object"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := decide(t, svc, subject("alice", "acme"), "tools/call", "files", "read", &policyv1.RequestContext{Arguments: []byte(tt.args)})
			if resp.GetDecision() != policyv1.Decision_DECISION_DENY || len(resp.GetErrors()) != 1 || !strings.Contains(resp.GetErrors()[0], tt.want) {
				t.Fatalf("%v errors %v, want a deny saying %q", resp.GetDecision(), resp.GetErrors(), tt.want)
			}
		})
	}
}

// The time is policysvc's clock; the source and the method reach conditions; a method the
// schema does not name is decided as the catch-all.
func TestContextTimeSourceAndCatchAll(t *testing.T) {
	t.Parallel()
	noon := contextService(t, time.Date(2026, 1, 7, 12, 0, 0, 0, time.UTC))
	night := contextService(t, time.Date(2026, 1, 7, 23, 0, 0, 0, time.UTC))
	bob := subject("bob", "globex")
	if d := decide(t, noon, bob, "tools/call", "search", "q", nil).GetDecision(); d != policyv1.Decision_DECISION_ALLOW {
		t.Errorf("globex at noon: %v", d)
	}
	if resp := decide(t, night, bob, "tools/call", "search", "q", nil); resp.GetDecision() != policyv1.Decision_DECISION_DENY || strings.Join(resp.GetPolicyIds(), ",") != "night-off" {
		t.Errorf("globex at night: %v by %v", resp.GetDecision(), resp.GetPolicyIds())
	}
	alice := subject("alice", "acme")
	if d := decide(t, noon, alice, "tools/list", "files", "", &policyv1.RequestContext{SourceAddress: "127.0.0.1"}).GetDecision(); d != policyv1.Decision_DECISION_ALLOW {
		t.Errorf("tools/list from loopback: %v", d)
	}
	if d := decide(t, noon, alice, "tools/list", "files", "", &policyv1.RequestContext{SourceAddress: "10.0.0.9"}).GetDecision(); d != policyv1.Decision_DECISION_DENY {
		t.Errorf("tools/list from elsewhere: %v", d)
	}
	if resp := decide(t, noon, alice, "experimental/ok", "files", "", nil); resp.GetDecision() != policyv1.Decision_DECISION_ALLOW || strings.Join(resp.GetPolicyIds(), ",") != "other-for-acme" {
		t.Errorf("a method the schema does not name, permitted as other: %v by %v", resp.GetDecision(), resp.GetPolicyIds())
	}
	if d := decide(t, noon, alice, "experimental/nope", "files", "", nil).GetDecision(); d != policyv1.Decision_DECISION_DENY {
		t.Errorf("another unnamed method: %v", d)
	}
}

// Arguments too large to send are a deny where a policy reads arguments, and nothing where
// none does (the hot path converts nothing it does not use).
func TestArgumentsTooLarge(t *testing.T) {
	t.Parallel()
	reads := contextService(t, time.Date(2026, 1, 7, 12, 0, 0, 0, time.UTC))
	resp := decide(t, reads, subject("alice", "acme"), "tools/call", "files", "read", &policyv1.RequestContext{ArgumentsTooLarge: true})
	if resp.GetDecision() != policyv1.Decision_DECISION_DENY || len(resp.GetErrors()) != 1 || !strings.Contains(resp.GetErrors()[0], "larger than the gateway sends") {
		t.Fatalf("a bundle that reads arguments: %v %v", resp.GetDecision(), resp.GetErrors())
	}
	plain := newService(t, policysvc.Config{}, nil) // testPolicies read no arguments
	resp = decide(t, plain, subject("alice", "acme"), "tools/call", "files", "read", &policyv1.RequestContext{ArgumentsTooLarge: true})
	if len(resp.GetErrors()) != 0 || resp.GetDecision() != policyv1.Decision_DECISION_ALLOW {
		t.Fatalf("a bundle that reads none: %v %v", resp.GetDecision(), resp.GetErrors())
	}
}

// A host method named like an admin action is the catch-all: a host cannot borrow the
// permits of the operator's admin actions.
func TestHostMethodNamedLikeAdmin(t *testing.T) {
	t.Parallel()
	dir := writeDir(t, map[string]string{"gatehouse.cedarschema": shippedSchema(t), "a.cedar": `
@id("admins-apply") permit (principal, action == Gatehouse::Action::"admin/policy.apply", resource);
`})
	svc := newService(t, policysvc.Config{PolicyDir: dir}, nil)
	if d := decide(t, svc, subject("alice", "acme"), "admin/policy.apply", "files", "", nil).GetDecision(); d != policyv1.Decision_DECISION_DENY {
		t.Fatalf("a host's admin/policy.apply: %v, want the catch-all's deny", d)
	}
}
