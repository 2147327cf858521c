// Package etcdfollow is the one loop that keeps a service's view of an etcd prefix in step:
// read it, watch it from the revision read, resume a broken watch where it stopped, read it
// afresh after a compaction, with backoff between failures, until the context ends.
package etcdfollow

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Backoff bounds between failed reads or broken watches.
const (
	MinBackoff = 50 * time.Millisecond
	MaxBackoff = 5 * time.Second
)

// Funcs are what a follower does.
type Funcs struct {
	// Load reads the whole state and returns the revision it read at.
	Load func(ctx context.Context) (int64, error)
	// Watch applies changes after rev until the watch ends, and returns the last revision it
	// applied (rev when none) and why it ended (rpctypes.ErrCompacted when rev is gone).
	Watch func(ctx context.Context, rev int64) (int64, error)
}

// Follow runs f until ctx ends. rev is the revision already loaded (0: load first). what
// names the state in the log lines.
func Follow(ctx context.Context, f Funcs, rev int64, logger *slog.Logger, what string) {
	backoff := MinBackoff
	for ctx.Err() == nil {
		if rev == 0 {
			r, err := f.Load(ctx)
			if err != nil {
				if ctx.Err() == nil {
					logger.Warn("reading "+what+" failed; retrying", "err", err, "backoff", backoff)
				}
				backoff = Sleep(ctx, backoff)
				continue
			}
			rev, backoff = r, MinBackoff
		}
		last, err := f.Watch(ctx, rev)
		if last > rev {
			rev, backoff = last, MinBackoff
		}
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, rpctypes.ErrCompacted):
			logger.Info(what+" watch compacted; reading it again", "rev", rev)
			rev = 0
			continue
		}
		logger.Warn(what+" watch broken; resuming", "err", err, "rev", rev, "backoff", backoff)
		backoff = Sleep(ctx, backoff)
	}
}

// Sleep waits d or until ctx ends, and returns the next backoff.
func Sleep(ctx context.Context, d time.Duration) time.Duration {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return min(2*d, MaxBackoff)
}
