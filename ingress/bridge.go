package ingress

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1/bridgev1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// Bridge is how the ingress reaches upstreams: bridgesvc itself in single-process mode, or
// its Connect client (RemoteBridge) in split mode. Errors are *connect.Error.
type Bridge interface {
	// Deliver sends one host message upstream; emit gets each message that belongs to it, the
	// response last (marked final).
	Deliver(ctx context.Context, req *bridgev1.SendRequest, emit func(*bridgev1.SendResponse) error) error
	// Subscribe streams the session's messages that belong to no request: ready is called
	// once the stream is open, then emit for each message, until the session or ctx ends.
	Subscribe(ctx context.Context, req *bridgev1.ListenRequest, ready func() error, emit func(*bridgev1.ListenResponse) error) error
	// EndSession ends every upstream of the session and returns when they are gone.
	EndSession(id string)
}

// parsedDeliverer is a Bridge in this process (*bridgesvc.Service) that can take the
// ingress's reading of a message along with it, instead of reading the message again.
type parsedDeliverer interface {
	DeliverParsed(ctx context.Context, req *bridgev1.SendRequest, m *jsonrpc.Message, emit func(*bridgev1.SendResponse) error) error
}

// deliver is Bridge.Deliver of req, whose Message is m.Raw: one scan of the message per hop
// when the bridge is in this process. A remote bridge reads it again on its side of the
// trust boundary.
func (s *Service) deliver(ctx context.Context, req *bridgev1.SendRequest, m *jsonrpc.Message, emit func(*bridgev1.SendResponse) error) error {
	if d, ok := s.deps.Bridge.(parsedDeliverer); ok {
		return d.DeliverParsed(ctx, req, m, emit)
	}
	return s.deps.Bridge.Deliver(ctx, req, emit)
}

// RemoteBridge adapts a bridgesvc Connect client to Bridge.
func RemoteBridge(c bridgev1connect.BridgeServiceClient, logger *slog.Logger) Bridge {
	return remoteBridge{c: c, logger: logger}
}

type remoteBridge struct {
	c      bridgev1connect.BridgeServiceClient
	logger *slog.Logger
}

func (r remoteBridge) Deliver(ctx context.Context, req *bridgev1.SendRequest, emit func(*bridgev1.SendResponse) error) error {
	stream, err := r.c.Send(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		if err := emit(stream.Msg()); err != nil {
			return err
		}
	}
	return stream.Err()
}

func (r remoteBridge) Subscribe(ctx context.Context, req *bridgev1.ListenRequest, ready func() error, emit func(*bridgev1.ListenResponse) error) error {
	stream, err := r.c.Listen(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	defer stream.Close()
	if err := ready(); err != nil {
		return err
	}
	for stream.Receive() {
		if err := emit(stream.Msg()); err != nil {
			return err
		}
	}
	return stream.Err()
}

func (r remoteBridge) EndSession(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.c.CloseSession(ctx, connect.NewRequest(&bridgev1.CloseSessionRequest{SessionId: id})); err != nil {
		r.logger.Warn("close upstreams", "session", id, "err", err)
	}
}
