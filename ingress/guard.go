package ingress

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// guard is the DNS-rebinding defence: the Host header must name this gateway, and a browser's
// Origin, when sent, must be one the operator allows.
type guard struct {
	hosts   map[string]bool
	origins map[string]bool
}

func newGuard(hosts, origins []string) (guard, error) {
	g := guard{hosts: map[string]bool{}, origins: map[string]bool{}}
	for _, h := range hosts {
		g.hosts[strings.ToLower(strings.Trim(h, "[]"))] = true
	}
	for _, o := range origins {
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" {
			return guard{}, fmt.Errorf("allowed origin %q: want scheme://host[:port]", o)
		}
		g.origins[strings.ToLower(u.Scheme+"://"+u.Host)] = true
	}
	return g, nil
}

func hostname(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return strings.ToLower(h)
	}
	return strings.ToLower(strings.Trim(hostport, "[]"))
}

// check returns nil when the request may proceed, or why it may not.
func (g guard) check(r *http.Request) *Error {
	if !g.hosts[hostname(r.Host)] {
		return errHostNotAllowed
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return errOriginNotAllowed
	}
	if g.origins[strings.ToLower(u.Scheme+"://"+u.Host)] || g.hosts[hostname(u.Host)] {
		return nil
	}
	return errOriginNotAllowed
}
