package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/catalog"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
)

// Shadow replay (`gatehouse audit replay --policy DIR`): every recorded call policy decided
// is decided again by the candidate bundle, exactly as policysvc's Check would (policysvc.
// Evaluate, as `gatehouse policy test` uses it), on what its record kept: the principal
// (id, tenant, groups, kind), the method, the server and tool, the session, source and
// revision, at the time it was recorded. A call whose record keeps its arguments in full (its
// server's `audit: {arguments: full}`) is decided with them. Otherwise the record keeps a
// digest, or arguments with values masked that policy might have read: the call is decided
// without them, as if it had sent none, and when the candidate reads arguments the result says
// so (without_arguments), since a policy on arguments might have decided it otherwise. The
// servers' tenants are the catalogue's now (the
// gateway's registry, or --config offline): the bundle is judged against the catalogue it
// would meet. A record that did not keep what Cedar needs is reported as not replayable,
// never decided on a guess.

// shadowJudge decides recorded calls with a candidate bundle.
type shadowJudge struct {
	bundle  *cedarpolicy.Bundle
	servers policysvc.Catalog
}

func newShadowJudge(ctx context.Context, dir, configFile string, f *auditFlags, getenv func(string) string, stderr io.Writer) (*shadowJudge, error) {
	b, _, err := loadBundle(dir, stderr)
	if err != nil {
		return nil, err
	}
	var servers []*registryv1.Server
	if f.dataDir != "" {
		exe, _ := os.Executable()
		file, err := loadConfig(configFile, exe)
		if err != nil {
			return nil, fmt.Errorf("audit replay: %w", err)
		}
		servers = file.Servers
	} else {
		if configFile != "" {
			return nil, fmt.Errorf("audit replay: --config is for --data-dir; online, the gateway's registry names the servers")
		}
		base, hc, err := adminClient("audit replay", f.url, getenv, auditTimeout)
		if err != nil {
			return nil, err
		}
		resp, err := registryv1connect.NewRegistryServiceClient(hc, base).ListServers(ctx, connect.NewRequest(&registryv1.ListServersRequest{}))
		if err != nil {
			return nil, serversError("list (for audit replay)", f.url, err)
		}
		servers = resp.Msg.GetServers()
	}
	return &shadowJudge{bundle: b, servers: catalog.Static(servers...)}, nil
}

// shadowResult is one call the candidate decides differently, or cannot decide.
type shadowResult struct {
	Kind string `json:"kind"` // "changed" or "not_replayable"
	*replayedCall
	NewDecision      string   `json:"new_decision,omitempty"`
	NewPolicyIDs     []string `json:"new_policy_ids,omitempty"`
	NewBundleVersion string   `json:"new_bundle_version,omitempty"`
	// WithoutArguments: the candidate reads arguments, and the call had some, which the
	// record does not keep: it was decided as if it had none.
	WithoutArguments bool   `json:"without_arguments,omitempty"`
	Reason           string `json:"reason,omitempty"`
}

// judge decides c again; nil when the candidate decides it as it was.
func (j *shadowJudge) judge(c *replayedCall) *shadowResult {
	notReplayable := func(why string) *shadowResult {
		return &shadowResult{Kind: "not_replayable", replayedCall: c, Reason: why}
	}
	r := c.decided
	in := r.GetInput()
	switch {
	case in == nil || r.GetDecision() == auditv1.PolicyDecision_POLICY_DECISION_UNSPECIFIED:
		return notReplayable("the record does not keep the decision's input (written before it was kept)")
	case in.GetGroupsOmitted():
		return notReplayable("the principal had more groups than a record keeps")
	}
	req := &policyv1.CheckRequest{
		Subject:  &policyv1.Subject{Id: r.GetPrincipal(), Tenant: r.GetTenant(), Groups: in.GetGroups(), Kind: in.GetKind()},
		Action:   r.GetMethod(),
		Resource: &policyv1.Resource{Server: r.GetServer(), Name: r.GetTool()},
		Context: &policyv1.RequestContext{SourceAddress: in.GetSourceAddress(), SessionId: r.GetSessionId(),
			ProtocolVersion: in.GetProtocolVersion(), ArgumentsTooLarge: in.GetArgumentsTooLarge()},
	}
	full := fullArguments(r)
	if full {
		req.Context.Arguments = []byte(r.GetArguments())
	}
	if r.GetMethod() == "initialize" {
		// An initialize is decided before its session exists; its record names the session
		// it opened.
		req.Context.SessionId = ""
	}
	if _, ok := j.servers.Server(r.GetServer()); !ok {
		return notReplayable(fmt.Sprintf("server %q is not in the catalogue", r.GetServer()))
	}
	d, err := policysvc.Evaluate(j.bundle, j.servers, req, types.Record{}, r.GetTime().AsTime())
	if err != nil {
		return notReplayable(err.Error())
	}
	newDecision := "deny"
	if d.GetDecision() == policyv1.Decision_DECISION_ALLOW {
		newDecision = "allow"
	}
	old := "deny"
	if r.GetDecision() == auditv1.PolicyDecision_POLICY_DECISION_ALLOW {
		old = "allow"
	}
	if newDecision == old {
		return nil // decided alike (perhaps by other policies): the host would get the same
	}
	return &shadowResult{Kind: "changed", replayedCall: c, NewDecision: newDecision,
		NewPolicyIDs: append([]string{}, d.GetPolicyIds()...), NewBundleVersion: d.GetBundleVersion(),
		WithoutArguments: !full && j.bundle.ReadsArguments() && takesArguments(r.GetMethod()) && r.GetArgumentsDigest() != "" && !in.GetArgumentsTooLarge()}
}

// fullArguments says whether r keeps its call's arguments as sent: form full, and not over
// the bound (which keeps the form and drops the arguments).
func fullArguments(r *auditv1.Record) bool {
	return r.GetArgumentsForm() == auditsvc.ArgumentsFull && r.GetArguments() != "" && takesArguments(r.GetMethod())
}

// takesArguments says whether a method's arguments reach policy (context.arguments).
func takesArguments(method string) bool { return method == "tools/call" || method == "prompts/get" }

// report decides every call policy decided, prints the changes and the calls it could not
// decide, and a summary.
func (j *shadowJudge) report(w io.Writer, calls []*replayedCall, asJSON bool) error {
	var changed, unreplayable []*shadowResult
	decided := 0
	for _, c := range calls {
		if c.decided == nil {
			continue // policy never decided it (refused before: quota, policy unavailable)
		}
		decided++
		switch res := j.judge(c); {
		case res == nil:
		case res.Kind == "changed":
			changed = append(changed, res)
		default:
			unreplayable = append(unreplayable, res)
		}
	}
	if asJSON {
		enc := json.NewEncoder(w)
		for _, r := range append(changed, unreplayable...) {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	fmt.Fprintf(w, "candidate bundle %s: %d recorded decisions, %d decided differently, %d not replayable\n",
		j.bundle.Version(), decided, len(changed), len(unreplayable))
	if len(changed) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\nTIME\tSESSION\tPRINCIPAL\tMETHOD\tSERVER\tTOOL\tWAS\tBY\tNOW\tBY")
		without := 0
		for _, r := range changed {
			now := r.NewDecision
			if r.WithoutArguments {
				now += "*"
				without++
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Format(time.RFC3339Nano), orDash(r.SessionID), orDash(r.Principal),
				r.Method, r.Server, orDash(r.Tool), r.Decision, policyList(r.PolicyIDs), now, policyList(r.NewPolicyIDs))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if without > 0 {
			fmt.Fprintf(w, "* decided without the call's arguments, which the log keeps as a digest only (or redacted): the candidate reads arguments and might decide the call otherwise (%d calls)\n", without)
		}
	}
	if len(unreplayable) > 0 {
		fmt.Fprintln(w, "\nnot replayable:")
		for _, r := range unreplayable {
			fmt.Fprintf(w, "  %s %s %s %s: %s\n", r.Time.Format(time.RFC3339Nano), r.Method, r.Server, orDash(r.Tool), strings.TrimSpace(r.Reason))
		}
	}
	return nil
}
