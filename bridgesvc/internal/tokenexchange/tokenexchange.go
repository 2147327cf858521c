// Package tokenexchange exchanges a host's OpenID Connect token for one meant for an upstream,
// at the upstream's authorization server (OAuth 2.0 Token Exchange, RFC 8693), for upstreams
// that must see the user's own identity rather than the gateway's. Exchanged tokens are cached
// per (subject token digest, request) until shortly before they expire, so a host's calls pay
// one exchange per token, not one per call. The subject token itself is never stored (only its
// digest is a cache key), logged, or part of an error.
package tokenexchange

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// RFC 8693 names.
const (
	grantType       = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccess = "urn:ietf:params:oauth:token-type:access_token"
)

// Bounds.
const (
	// MaxEntries bounds the cache; past it the cache starts over.
	MaxEntries = 10000
	// maxResponse bounds the token endpoint's answer.
	maxResponse = 64 << 10
	// MaxTokenBytes bounds an exchanged token (it travels in a header).
	MaxTokenBytes = 16 << 10
	// renewBefore is how long before its expiry an exchanged token is exchanged again, so
	// that it does not expire on its way to the upstream; a token that lives less than
	// twice this is reused for half its life.
	renewBefore = 30 * time.Second
	// exchangeTimeout bounds one exchange: it runs detached from the call that started it,
	// so that this call's host leaving does not fail the others waiting on it.
	exchangeTimeout = 10 * time.Second
	maxDescription  = 200
)

// The ways an exchange fails. Neither ever holds the subject token or the client secret.
var (
	// ErrRefused: the authorization server refused the exchange (an OAuth error response:
	// invalid_grant, invalid_target, unauthorized_client, ...).
	ErrRefused = errors.New("the authorization server refused the token exchange")
	// ErrUnavailable: the authorization server could not be reached, failed, or answered
	// something that is not a usable token.
	ErrUnavailable = errors.New("the authorization server is unavailable")
)

// Request is one exchange: the subject token and what the upstream's server needs.
type Request struct {
	Endpoint     string // the token endpoint
	ClientID     string
	ClientSecret string
	SubjectToken string
	Audience     string
	Resource     string // optional
	Scope        string // optional
}

// Client exchanges tokens and caches the results.
type Client struct {
	hc  *http.Client
	now func() time.Time

	mu      sync.Mutex
	entries map[[sha256.Size]byte]entry
	flights map[[sha256.Size]byte]*flight
}

type entry struct {
	token   string
	expires time.Time
	renew   time.Time
}

type flight struct {
	done chan struct{}
	res  Token
	err  error
}

// Token is an exchanged token and when it expires (zero when the server did not say).
type Token struct {
	Value   string
	Expires time.Time
}

// Options configure a Client.
type Options struct {
	// Transport replaces the default transport (tests).
	Transport http.RoundTripper
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// New returns a Client: no proxy from the environment, no redirects (a token endpoint that
// redirects is refused rather than followed with the client's credentials), bounded waits.
func New(opts Options) *Client {
	rt := opts.Transport
	if rt == nil {
		rt = &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: exchangeTimeout,
		}
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Client{
		hc: &http.Client{
			Transport:     rt,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now:     now,
		entries: map[[sha256.Size]byte]entry{},
		flights: map[[sha256.Size]byte]*flight{},
	}
}

// Exchange returns a token for r: a cached one until shortly before it expires, else a new
// exchange (one for all concurrent callers with the same key). Errors wrap ErrRefused or
// ErrUnavailable, or are ctx's.
func (c *Client) Exchange(ctx context.Context, r Request) (Token, error) {
	if r.SubjectToken == "" {
		return Token{}, fmt.Errorf("%w: no subject token", ErrRefused)
	}
	key := cacheKey(r)
	c.mu.Lock()
	if e, ok := c.entries[key]; ok && c.now().Before(e.renew) {
		c.mu.Unlock()
		return Token{Value: e.token, Expires: e.expires}, nil
	}
	f, lead := c.flights[key], false
	if f == nil {
		f, lead = &flight{done: make(chan struct{})}, true
		c.flights[key] = f
	}
	c.mu.Unlock()
	if lead {
		go c.run(key, f, r)
	}
	select {
	case <-f.done:
		return f.res, f.err
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

func (c *Client) run(key [sha256.Size]byte, f *flight, r Request) {
	ctx, cancel := context.WithTimeout(context.Background(), exchangeTimeout)
	start := c.now()
	tok, ttl, err := c.exchange(ctx, r)
	cancel()
	c.mu.Lock()
	delete(c.flights, key)
	f.err = err
	if err == nil {
		f.res = Token{Value: tok}
		if ttl > 0 {
			// Without expires_in the server gave no lifetime to trust: not cached.
			f.res.Expires = start.Add(ttl)
			renew := f.res.Expires.Add(-renewBefore)
			if ttl < 2*renewBefore {
				renew = start.Add(ttl / 2)
			}
			if len(c.entries) >= MaxEntries {
				clear(c.entries)
			}
			c.entries[key] = entry{token: tok, expires: f.res.Expires, renew: renew}
		}
	}
	c.mu.Unlock()
	close(f.done)
}

// exchange posts the request (client_secret_basic) and reads the token response.
func (c *Client) exchange(ctx context.Context, r Request) (string, time.Duration, error) {
	form := url.Values{
		"grant_type":           {grantType},
		"subject_token":        {r.SubjectToken},
		"subject_token_type":   {tokenTypeAccess},
		"requested_token_type": {tokenTypeAccess},
	}
	if r.Audience != "" {
		form.Set("audience", r.Audience)
	}
	if r.Resource != "" {
		form.Set("resource", r.Resource)
	}
	if r.Scope != "" {
		form.Set("scope", r.Scope)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.Endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, fmt.Errorf("%w: token endpoint: %v", ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 section 2.3.1: the id and secret are form-encoded before Basic encoding.
	req.SetBasicAuth(url.QueryEscape(r.ClientID), url.QueryEscape(r.ClientSecret))
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", 0, fmt.Errorf("%w: no answer within %v", ErrUnavailable, exchangeTimeout)
		}
		// The error names the endpoint's URL (no secret: those are in the body and a header).
		return "", 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return "", 0, fmt.Errorf("%w: read the answer: %v", ErrUnavailable, err)
	}
	if len(body) > maxResponse {
		return "", 0, fmt.Errorf("%w: the answer is larger than %d bytes", ErrUnavailable, maxResponse)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return "", 0, fmt.Errorf("%w: HTTP %d with content type %q", ErrUnavailable, resp.StatusCode, mt)
	}
	if resp.StatusCode != http.StatusOK {
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if resp.StatusCode/100 == 4 && json.Unmarshal(body, &oe) == nil && oe.Error != "" {
			return "", 0, fmt.Errorf("%w: HTTP %d %s: %s", ErrRefused, resp.StatusCode, clean(oe.Error), clean(oe.Description))
		}
		return "", 0, fmt.Errorf("%w: HTTP %d", ErrUnavailable, resp.StatusCode)
	}
	var tr struct {
		AccessToken     string  `json:"access_token"`
		TokenType       string  `json:"token_type"`
		IssuedTokenType string  `json:"issued_token_type"`
		ExpiresIn       float64 `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", 0, fmt.Errorf("%w: the answer is not a token response: %v", ErrUnavailable, err)
	}
	switch {
	case tr.AccessToken == "" || len(tr.AccessToken) > MaxTokenBytes || !visible(tr.AccessToken):
		return "", 0, fmt.Errorf("%w: the answer holds no usable access_token (1 to %d visible ASCII characters)", ErrUnavailable, MaxTokenBytes)
	case !strings.EqualFold(tr.TokenType, "Bearer"):
		return "", 0, fmt.Errorf("%w: token_type %q, want Bearer", ErrUnavailable, clean(tr.TokenType))
	case tr.IssuedTokenType != "" && tr.IssuedTokenType != tokenTypeAccess:
		return "", 0, fmt.Errorf("%w: issued_token_type %q, want an access token", ErrUnavailable, clean(tr.IssuedTokenType))
	case tr.ExpiresIn < 0 || tr.ExpiresIn > 1e9:
		return "", 0, fmt.Errorf("%w: expires_in %v", ErrUnavailable, tr.ExpiresIn)
	}
	return tr.AccessToken, time.Duration(tr.ExpiresIn) * time.Second, nil
}

// cacheKey digests the subject token and every other field but the client secret (a new
// secret does not change what the exchanged token is worth), each length-prefixed.
func cacheKey(r Request) [sha256.Size]byte {
	var b []byte
	for _, s := range []string{r.SubjectToken, r.Endpoint, r.ClientID, r.Audience, r.Resource, r.Scope} {
		b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
		b = append(b, s...)
	}
	return sha256.Sum256(b)
}

// clean makes an authorization server's words fit for a log line: printable, bounded.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) > maxDescription {
		s = strings.ToValidUTF8(s[:maxDescription], "") + "…"
	}
	return s
}

func visible(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
