package ingress

// Upstream identity at the edge: the host's own credential never goes upstream, except to
// the bridge for a server whose identity mode is token-exchange, which swaps it at the
// upstream's authorization server for a token meant for that upstream (RFC 8693). The ingress
// knows the raw credential only while it serves the request that carried it: it hands it to
// the bridge with that request's messages (never storing or logging it, never in the session
// record), and only when the server exchanges it.

// principalAuthOIDC is the "auth" attribute authsvc gives a principal it authenticated with
// an OpenID Connect JWT.
const principalAuthOIDC = "oidc"

// bindSubject keeps the host's bearer token on the exchange when its server exchanges it.
// Such a server acts with the user's own identity, so a host that authenticated otherwise
// (an API token, a client certificate, anonymously) is refused.
func (s *Service) bindSubject(x *exchange) *Error {
	if x.aggregated {
		// Kept for the exchanging servers among the session's (sendRequest gives it to no
		// other); a host that cannot give one is refused by those servers' calls only.
		if token, ok := bearer(x.r); ok && token != "" && x.principal.GetAttributes()["auth"] == principalAuthOIDC {
			x.subject = token
		}
		return nil
	}
	srv, ok := s.deps.Catalog.Server(x.server)
	if !ok || srv.GetIdentity().GetTokenExchange() == nil {
		return nil
	}
	token, ok := bearer(x.r)
	if !ok || token == "" || x.principal.GetAttributes()["auth"] != principalAuthOIDC {
		return errNeedsUserToken
	}
	x.subject = token
	return nil
}
