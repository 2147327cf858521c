package ingress

import (
	"context"
	"encoding/json"
	"fmt"

	"connectrpc.com/connect"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonnav"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
)

// Discovery equals authorization: a list an upstream answers shows the host only the items a
// call would be allowed on. The ingress asks policysvc's Filter for the whole list in one
// round trip (per maxFilterNames items) and rewrites the result without the others.

// listKinds are the list methods whose answers are filtered: the member of the result that
// holds the items, the member of an item that names it, and the action a call on it is.
var listKinds = map[string]struct{ field, key, action string }{
	"tools/list":     {"tools", "name", "tools/call"},
	"prompts/list":   {"prompts", "name", "prompts/get"},
	"resources/list": {"resources", "uri", "resources/read"},
}

// maxFilterNames is the most names of one Filter request (policysvc's MaxFilterNames).
const maxFilterNames = 4096

// filterList returns the upstream's answer to a list method with only the items the caller
// may use. An answer without a result (an error) or not a list is returned unchanged; one
// whose items cannot be read is an error (nothing unfiltered reaches the host).
func (s *Service) filterList(ctx context.Context, c *call, final []byte) ([]byte, error) {
	kind, ok := listKinds[c.msg.Method]
	if !ok {
		return final, nil
	}
	rs, re, ok, err := jsonnav.Member(final, "result")
	if err != nil {
		return nil, fmt.Errorf("read the upstream's %s answer: %w", c.msg.Method, err)
	}
	if !ok {
		return final, nil // an error response
	}
	result := final[rs:re]
	ls, le, ok, err := jsonnav.Member(result, kind.field)
	if err != nil {
		return nil, fmt.Errorf("read the upstream's %s result: %w", c.msg.Method, err)
	}
	if !ok {
		return final, nil // nothing listed
	}
	list := result[ls:le]
	var items []json.RawMessage
	if err := jsonnav.Elements(list, func(a, b int) { items = append(items, list[a:b]) }); err != nil {
		return nil, fmt.Errorf("read the upstream's %s: %w", kind.field, err)
	}
	items = s.keepPinnedItems(ctx, c, items)
	names := make([]string, len(items))
	for i, it := range items {
		start, end, ok, err := jsonnav.Member(it, kind.key)
		if err != nil {
			return nil, fmt.Errorf("read an item of %s: %w", kind.field, err)
		}
		if ok {
			// An item without a name cannot be decided: it is not listed.
			names[i], _ = jsonnav.StringOf(it[start:end])
		}
	}
	if kind.action == telemetry.MethodToolsCall {
		s.metrics.Listed(c.server, names) // the only tool names metrics label (metrics.go)
	}
	kept := make([][]byte, 0, len(items))
	for start := 0; start < len(items); start += maxFilterNames {
		end := min(start+maxFilterNames, len(items))
		resp, err := s.deps.Policy.Filter(ctx, connect.NewRequest(&policyv1.FilterRequest{
			Subject: subjectOf(c.principal), Action: kind.action, Server: c.server, Names: names[start:end],
			Context: &policyv1.RequestContext{SourceAddress: c.source, SessionId: c.session.ID, ProtocolVersion: c.revision},
		}))
		if err != nil {
			return nil, err
		}
		for i, allowed := range resp.Msg.GetAllowed() {
			if allowed && start+i < end && names[start+i] != "" {
				kept = append(kept, items[start+i])
			}
		}
	}
	// Only the list's bytes change: the rest of the answer is forwarded as the upstream wrote it.
	return jsonnav.ReplaceRange(final, rs+ls, rs+le, jsonnav.JoinArray(kept)), nil
}
