package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// How long keys are trusted and how often they may be fetched.
const (
	// keysMaxAge is how long a fetched JWKS is used before the next verification fetches it
	// again (an issuer that retires a key is heard within this).
	keysMaxAge = 10 * time.Minute
	// keysStaleLimit is how long the last JWKS keeps being used while the issuer cannot be
	// reached; past it, tokens of that issuer are refused as unavailable.
	keysStaleLimit = time.Hour
	// fetchTimeout bounds one discovery-and-JWKS fetch. It runs detached from the request that
	// started it, so that this request leaving does not fail the others waiting on it.
	fetchTimeout = 10 * time.Second
	// refetchBurst and refetchEvery bound the fetches that unknown key ids cause: an issuer
	// that rotated its key is heard at once, while tokens naming invented key ids cause at
	// most one fetch per refetchEvery after the burst.
	refetchBurst = 2
	refetchEvery = 30 * time.Second
	// fetchBackoff is how long after a failed fetch no other is started: while an issuer is
	// down, tokens naming it neither drive fetches back to back nor each wait for one.
	fetchBackoff = 5 * time.Second
)

// errUnknownKey is a key id the issuer's JWKS does not hold, even after a refetch (or while
// refetches are spent).
var errUnknownKey = errors.New("the token's signing key is not among the issuer's keys")

// keySet is one issuer's keys: found through its discovery document (or configured),
// fetched on first use, cached for keysMaxAge, refetched within a bound when a token names
// a key id it does not hold. Concurrent verifications share one fetch.
type keySet struct {
	issuer string
	client *http.Client
	now    func() time.Time
	logger *slog.Logger

	mu       sync.Mutex
	jwksURI  string // configured, or from discovery once it succeeded
	keys     []jose.JSONWebKey
	fetched  time.Time // when keys were fetched; zero before the first success
	failed   time.Time // when the last fetch failed; zero after a success
	lastErr  error     // its error
	flight   *fetchFlight
	budget   float64 // refetches available (a token bucket of refetchBurst)
	budgetAt time.Time
}

// fetchFlight is one fetch that several verifications wait for; done is closed once err is
// set (and, on success, the keySet's keys replaced).
type fetchFlight struct {
	done chan struct{}
	err  error
}

func newKeySet(issuer, jwksURI string, client *http.Client, now func() time.Time, logger *slog.Logger) *keySet {
	return &keySet{issuer: issuer, jwksURI: jwksURI, client: client, now: now, logger: logger, budget: refetchBurst, budgetAt: now()}
}

// candidates returns the keys that may have signed a token with this key id and algorithm:
// the key with that id (or, for a token without one, every key), whose declared algorithm,
// if any, is the token's. It fetches the keys on first use and when they are older than
// keysMaxAge, and once more (within the refetch budget) when none matches.
func (ks *keySet) candidates(ctx context.Context, kid, alg string) ([]jose.JSONWebKey, error) {
	ks.mu.Lock()
	now := ks.now()
	fresh := !ks.fetched.IsZero() && now.Sub(ks.fetched) < keysMaxAge
	usable := !ks.fetched.IsZero() && now.Sub(ks.fetched) < keysStaleLimit
	backingOff, lastErr := now.Sub(ks.failed) < fetchBackoff, ks.lastErr
	ks.mu.Unlock()
	switch {
	case fresh:
	case usable:
		// Stale but usable: refresh in the background, answer from what is held now.
		if !backingOff {
			ks.refresh()
		}
	case backingOff:
		return nil, lastErr
	default:
		if err := ks.fetch(ctx); err != nil {
			return nil, err
		}
	}
	if keys := ks.match(kid, alg); len(keys) > 0 {
		return keys, nil
	}
	if backingOff || !ks.spendRefetch() {
		return nil, errUnknownKey
	}
	if err := ks.fetch(ctx); err != nil {
		return nil, err
	}
	if keys := ks.match(kid, alg); len(keys) > 0 {
		return keys, nil
	}
	return nil, errUnknownKey
}

func (ks *keySet) match(kid, alg string) []jose.JSONWebKey {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var out []jose.JSONWebKey
	for _, k := range ks.keys {
		if (kid == "" || k.KeyID == kid) && (k.Algorithm == "" || k.Algorithm == alg) {
			out = append(out, k)
		}
	}
	return out
}

// spendRefetch takes one refetch from the budget, if there is one.
func (ks *keySet) spendRefetch() bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	now := ks.now()
	ks.budget = min(refetchBurst, ks.budget+now.Sub(ks.budgetAt).Seconds()/refetchEvery.Seconds())
	ks.budgetAt = now
	if ks.budget < 1 {
		return false
	}
	ks.budget--
	return true
}

// refresh starts a fetch unless one is under way, without waiting for it.
func (ks *keySet) refresh() { ks.start() }

// start joins the fetch under way or starts one.
func (ks *keySet) start() *fetchFlight {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.flight == nil {
		ks.flight = &fetchFlight{done: make(chan struct{})}
		go ks.run(ks.flight)
	}
	return ks.flight
}

// fetch joins the fetch under way or starts one, and waits for it until ctx ends.
func (ks *keySet) fetch(ctx context.Context) error {
	f := ks.start()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (ks *keySet) run(f *fetchFlight) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	keys, jwksURI, err := ks.load(ctx)
	if err != nil {
		err = fmt.Errorf("fetch the keys of issuer %s: %w", ks.issuer, err)
		// Logged once a fetch, not once a token: a fetch is at most one per fetchBackoff.
		ks.logger.Warn("issuer keys could not be fetched", "issuer", ks.issuer, "err", err)
	}
	ks.mu.Lock()
	if err == nil {
		ks.keys, ks.jwksURI, ks.fetched = keys, jwksURI, ks.now()
		ks.failed, ks.lastErr = time.Time{}, nil
	} else {
		ks.failed, ks.lastErr = ks.now(), err
	}
	ks.flight = nil
	ks.mu.Unlock()
	f.err = err
	close(f.done)
}

// load discovers the JWKS URI if it is not known yet and fetches the keys.
func (ks *keySet) load(ctx context.Context) ([]jose.JSONWebKey, string, error) {
	ks.mu.Lock()
	jwksURI := ks.jwksURI
	ks.mu.Unlock()
	if jwksURI == "" {
		var err error
		if jwksURI, err = ks.discover(ctx); err != nil {
			return nil, "", err
		}
	}
	body, err := ks.get(ctx, jwksURI)
	if err != nil {
		return nil, "", fmt.Errorf("jwks: %w", err)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, "", fmt.Errorf("jwks %s: %w", jwksURI, err)
	}
	var keys []jose.JSONWebKey
	skipped := 0
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		// A key of a type go-jose does not know, a private or symmetric key, or one for
		// encryption is skipped, not fatal: issuers publish such keys beside signing keys.
		if err := k.UnmarshalJSON(raw); err != nil || !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
			skipped++
			continue
		}
		if len(keys) == maxKeys {
			skipped++
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, "", fmt.Errorf("jwks %s holds no usable signing key (%d skipped)", jwksURI, skipped)
	}
	if skipped > 0 {
		ks.logger.Debug("issuer keys skipped", "issuer", ks.issuer, "skipped", skipped, "kept", len(keys))
	}
	return keys, jwksURI, nil
}

// discover reads the issuer's OpenID Connect discovery document, or its RFC 8414
// authorization server metadata, and returns its jwks_uri. The document must name this
// issuer exactly (a document naming another would let that one's keys in).
func (ks *keySet) discover(ctx context.Context) (string, error) {
	var errs []error
	for _, u := range metadataURLs(ks.issuer) {
		body, err := ks.get(ctx, u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			return "", fmt.Errorf("discovery document %s: %w", u, err)
		}
		if doc.Issuer != ks.issuer {
			return "", fmt.Errorf("discovery document %s names issuer %q, not %q", u, doc.Issuer, ks.issuer)
		}
		if err := CheckURL(doc.JWKSURI, "jwks_uri"); err != nil {
			return "", fmt.Errorf("discovery document %s: %w", u, err)
		}
		return doc.JWKSURI, nil
	}
	return "", fmt.Errorf("discovery: %w", errors.Join(errs...))
}

// metadataURLs are where an issuer's metadata may be: OpenID Connect discovery (the path
// appended) and RFC 8414 (the well-known path inserted before the issuer's path).
func metadataURLs(issuer string) []string {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil
	}
	path := strings.TrimSuffix(u.Path, "/")
	oidc := *u
	oidc.Path = path + "/.well-known/openid-configuration"
	oauth := *u
	oauth.Path = "/.well-known/oauth-authorization-server" + path
	return []string{oidc.String(), oauth.String()}
}

// get fetches a JSON document: 200 only, no redirects (the client refuses them), at most
// maxDocumentBytes.
func (ks *keySet) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := ks.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, fmt.Errorf("GET %s: content type %q, want JSON", u, ct)
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxDocumentBytes {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", u, maxDocumentBytes)
	}
	return body, nil
}

// NewHTTPClient is the client issuers are fetched with: bounded in time, refusing redirects
// (a redirect could lead the fetch anywhere, the configured https origin notwithstanding),
// through the proxy the environment names, if any (HTTPS_PROXY, NO_PROXY).
func NewHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = fetchTimeout
	return &http.Client{
		Transport: t,
		Timeout:   fetchTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("redirects are not followed")
		},
	}
}
