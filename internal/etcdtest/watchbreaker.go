package etcdtest

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchBreaker is an etcd client whose watches a test can break, as a network failure or an
// etcd restart would, and whose next watches it can hold while it changes (and compacts)
// etcd meanwhile.
type WatchBreaker struct {
	*clientv3.Client
	mu   sync.Mutex
	brk  chan struct{} // closed to break the running watches
	hold chan struct{} // when not nil, a new watch waits until it is closed
}

// NewWatchBreaker wraps c.
func NewWatchBreaker(c *clientv3.Client) *WatchBreaker {
	return &WatchBreaker{Client: c, brk: make(chan struct{})}
}

// Watch is c's Watch, ended early by BreakAndHold and, while held, started only on release.
func (w *WatchBreaker) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	w.mu.Lock()
	brk, hold := w.brk, w.hold
	w.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
		}
	}
	inner := w.Client.Watch(ctx, key, opts...)
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		for {
			select {
			case wr, ok := <-inner:
				if !ok {
					return
				}
				select {
				case out <- wr:
				case <-brk:
					return
				}
			case <-brk:
				return
			}
		}
	}()
	return out
}

// BreakAndHold ends the running watches; watches started from now wait until release is
// called.
func (w *WatchBreaker) BreakAndHold() (release func()) {
	w.mu.Lock()
	old, hold := w.brk, make(chan struct{})
	w.brk, w.hold = make(chan struct{}), hold
	w.mu.Unlock()
	close(old)
	return func() {
		w.mu.Lock()
		w.hold = nil
		w.mu.Unlock()
		close(hold)
	}
}
