package authsvc

import (
	"context"
	"log/slog"

	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"go.opentelemetry.io/otel/trace"
)

// tracerScope names authsvc's spans' instrumentation scope.
const tracerScope = "github.com/gatehouse-mcp/gatehouse/authsvc"

// endAuthenticate ends an Authenticate's span with who was authenticated (never the
// credential), and logs it at debug level with the call's trace id.
func (s *Service) endAuthenticate(ctx context.Context, span trace.Span, server string, p *authv1.Principal, err error) {
	outcome := "authenticated"
	if err != nil {
		outcome = "refused"
	}
	if span.IsRecording() {
		span.SetAttributes(
			telemetry.AttrServer.String(server),
			telemetry.AttrTenant.String(p.GetTenant()),
			telemetry.AttrPrincipal.String(p.GetId()),
			telemetry.AttrOutcome.String(outcome),
		)
	}
	telemetry.End(span, err)
	if s.logger.Enabled(ctx, slog.LevelDebug) {
		s.logger.DebugContext(ctx, "authenticate", "server", server, "principal", p.GetId(), "tenant", p.GetTenant(), "outcome", outcome)
	}
}
