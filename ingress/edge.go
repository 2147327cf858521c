package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net"
	"net/http"
	"slices"
	"strings"

	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/sessionstore"
)

// The edge of the Streamable HTTP room: everything decided from the request line and headers
// alone, before any body is read. A refusal here closes the connection (refuse), so a body the
// host is still sending, or never sends, holds nothing.

const (
	headerSession  = "Mcp-Session-Id"
	headerRevision = "MCP-Protocol-Version"
)

// exchange is one HTTP request on an MCP endpoint, as it moves through the rooms.
type exchange struct {
	w       http.ResponseWriter
	r       *http.Request
	traceID string
	server  string // "" on the aggregated endpoint
	// aggregated: the request came to /mcp, one endpoint for every server the caller may use
	// (aggregate.go).
	aggregated bool
	revision   string // the MCP-Protocol-Version header, "" when absent
	principal  *authv1.Principal
	session    sessionstore.Record // zero until the session is known
	bodyRead   bool
	// subject is the host's own token, kept only for a server that exchanges it for the
	// upstream's (identity.go); "" otherwise.
	subject string
}

func (s *Service) serveMCP(w http.ResponseWriter, r *http.Request, aggregated bool) {
	r, span, traceID := startExchange(r, r.PathValue("name"))
	defer span.End()
	x := &exchange{w: w, r: r, traceID: traceID, server: r.PathValue("name"), aggregated: aggregated, revision: r.Header.Get(headerRevision)}
	if !s.ready.Load() {
		s.refuse(x, nil, errNotReady, nil)
		return
	}
	if e := s.guard.check(r); e != nil {
		s.refuse(x, nil, e, nil)
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		// The guard admitted this origin: let browser hosts on it read the answer and the
		// session header, and answer their preflights.
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", "Mcp-Session-Id, WWW-Authenticate")
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	if r.Header.Get("Last-Event-ID") != "" {
		// The gateway gives its events no ids, so any Last-Event-ID names a stream it never
		// served: resuming it would replay another stream's messages or none.
		s.refuse(x, nil, errLastEventID, nil)
		return
	}
	var room func(*exchange)
	switch r.Method {
	case http.MethodPost:
		if e := s.postHeaders(r); e != nil {
			s.refuse(x, nil, e, nil)
			return
		}
		room = s.post
	case http.MethodGet:
		if !accepts(r, "text/event-stream") {
			s.refuse(x, nil, errStreamAccept, nil)
			return
		}
		room = s.listen
	case http.MethodDelete:
		room = s.end
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		s.refuse(x, nil, errMethodNotAllowed, nil)
		return
	}
	if !s.admit(x) {
		return
	}
	// POST may open a session (initialize); GET and DELETE need one.
	if e, cause := s.resume(x, r.Method != http.MethodPost); e != nil {
		s.refuse(x, nil, e, cause)
		return
	}
	// The one revision check: a revision the gateway speaks, or the one this session
	// negotiated with its upstream (passed through unchanged, it may be older).
	if !revisionAccepted(x.revision, x.session.ProtocolVersion) {
		s.refuse(x, nil, errBadRevision, nil)
		return
	}
	if e := s.bindSubject(x); e != nil {
		s.refuse(x, nil, e, nil)
		return
	}
	room(x)
}

// revisionAccepted reports whether the MCP-Protocol-Version header (v, "" when absent) is
// acceptable on a session that negotiated negotiated ("" when there is no session yet).
func revisionAccepted(v, negotiated string) bool {
	return v == "" || slices.Contains(Supported, v) || (negotiated != "" && v == negotiated)
}

// postHeaders checks what a POST declares about its body before the body is read.
func (s *Service) postHeaders(r *http.Request) *Error {
	if r.ContentLength > s.maxBody {
		return errBodyTooLarge
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" { // the common form needs no parsing
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return errMediaType
		}
	}
	if !accepts(r, "application/json") || !accepts(r, "text/event-stream") {
		return errNotAcceptable
	}
	return nil
}

// errThrottledAuth ends a shared authentication whose leader was throttled.
var errThrottledAuth = errors.New("authentication throttled")

// admit authenticates the host. It answers the host itself and returns false when the
// request must stop. Failed authentications are throttled per source address: past the
// bucket the host gets 429 without authsvc being asked.
func (s *Service) admit(x *exchange) bool {
	r := x.r
	if len(r.Header.Values("Authorization")) > 1 {
		s.refuse(x, nil, errTwoCredentials, nil)
		return false
	}
	credential, ok := bearer(r)
	if !ok {
		addr := remoteIP(r)
		if wait, allowed := s.limiter.allow(addr); !allowed {
			x.w.Header().Set("Retry-After", wait)
			s.refuse(x, nil, errThrottled, nil)
			return false
		}
		s.authFailed(x, addr, errMalformedAuth, s.challenge(r.Context(), x.server, "invalid_request", ""))
		return false
	}
	// Without a bearer token, a verified client certificate is the credential: cached by
	// its leaf under a key of its own kind, which no bearer token's key can equal.
	cert := clientCertificate(r)
	key := cacheKey(credBearer, credential, x.server)
	if credential == "" && cert != nil {
		key = cacheKey(credCertificate, string(r.TLS.VerifiedChains[0][0].Raw), x.server)
	} else {
		cert = nil
	}
	if p, hit := s.auth.cached(key); hit {
		x.principal = p
		return true
	}
	addr := remoteIP(r) // the throttle's key: not needed by a cached credential
	// Concurrent requests with one credential share one authentication: only its leader
	// spends a throttle token, so N hosts' first requests with a valid token are not throttled
	// as N attempts, while each distinct guess still costs one.
	flight, lead := s.auth.join(key)
	var p *authv1.Principal
	var err error
	if lead {
		if wait, allowed := s.limiter.allow(addr); !allowed {
			s.auth.land(key, flight, nil, errThrottledAuth)
			x.w.Header().Set("Retry-After", wait)
			s.refuse(x, nil, errThrottled, nil)
			return false
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), authFlightTimeout)
		p, err = s.auth.authenticate(actx, key, &authv1.AuthenticateRequest{Credential: credential, Server: x.server, ClientCertificate: cert})
		cancel()
		s.auth.land(key, flight, p, err)
	} else {
		p, err = flight.wait(r.Context())
		if errors.Is(err, errThrottledAuth) {
			// The request leading this credential's authentication was throttled.
			x.w.Header().Set("Retry-After", "1")
			s.refuse(x, nil, errThrottled, nil)
			return false
		}
	}
	if err != nil {
		e := fromAuth(err)
		switch e.Status {
		case http.StatusUnauthorized:
			// No credential gets the bare challenge (RFC 6750 3.1); a refused one says why.
			code, why := "", ""
			switch {
			case credential != "":
				code, why = "invalid_token", message(err)
			case cert != nil:
				why = message(err) // a certificate is no bearer token: no RFC 6750 error
			}
			s.authFailed(x, addr, e, s.challenge(r.Context(), x.server, code, why))
		case http.StatusForbidden:
			// A valid token without a scope its issuer requires: not a guess, no throttle.
			if lead {
				s.limiter.refund(addr)
			}
			x.w.Header().Set("WWW-Authenticate", s.challenge(r.Context(), x.server, "insufficient_scope", message(err)))
			s.refuse(x, nil, e, nil)
		default:
			if lead {
				s.limiter.refund(addr) // not the host's failure
			}
			s.refuse(x, nil, e, err)
		}
		return false
	}
	if lead {
		s.limiter.refund(addr)
	}
	x.principal = p
	// Whether the server exists is not checked here: requests other than initialize need a
	// session, which is bound to its server, and initialize asks policy. An unknown server
	// and one the caller may not use are answered alike, so neither can be discovered.
	return true
}

// authFailed answers a failed authentication, whose throttle token (reserved by allow, by the
// request that led the authentication) stays spent, and logs at most one line per address
// per minute, with the count of lines suppressed.
func (s *Service) authFailed(x *exchange, addr string, e *Error, challenge string) {
	if logNow, suppressed := s.limiter.fail(addr); logNow {
		s.logger.Info("authentication failed", "addr", addr, "server", x.server, "trace_id", x.traceID, "error", e.Name, "suppressed", suppressed)
	}
	x.w.Header().Set("WWW-Authenticate", challenge)
	s.answerRefusal(x, nil, e)
}

// sourceAddress is the host's IP address, as policy conditions see it (context.source).
func sourceAddress(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// remoteIP is the throttle's key: the peer's IPv4 address, or its IPv6 /64 (one host
// commonly holds a whole /64).
func remoteIP(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		h = r.RemoteAddr
	}
	ip := net.ParseIP(h)
	if ip == nil || ip.To4() != nil {
		return h
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// bearer extracts the bearer token; ok is false for another scheme or an oversized value.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", true
	}
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || len(token) > maxCredential {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// accepts reports whether the Accept header admits the media type.
func accepts(r *http.Request, mediaType string) bool {
	major, _, _ := strings.Cut(mediaType, "/")
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt := strings.TrimSpace(part)
			if !bareType(mt) { // a bare type is its own parse (mime.ParseMediaType allocates its parameters)
				var err error
				if mt, _, err = mime.ParseMediaType(mt); err != nil {
					continue
				}
			}
			if mt == mediaType || mt == "*/*" || mt == major+"/*" {
				return true
			}
		}
	}
	return false
}

// bareType reports whether v is a media type without parameters in the form
// mime.ParseMediaType returns it (lower case): then v is its own parsed type.
func bareType(v string) bool {
	typ, sub, ok := strings.Cut(v, "/")
	return ok && lowerToken(typ) && lowerToken(sub)
}

// lowerToken reports whether s is an RFC 2045 token without upper-case letters.
func lowerToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || 'A' <= c && c <= 'Z' || strings.IndexByte(`()<>@,;:\"/[]?=`, c) >= 0 {
			return false
		}
	}
	return s != ""
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
