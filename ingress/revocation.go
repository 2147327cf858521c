package ingress

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
)

// Revocation: an API token revoked anywhere stops working on this replica within a moment,
// by a stream, not by the cache's ttl. The ingress subscribes to authsvc's WatchRevocations
// (authsvc watches its own token store: the ingress never reads authsvc's keys) and, for
// each revoked token, evicts its cached principals, ends the GET streams of its sessions on
// this replica and ends its sessions (found through the principal's session index, since a
// session records the token that created it). A session also answers only to the token that
// created it (resume), so a new token of the same principal cannot pick it up.
//
// When the stream breaks the cache is dropped and the ingress resubscribes with backoff,
// resuming after the last revision it received so that no revocation in between is missed.
// A stream silent for three heartbeats counts as broken. While it is down, answers are cached
// for at most the cache's ttl; after it has been down for longer than the ttl, every request
// is authenticated at authsvc until it is back.

// Auth is what the ingress asks of authsvc: *authsvc.Service itself in single-process mode,
// or its Connect client (RemoteAuth) in split mode. Errors are *connect.Error, except that
// FollowRevocations in this process returns authsvc's own.
type Auth interface {
	Authenticate(context.Context, *connect.Request[authv1.AuthenticateRequest]) (*connect.Response[authv1.AuthenticateResponse], error)
	ResourceMetadata(context.Context, *connect.Request[authv1.ResourceMetadataRequest]) (*connect.Response[authv1.ResourceMetadataResponse], error)
	// JWKS is the key set of the tokens minted for upstreams, published at
	// /.well-known/jwks.json (jwks.go).
	JWKS(context.Context, *connect.Request[authv1.JWKSRequest]) (*connect.Response[authv1.JWKSResponse], error)
	// FollowRevocations streams revoked tokens (WatchRevocations): emit gets each message,
	// the first once the watch is established, until ctx ends or the stream breaks.
	FollowRevocations(ctx context.Context, req *authv1.WatchRevocationsRequest, emit func(*authv1.WatchRevocationsResponse) error) error
}

// RemoteAuth adapts an authsvc Connect client to Auth.
func RemoteAuth(c authv1connect.AuthServiceClient) Auth { return remoteAuth{c} }

type remoteAuth struct {
	authv1connect.AuthServiceClient
}

func (r remoteAuth) FollowRevocations(ctx context.Context, req *authv1.WatchRevocationsRequest, emit func(*authv1.WatchRevocationsResponse) error) error {
	stream, err := r.WatchRevocations(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		if err := emit(stream.Msg()); err != nil {
			return err
		}
	}
	if err := stream.Err(); err != nil {
		return err
	}
	return errors.New("the revocation stream ended")
}

// Timing of the revocation stream.
const (
	// defaultRevocationHeartbeat is how often authsvc is asked to show the stream is alive;
	// three missed heartbeats end it.
	defaultRevocationHeartbeat = 2 * time.Second
	revocationBackoffMin       = 100 * time.Millisecond
	revocationBackoffMax       = 5 * time.Second
	// sessionEndQueue bounds the revoked tokens whose sessions wait to be ended; past it a
	// token's sessions are left to their idle timeout (they can no longer be used: requests
	// are authenticated, and a session answers only to the token that created it).
	sessionEndQueue = 4096
	// sessionEndTimeout bounds ending one token's sessions.
	sessionEndTimeout = 30 * time.Second
)

// FollowRevocations keeps this replica in step with authsvc's revocations until ctx ends:
// run it for the life of the service (split mode and `gatehouse up` do). Until it has
// subscribed, and whenever the subscription is broken, the cache behaves as described above.
func (s *Service) FollowRevocations(ctx context.Context) {
	queue := make(chan *authv1.RevokedToken, sessionEndQueue)
	go s.endRevokedSessions(ctx, queue)

	heartbeat := s.cfg.RevocationHeartbeat
	var after int64 // the revision to resume after; 0: from now
	backoff := revocationBackoffMin
	var lostAt time.Time // when the stream was last lost; zero before the first subscription
	uncachedLogged := false
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		// A stream silent for three heartbeats is taken for broken (a peer gone without
		// closing its connection says nothing).
		silent := time.AfterFunc(3*heartbeat, cancel)
		established := false
		err := s.deps.Auth.FollowRevocations(sctx, &authv1.WatchRevocationsRequest{AfterRevision: after, HeartbeatSeconds: int32(heartbeat / time.Second)},
			func(m *authv1.WatchRevocationsResponse) error {
				silent.Reset(3 * heartbeat)
				if !established {
					established = true
					s.auth.watchUp()
					backoff = revocationBackoffMin
					uncachedLogged = false
					if lostAt.IsZero() {
						s.logger.Info("revocation watch established", "revision", m.GetRevision())
					} else {
						s.logger.Info("revocation watch restored", "revision", m.GetRevision(), "down_for", s.now().Sub(lostAt).Round(time.Millisecond).String())
					}
				}
				if m.GetHistoryLost() {
					s.historyLost()
				}
				for _, r := range m.GetRevoked() {
					s.revoked(r, queue)
				}
				after = max(after, m.GetRevision())
				return nil
			})
		silent.Stop()
		cancel()
		if ctx.Err() != nil {
			return
		}
		if sctx.Err() != nil && err != nil {
			err = errors.New("no message for three heartbeats")
		}
		if s.auth.watchDown() {
			lostAt = s.now()
			s.logger.Warn("revocation watch broken: auth cache dropped; resubscribing", "err", err, "resume_after", after)
		} else {
			s.logger.Warn("revocation watch: subscribe failed; retrying", "err", err, "backoff", backoff.String())
		}
		if !uncachedLogged && s.auth.uncached() {
			uncachedLogged = true
			s.logger.Warn("revocation watch down for longer than the auth cache ttl: authenticating every request at authsvc until it is back", "ttl", s.cfg.AuthCacheTTL.String())
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, revocationBackoffMax)
	}
}

// revoked acts on one revoked token at once on this replica (cache, GET streams) and queues
// its sessions to be ended.
func (s *Service) revoked(r *authv1.RevokedToken, queue chan<- *authv1.RevokedToken) {
	id := r.GetTokenId()
	evicted := s.auth.revoke(id)
	streams := s.streams.endToken(id)
	queued := true
	select {
	case queue <- r:
	default:
		queued = false
	}
	level := slog.LevelInfo
	if !queued {
		level = slog.LevelWarn
	}
	s.logger.Log(context.Background(), level, "token revoked", "token_id", id, "principal", r.GetPrincipalId(), "tenant", r.GetTenant(),
		"cache_entries", evicted, "streams_ended", streams, "sessions_queued", queued)
}

// historyLost: revocations may have been missed (authsvc could not replay them), so every
// cached principal is dropped and every GET stream of an API token's session ends; those
// sessions stay usable only by a token that still authenticates.
func (s *Service) historyLost() {
	s.auth.drop()
	n := s.streams.endToken("")
	s.logger.Warn("revocations may have been missed: auth cache dropped, the GET streams of API tokens' sessions ended", "streams_ended", n)
}

// endRevokedSessions ends the sessions of revoked tokens, one token at a time, until ctx
// ends. Every replica does so for every revocation; ending a session twice is harmless, and
// only the replica whose End succeeded tells the bridge (the bridges also watch sessions).
func (s *Service) endRevokedSessions(ctx context.Context, queue <-chan *authv1.RevokedToken) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-queue:
			s.endTokenSessions(ctx, r)
		}
	}
}

func (s *Service) endTokenSessions(ctx context.Context, r *authv1.RevokedToken) {
	ctx, cancel := context.WithTimeout(ctx, sessionEndTimeout)
	defer cancel()
	recs, err := s.deps.Sessions.List(ctx, r.GetTenant(), r.GetPrincipalId())
	if err != nil {
		s.logger.Warn("revoked token: list its principal's sessions", "token_id", r.GetTokenId(), "err", err)
		return
	}
	for _, rec := range recs {
		if rec.TokenID != r.GetTokenId() {
			continue
		}
		err := s.deps.Sessions.End(ctx, rec.ID)
		s.streams.endSession(rec.ID)
		switch {
		case err == nil:
			s.logger.Info("session of a revoked token ended", "session", rec.ID, "token_id", rec.TokenID)
			s.deps.Bridge.EndSession(rec.ID)
		case !errors.Is(err, sessionstore.ErrNotFound):
			s.logger.Warn("end a revoked token's session", "session", rec.ID, "err", err)
		}
	}
}
