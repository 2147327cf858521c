package rpcserver

import (
	"context"
	"net/http"
	"time"
)

type responseControllerKey struct{}

// WithResponseController serves h with the request's http.ResponseController in its context
// (ResponseControllerFrom): a streaming handler can then bound each write, so that a client
// that stops reading frees the handler instead of blocking it in a write for good.
func WithResponseController(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), responseControllerKey{}, rc)))
	})
}

// ResponseControllerFrom is the response controller WithResponseController put in ctx, nil
// if none.
func ResponseControllerFrom(ctx context.Context) *http.ResponseController {
	rc, _ := ctx.Value(responseControllerKey{}).(*http.ResponseController)
	return rc
}

// SendWithin runs send (one write of a stream) with a write deadline of d on the response of
// ctx, when the connection supports one (an in-process pipe may not: send then runs
// unbounded), and clears the deadline after. A write that does not complete in d fails, and
// with it the stream.
func SendWithin(ctx context.Context, d time.Duration, send func() error) error {
	rc := ResponseControllerFrom(ctx)
	if rc == nil || rc.SetWriteDeadline(time.Now().Add(d)) != nil {
		return send()
	}
	err := send()
	_ = rc.SetWriteDeadline(time.Time{})
	return err
}
