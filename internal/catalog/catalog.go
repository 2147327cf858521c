// Package catalog keeps a local snapshot of the server registry, fed by the registry's
// WatchServers stream, so that the hot path never calls the registry to route a request.
package catalog

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
)

// Catalog is a concurrency-safe snapshot of the registered servers.
type Catalog struct {
	mu      sync.RWMutex
	servers map[string]*registryv1.Server
	pins    map[string]serverPins
	ready   chan struct{}
	once    sync.Once
}

// New returns an empty catalog that is not ready until its first snapshot.
func New() *Catalog {
	return &Catalog{servers: map[string]*registryv1.Server{}, pins: map[string]serverPins{}, ready: make(chan struct{})}
}

// serverPins is one server's pins by tool name, with the etcd revision they were stored at.
// The map is never modified once published: a change replaces it.
type serverPins struct {
	rev   int64
	tools map[string]*registryv1.ToolPin
}

func indexPins(p *registryv1.ServerPins) serverPins {
	tools := make(map[string]*registryv1.ToolPin, len(p.GetTools()))
	for _, t := range p.GetTools() {
		tools[t.GetName()] = t
	}
	return serverPins{rev: p.GetRevision(), tools: tools}
}

// ToolPins returns the pins of a server's tools by name (nil when it has none). The map and
// its messages must not be modified.
func (c *Catalog) ToolPins(server string) map[string]*registryv1.ToolPin {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.pins[server].tools
}

// UpdatePins installs a server's pins as the registry answered a report or approval, unless
// the catalog already holds them at a later revision (the watch may have overtaken the
// answer), so that the next call sees the registry's decision without waiting for the watch.
func (c *Catalog) UpdatePins(p *registryv1.ServerPins) {
	if p == nil || p.GetServer() == "" {
		return
	}
	c.mu.Lock()
	if cur, ok := c.pins[p.GetServer()]; !ok || cur.rev < p.GetRevision() {
		c.pins[p.GetServer()] = indexPins(p)
	}
	c.mu.Unlock()
}

// Static returns a ready catalog holding servers, for tests and fixed wiring.
func Static(servers ...*registryv1.Server) *Catalog {
	c := New()
	c.apply(&registryv1.WatchServersResponse{Snapshot: true, Servers: servers})
	return c
}

// Server returns the named server. The returned message must not be modified.
func (c *Catalog) Server(name string) (*registryv1.Server, bool) {
	c.mu.RLock()
	s, ok := c.servers[name]
	c.mu.RUnlock()
	return s, ok
}

// Servers returns every server in configuration order (position, then name). The returned
// messages must not be modified.
func (c *Catalog) Servers() []*registryv1.Server {
	c.mu.RLock()
	out := make([]*registryv1.Server, 0, len(c.servers))
	for _, s := range c.servers {
		out = append(out, s)
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b *registryv1.Server) int {
		if d := cmp.Compare(a.GetPosition(), b.GetPosition()); d != 0 {
			return d
		}
		return strings.Compare(a.GetName(), b.GetName())
	})
	return out
}

// Ready is closed once the first snapshot has arrived.
func (c *Catalog) Ready() <-chan struct{} { return c.ready }

// WaitReady blocks until the first snapshot or ctx ends.
func (c *Catalog) WaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Catalog) apply(ev *registryv1.WatchServersResponse) {
	c.mu.Lock()
	if ev.GetSnapshot() {
		c.servers = make(map[string]*registryv1.Server, len(ev.GetServers()))
		c.pins = make(map[string]serverPins, len(ev.GetPins()))
	}
	for _, s := range ev.GetServers() {
		c.servers[s.GetName()] = s
	}
	for _, name := range ev.GetDeleted() {
		delete(c.servers, name)
	}
	for _, p := range ev.GetPins() {
		// A set UpdatePins installed from a later revision stays.
		if cur, ok := c.pins[p.GetServer()]; !ok || cur.rev <= p.GetRevision() || ev.GetSnapshot() {
			c.pins[p.GetServer()] = indexPins(p)
		}
	}
	for _, name := range ev.GetPinsDeleted() {
		delete(c.pins, name)
	}
	c.mu.Unlock()
	if ev.GetSnapshot() {
		c.once.Do(func() { close(c.ready) })
	}
}

// Follow keeps the catalog in step with the registry until ctx ends, reconnecting with
// backoff when the stream breaks. Every (re)connection starts with a full snapshot.
func (c *Catalog) Follow(ctx context.Context, client registryv1connect.RegistryServiceClient, logger *slog.Logger) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		stream, err := client.WatchServers(ctx, connect.NewRequest(&registryv1.WatchServersRequest{}))
		if err == nil {
			for stream.Receive() {
				c.apply(stream.Msg())
				backoff = 50 * time.Millisecond
			}
			err = stream.Err()
			_ = stream.Close()
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stream ended")
		}
		logger.Warn("registry watch broken; retrying", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// NameSeparator joins a server's prefix and a tool or prompt name on the aggregated endpoint.
const NameSeparator = "__"

// Prefix is the server's effective prefix on the aggregated endpoint: its own name unless
// the spec sets one ("" for none).
func Prefix(s *registryv1.Server) string {
	if s.Prefix != nil {
		return *s.Prefix
	}
	return s.GetName()
}
