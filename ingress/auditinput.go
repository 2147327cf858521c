package ingress

import (
	"unicode/utf8"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

// The most groups, and the longest group, a record keeps: auditsvc refuses a record beyond
// (its maxInputGroups and maxIDBytes), and a call whose record is refused is refused.
const (
	maxAuditGroups     = 64
	maxAuditGroupBytes = 512
)

// decisionInput is what policy decides a call on beyond the record's own fields, kept in
// its audit record so that a candidate bundle can decide the call again (gatehouse audit
// replay --policy). A principal with more or longer groups than a record keeps has none
// recorded, and the record says so: such a call is reported as not replayable, never
// re-decided on a part of its groups.
func decisionInput(c *call) *auditv1.DecisionInput {
	in := principalInput(c.principal, c.source, c.revision)
	in.ArgumentsTooLarge = len(c.msg.Arguments) > maxPolicyArguments
	return in
}

// principalInput is the decision input of a request by p from source in revision.
func principalInput(p *authv1.Principal, source, revision string) *auditv1.DecisionInput {
	in := &auditv1.DecisionInput{Kind: rpcserver.KindName(p.GetKind()), SourceAddress: source, ProtocolVersion: revision}
	groups := p.GetGroups()
	if len(groups) > maxAuditGroups {
		in.GroupsOmitted = true
		return in
	}
	for _, g := range groups {
		if len(g) > maxAuditGroupBytes || !utf8.ValidString(g) {
			in.GroupsOmitted = true
			return in
		}
	}
	in.Groups = groups
	return in
}

// decisionOf is policy's decision as the record keeps it.
func decisionOf(d *policyv1.CheckResponse) auditv1.PolicyDecision {
	if d.GetDecision() == policyv1.Decision_DECISION_ALLOW {
		return auditv1.PolicyDecision_POLICY_DECISION_ALLOW
	}
	return auditv1.PolicyDecision_POLICY_DECISION_DENY
}
