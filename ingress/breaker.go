package ingress

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"
	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
)

// A server's circuit breaker lives in the bridge, which refuses a call to a failing server
// without reaching it: UNAVAILABLE with a bridgev1.BreakerOpen detail (the server, the wait).
// The host gets errBreakerOpen, its message naming the server and when calls are let through
// again, and Retry-After with the wait in seconds: a 503 where the refusal is answered at the
// HTTP level (an initialize, a notification), a 200 carrying the JSON-RPC error for a call
// (as every call's refusal is). The call's audit record is FAILED, naming the breaker (see
// ending.outcome); the breaker's own transitions are audited by the bridge.

// maxBreakerWait bounds the wait the host is told (the bridge's longest cool-down).
const maxBreakerWait = time.Hour

// breakerOpen is the refusal of a breaker's error: the row with the server and the retry
// time, or nil when err is not a breaker's refusal.
func breakerOpen(err error) *Error {
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeUnavailable {
		return nil
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		bo, ok := v.(*bridgev1.BreakerOpen)
		if derr != nil || !ok {
			continue
		}
		wait := time.Second
		if ra := bo.GetRetryAfter(); ra.CheckValid() == nil {
			wait = min(max(ra.AsDuration(), 0), maxBreakerWait)
		}
		// Whole seconds, rounded up: a host that waits that long finds the breaker half-open.
		secs := max(int64((wait+time.Second-1)/time.Second), 1)
		e := *errBreakerOpen
		e.Retry = strconv.FormatInt(secs, 10)
		// The time, in whole seconds too, rounded up: RFC 3339 without fractions would
		// otherwise name a moment before the breaker admits probes.
		until := time.Now().Add(wait)
		if t := until.Truncate(time.Second); t.Before(until) {
			until = t.Add(time.Second)
		}
		at := until.UTC().Format(time.RFC3339)
		if server := bo.GetServer(); ident.ValidServerName(server) {
			e.Message = fmt.Sprintf("%s: server %q is failing; calls to it are refused until %s", errBreakerOpen.Message, server, at)
		} else {
			e.Message = fmt.Sprintf("%s: the server is failing; calls to it are refused until %s", errBreakerOpen.Message, at)
		}
		return &e
	}
	return nil
}
