package auditsvc

import (
	"context"
	"fmt"
	"time"

	"github.com/gatehouse-mcp/gatehouse/auditsvc/alerts"
	"github.com/gatehouse-mcp/gatehouse/auditsvc/query"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
)

// followRetry is how long the alerts' follower waits before reading the log again after a
// read failed (a damaged line, a file gone): it goes on from the log's end.
const followRetry = time.Second

// startAlerts makes the alert engine of cfg's --alert-config (none without one, or when the
// file has no alerts: section) and follows the committed records into it, from the log's
// end: it sees every record committed from now, whoever appended it, and reads them as Tail
// does, away from the writer and the call path.
func (s *Service) startAlerts(path string, o options) error {
	if path == "" {
		return nil
	}
	cfg, err := alerts.ReadFile(path)
	if err != nil || cfg == nil {
		return err
	}
	e, err := alerts.New(cfg, alerts.Options{Logger: s.logger.With("component", "alerts"), Registerer: o.metrics})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	// The end is taken now, before New returns: the first appends are not missed.
	fromEnd := func() (query.Position, error) { return s.reads.end(ctx) }
	pos, err := fromEnd()
	if err != nil {
		cancel()
		e.Close(context.Background())
		return fmt.Errorf("alerts: find the log's end: %w", err)
	}
	s.alerts = e
	s.alertsDone = make(chan struct{})
	go func() {
		<-s.reads.closing
		cancel()
	}()
	go func() {
		defer close(s.alertsDone)
		for ctx.Err() == nil {
			err := s.reads.engine.Follow(ctx, nil, pos, s.reads.wait, func(entries []*auditv1.Entry) error {
				for _, en := range entries {
					e.Observe(en.GetRecord())
				}
				return nil
			})
			if ctx.Err() != nil {
				return
			}
			s.logger.Error("alerts: reading the committed records failed; going on from the log's end", "err", err)
			select {
			case <-time.After(followRetry):
			case <-ctx.Done():
			}
			if p, err := fromEnd(); err == nil {
				pos = p
			} // else: from where it was, next time
		}
	}()
	return nil
}

// stopAlerts stops the follower and the webhook's sender (the log is closing).
func (s *Service) stopAlerts(ctx context.Context) {
	if s.alerts == nil {
		return
	}
	<-s.alertsDone
	s.alerts.Close(ctx)
}
