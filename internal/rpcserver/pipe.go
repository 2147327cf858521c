package rpcserver

import (
	"context"
	"errors"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"net"
	"net/http"
	"sync"
)

// PipeListener is a net.Listener whose connections are in-memory pipes opened by its
// DialContext: an http.Server on it serves clients of the same process without a socket.
// Single-process mode uses it for the services' own RPCs, so that they neither depend on nor
// pass through the public listener (which may require TLS and client certificates of hosts).
type PipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// NewPipeListener returns an open PipeListener.
func NewPipeListener() *PipeListener {
	return &PipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

var errPipeClosed = errors.New("pipe listener closed")

// Accept waits for the next DialContext.
func (l *PipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close makes Accept and DialContext fail; connections already made stay open.
func (l *PipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr is a placeholder address.
func (l *PipeListener) Addr() net.Addr { return pipeAddr{} }

// DialContext opens a connection to the listener's server, whatever the address.
func (l *PipeListener) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		client.Close()
		server.Close()
		return nil, errPipeClosed
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	}
}

// Client returns an h2c client whose every connection is a pipe to the listener.
func (l *PipeListener) Client() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: telemetry.Transport(&http.Transport{DialContext: l.DialContext, Protocols: p, MaxIdleConnsPerHost: 4})}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-process" }
