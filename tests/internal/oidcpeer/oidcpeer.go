// Package oidcpeer runs a real OpenID provider for the end-to-end tests: the certified Node
// package oidc-provider, driven by tests/node/oidc.mjs under the Node 22 runtime that
// tests/node/install.sh installs (see nodepeer). The gateway's OIDC/JWT authentication is
// tested against it rather than against tokens the tests mint themselves, so discovery, JWKS
// publication, key rotation and the access token format are those of a conforming provider.
//
// A provider listens on 127.0.0.1 only, issues client_credentials access tokens as signed JWTs
// (RFC 9068, header typ at+jwt) for the configured resource indicators (RFC 8707), and keeps
// its issuer, http://127.0.0.1:PORT, across restarts with new keys.
package oidcpeer

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/nodepeer"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/procnet"
)

// ScopeTools is the resource scope every provider grants, besides any in Options.Scopes; the
// OpenID scopes (openid, offline_access) are always known too.
const ScopeTools = "mcp:tools"

// DefaultTokenTTL is the access token lifetime when Options.TokenTTL is zero.
const DefaultTokenTTL = 5 * time.Minute

const (
	// startTimeout bounds a start, from exec to the READY line; Node loading oidc-provider
	// takes well under a second, the rest is slack for a loaded machine.
	startTimeout = 30 * time.Second
	// stopTimeout is how long the provider gets to exit on SIGTERM before SIGKILL.
	stopTimeout = 5 * time.Second
	// startTries bounds the fresh ports tried when another process takes the chosen one.
	startTries = 3
	// exitPortTaken is oidc.mjs's exit status when its port is taken (EADDRINUSE).
	exitPortTaken = 98
	// maxOutput bounds the provider's captured stdout and stderr, all restarts together.
	maxOutput = 256 << 10
	// maxReadyLine bounds the first stdout line, which should be `READY <issuer>`.
	maxReadyLine = 1 << 10
	// maxResponse bounds a discovery or token response body.
	maxResponse = 1 << 20
)

// Key is a private signing key for the provider: a JWK with kid, alg and use "sig".
type Key struct {
	jwk jose.JSONWebKey
}

// NewRSAKey returns a fresh 2048-bit RSA key that signs RS256.
func NewRSAKey(t testing.TB, kid string) Key {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("oidcpeer: generate an RSA key: %v", err)
	}
	return newKey(t, priv, kid, string(jose.RS256))
}

// NewECKey returns a fresh P-256 key that signs ES256.
func NewECKey(t testing.TB, kid string) Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("oidcpeer: generate an EC key: %v", err)
	}
	return newKey(t, priv, kid, string(jose.ES256))
}

func newKey(t testing.TB, priv any, kid, alg string) Key {
	t.Helper()
	if kid == "" {
		t.Fatal("oidcpeer: a key needs a kid")
	}
	k := Key{jwk: jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: alg, Use: "sig"}}
	if !k.jwk.Valid() {
		t.Fatalf("oidcpeer: key %q is not a valid JWK", kid)
	}
	return k
}

// KID returns the key id, the `kid` of the tokens it signs and of its JWKS entry.
func (k Key) KID() string { return k.jwk.KeyID }

// Algorithm returns the JWS algorithm the key signs with (RS256 or ES256).
func (k Key) Algorithm() string { return k.jwk.Algorithm }

// Private returns the private JWK, e.g. to sign a token the provider did not issue.
func (k Key) Private() jose.JSONWebKey { return k.jwk }

// Public returns the public JWK, as the provider publishes it in its JWKS.
func (k Key) Public() jose.JSONWebKey { return k.jwk.Public() }

// Client is an OAuth client registered with the provider.
type Client struct {
	// ID is the client_id; for client_credentials tokens it is also their `sub`.
	ID string
	// Secret makes a confidential client allowed the client_credentials grant
	// (client_secret_basic). Empty makes a public client, which needs RedirectURIs.
	Secret string
	// RedirectURIs allow the authorization_code grant with PKCE (S256) through the
	// provider's development login pages; without a Secret the client authenticates with
	// none.
	RedirectURIs []string
	// Claims are added to every access token issued to the client (e.g. tenant, groups).
	// They cannot override the provider's own claims (iss, sub, aud, exp, scope, ...).
	Claims map[string]any
	// TokenExchange allows the client (which needs a Secret) the token exchange grant (RFC
	// 8693): it trades an access token of this provider for one with the same sub, for a
	// configured resource (see oidc.mjs).
	TokenExchange bool
}

// GrantTokenExchange is the token exchange grant type (RFC 8693).
const GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

// Options configure a provider.
type Options struct {
	// Keys sign tokens: the first one signs, all are published in the JWKS. Empty means one
	// fresh RSA key with kid "k1".
	Keys []Key
	// Clients are the registered clients.
	Clients []Client
	// Resources are the resource indicators (audience URLs) for which access tokens are
	// issued as JWTs whose `aud` is the resource, exactly as given. With a single resource, a
	// token request that names none gets it.
	Resources []string
	// Scopes are resource scopes granted besides ScopeTools.
	Scopes []string
	// TokenTTL is the access token lifetime, in whole seconds; zero means DefaultTokenTTL.
	TokenTTL time.Duration
}

// config is the JSON file oidc.mjs reads (its header documents the fields).
type config struct {
	Port           int                       `json:"port"`
	Keys           []jose.JSONWebKey         `json:"keys"`
	Clients        []clientMetadata          `json:"clients"`
	Claims         map[string]map[string]any `json:"claims"`
	Resources      []string                  `json:"resources"`
	Scopes         []string                  `json:"scopes"`
	AccessTokenTTL int                       `json:"accessTokenTTL"`
}

// clientMetadata is a client's registration, in OAuth dynamic client registration terms
// (RFC 7591), which oidc-provider takes as is.
type clientMetadata struct {
	ClientID                string   `json:"client_id"`
	ClientSecret            string   `json:"client_secret,omitempty"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
}

// Provider is a running OpenID provider; t.Cleanup stops it.
type Provider struct {
	node, dir string // Node 22 and tests/node
	tmp       string // holds the configuration files
	port      int
	issuer    string
	client    *http.Client
	output    *nodepeer.CappedBuffer

	mu   sync.Mutex
	cfg  config   // the running configuration; Restart changes its keys
	keys []Key    // the running keys, in order
	proc *process // nil while stopped
	gen  int      // configuration generation, for file names
}

// process is one run of oidc.mjs.
type process struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has been reaped
	waitErr error         // the exit status, once exited is closed
}

// Start starts a provider on a free loopback port and waits until it listens; t.Cleanup
// stops it. Invalid options fail the test.
func Start(t testing.TB, opts Options) *Provider {
	t.Helper()
	cfg, keys := buildConfig(t, opts)
	p := &Provider{
		node:   nodepeer.Node22(t),
		dir:    nodepeer.PeerDir(t),
		tmp:    t.TempDir(),
		output: nodepeer.NewCappedBuffer(maxOutput),
		// A transport of its own, so a restart can drop the connections to the old process;
		// it uses no proxy, whatever the environment says: the provider is on loopback.
		client: &http.Client{Transport: &http.Transport{}},
		cfg:    cfg,
		keys:   keys,
	}
	if _, err := os.Stat(filepath.Join(p.dir, "node_modules", "oidc-provider", "package.json")); err != nil {
		t.Fatalf("oidcpeer: oidc-provider is not installed: %v: run tests/node/install.sh", err)
	}
	// The free port is found by binding and releasing it, so another process may take it
	// before the provider binds; the provider then exits with exitPortTaken and another port
	// is tried.
	var errs []error
	for range startTries {
		port, err := procnet.FreePort()
		if err != nil {
			t.Fatalf("oidcpeer: %v", err)
		}
		p.setPort(port)
		err = p.launch()
		if err == nil {
			t.Cleanup(func() {
				if err := p.stop(); err != nil {
					t.Errorf("oidcpeer: %v", err)
				}
				p.client.CloseIdleConnections()
				if t.Failed() {
					t.Logf("oidc-provider output:\n%s", p.output.String())
				}
			})
			return p
		}
		errs = append(errs, err)
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	t.Fatalf("oidcpeer: start oidc-provider: %v", errors.Join(errs...))
	return nil
}

// buildConfig validates opts and turns them into oidc.mjs's configuration, port unset.
func buildConfig(t testing.TB, opts Options) (config, []Key) {
	t.Helper()
	keys := slices.Clone(opts.Keys)
	if len(keys) == 0 {
		keys = []Key{NewRSAKey(t, "k1")}
	}
	ttl := opts.TokenTTL
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Second || ttl%time.Second != 0 {
		t.Fatalf("oidcpeer: TokenTTL %v: want whole seconds, at least one", ttl)
	}
	cfg := config{
		Keys:           privateJWKs(t, keys),
		Clients:        []clientMetadata{},
		Claims:         map[string]map[string]any{},
		Resources:      slices.Clone(opts.Resources),
		Scopes:         []string{ScopeTools},
		AccessTokenTTL: int(ttl / time.Second),
	}
	if cfg.Resources == nil {
		cfg.Resources = []string{}
	}
	for _, s := range opts.Scopes {
		if !slices.Contains(cfg.Scopes, s) {
			cfg.Scopes = append(cfg.Scopes, s)
		}
	}
	for _, c := range opts.Clients {
		md, err := c.metadata()
		if err != nil {
			t.Fatalf("oidcpeer: %v", err)
		}
		cfg.Clients = append(cfg.Clients, md)
		if len(c.Claims) > 0 {
			cfg.Claims[c.ID] = c.Claims
		}
	}
	return cfg, keys
}

// metadata registers c: client_credentials with a secret, authorization_code with redirect
// URIs, both when it has both.
func (c Client) metadata() (clientMetadata, error) {
	if c.ID == "" {
		return clientMetadata{}, errors.New("a client needs an ID")
	}
	md := clientMetadata{
		ClientID:      c.ID,
		ClientSecret:  c.Secret,
		GrantTypes:    []string{},
		ResponseTypes: []string{},
		RedirectURIs:  []string{},
	}
	if c.Secret != "" {
		md.GrantTypes = append(md.GrantTypes, "client_credentials")
		md.TokenEndpointAuthMethod = "client_secret_basic"
		if c.TokenExchange {
			md.GrantTypes = append(md.GrantTypes, GrantTokenExchange)
		}
	} else {
		if c.TokenExchange {
			return clientMetadata{}, fmt.Errorf("client %q: token exchange needs a Secret", c.ID)
		}
		if len(c.RedirectURIs) == 0 {
			return clientMetadata{}, fmt.Errorf("client %q: a public client (no Secret) needs RedirectURIs", c.ID)
		}
		md.TokenEndpointAuthMethod = "none"
	}
	if len(c.RedirectURIs) > 0 {
		md.GrantTypes = append(md.GrantTypes, "authorization_code")
		md.ResponseTypes = []string{"code"}
		md.RedirectURIs = slices.Clone(c.RedirectURIs)
	}
	return md, nil
}

func privateJWKs(t testing.TB, keys []Key) []jose.JSONWebKey {
	t.Helper()
	jwks := make([]jose.JSONWebKey, len(keys))
	seen := map[string]bool{}
	for i, k := range keys {
		if k.jwk.Key == nil {
			t.Fatalf("oidcpeer: key %d is the zero Key: make keys with NewRSAKey or NewECKey", i)
		}
		if seen[k.KID()] {
			t.Fatalf("oidcpeer: two keys have kid %q", k.KID())
		}
		seen[k.KID()] = true
		jwks[i] = k.jwk
	}
	return jwks
}

// setPort sets the port and issuer of a provider that Start has not returned yet; they never
// change afterwards.
func (p *Provider) setPort(port int) {
	p.port = port
	p.cfg.Port = port
	p.issuer = "http://127.0.0.1:" + strconv.Itoa(port)
}

// Issuer returns the issuer identifier, http://127.0.0.1:PORT (no trailing slash); it is the
// same after a Restart.
func (p *Provider) Issuer() string { return p.issuer }

// Keys returns the keys the provider runs with, the signing one first.
func (p *Provider) Keys() []Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.keys)
}

// Restart stops the provider and starts it again on the same port, so with the same issuer,
// with keys instead of the current ones: the first signs, all are published. It is how a
// test rotates keys. Tokens and other state of the old process are forgotten; tokens it issued
// stay valid for a verifier that still has their key. Failing to start again on the same port
// (another process took it meanwhile) fails the test.
func (p *Provider) Restart(t testing.TB, keys []Key) {
	t.Helper()
	if len(keys) == 0 {
		t.Fatal("oidcpeer: Restart needs at least one key")
	}
	jwks := privateJWKs(t, keys)
	if err := p.stop(); err != nil {
		t.Fatalf("oidcpeer: restart: %v", err)
	}
	// Connections to the old process are dead; a request must not be sent on one.
	p.client.CloseIdleConnections()
	p.mu.Lock()
	p.cfg.Keys = jwks
	p.keys = slices.Clone(keys)
	p.mu.Unlock()
	fmt.Fprintf(p.output, "--- oidcpeer: restart with keys %v ---\n", kids(keys))
	if err := p.launch(); err != nil {
		if errors.Is(err, errPortTaken) {
			t.Fatalf("oidcpeer: restart: port %d was taken by another process while the provider was stopped, so issuer %s cannot come back: %v", p.port, p.issuer, err)
		}
		t.Fatalf("oidcpeer: restart: %v", err)
	}
}

func kids(keys []Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.KID()
	}
	return out
}

// errPortTaken reports a provider that could not listen because its port was taken.
var errPortTaken = errors.New("port taken by another process")

// launch writes the current configuration and starts oidc.mjs with it, waiting for its
// READY line. On error nothing is left running.
func (p *Provider) launch() error {
	p.mu.Lock()
	p.gen++
	path := filepath.Join(p.tmp, fmt.Sprintf("oidc-%d.json", p.gen))
	b, err := json.Marshal(p.cfg)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encode the configuration: %w", err)
	}
	// The file holds private keys and client secrets: readable by this user only.
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write the configuration: %w", err)
	}

	cmd := exec.Command(p.node, filepath.Join(p.dir, "oidc.mjs"), path)
	cmd.Dir = p.dir
	// Nothing from the test's environment (DEBUG, NODE_OPTIONS, ...) changes the provider.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	ready := &readyWriter{out: p.output, line: make(chan string, 1)}
	cmd.Stdout, cmd.Stderr = ready, p.output
	// A descendant that kept the output pipes open must not hold Wait forever.
	cmd.WaitDelay = stopTimeout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.node, err)
	}
	proc := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		proc.waitErr = cmd.Wait()
		close(proc.exited)
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	var fail error
	select {
	case line := <-ready.line:
		// oidc.mjs prints READY from its listen callback, which runs only once the process
		// itself holds 127.0.0.1:PORT: no other process can be the one answering.
		if want := "READY " + p.issuer; line != want {
			fail = fmt.Errorf("first output line %q, want %q", line, want)
		}
	case <-proc.exited:
		var exit *exec.ExitError
		if errors.As(proc.waitErr, &exit) && exit.ExitCode() == exitPortTaken {
			return fmt.Errorf("port %d: %w\n%s", p.port, errPortTaken, p.output.String())
		}
		return fmt.Errorf("oidc.mjs exited before listening: %v\n%s", proc.waitErr, p.output.String())
	case <-timer.C:
		fail = fmt.Errorf("no READY line within %v", startTimeout)
	}
	if fail != nil {
		_ = proc.terminate()
		return fmt.Errorf("port %d: %w\n%s", p.port, fail, p.output.String())
	}
	p.mu.Lock()
	p.proc = proc
	p.mu.Unlock()
	return nil
}

// stop ends the running process, if any. A process that had already exited on its own is
// an error: the provider crashed under the test.
func (p *Provider) stop() error {
	p.mu.Lock()
	proc := p.proc
	p.proc = nil
	p.mu.Unlock()
	if proc == nil {
		return nil
	}
	select {
	case <-proc.exited:
		return fmt.Errorf("oidc-provider exited on its own: %v", proc.waitErr)
	default:
	}
	return proc.terminate()
}

// terminate signals the process group with SIGTERM, then SIGKILL after stopTimeout, and
// waits until the process is reaped. oidc.mjs has no children, but must not leave any behind
// if it grows some.
func (proc *process) terminate() error {
	pid := proc.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-proc.exited:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-proc.exited
	return fmt.Errorf("oidc-provider (pid %d) ignored SIGTERM for %v and was killed", pid, stopTimeout)
}

// readyWriter copies the provider's stdout to out and hands the first line, once complete,
// to line (buffered, written once). exec's copier calls Write from a single goroutine.
type readyWriter struct {
	out     io.Writer
	line    chan string
	partial []byte
	done    bool
}

func (w *readyWriter) Write(b []byte) (int, error) {
	_, _ = w.out.Write(b)
	if w.done {
		return len(b), nil
	}
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		i = len(b)
	}
	w.partial = append(w.partial, b[:i]...)
	switch {
	case i < len(b):
		w.done = true
		w.line <- string(w.partial)
	case len(w.partial) > maxReadyLine:
		// Not the READY line, whatever comes next; the start fails on the mismatch.
		w.done = true
		w.line <- string(w.partial[:maxReadyLine])
	}
	return len(b), nil
}

// Metadata is the part of the provider's discovery document the tests use.
type Metadata struct {
	Issuer                string   `json:"issuer"`
	JWKSURI               string   `json:"jwks_uri"`
	TokenEndpoint         string   `json:"token_endpoint"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	GrantTypesSupported   []string `json:"grant_types_supported"`
	ScopesSupported       []string `json:"scopes_supported"`
}

// Discover fetches the provider's discovery document, <issuer>/.well-known/openid-configuration.
func (p *Provider) Discover(ctx context.Context) (Metadata, error) {
	var md Metadata
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.issuer+"/.well-known/openid-configuration", nil)
	if err != nil {
		return md, err
	}
	status, body, err := p.do(req)
	if err != nil {
		return md, fmt.Errorf("discovery: %w", err)
	}
	if status != http.StatusOK {
		return md, fmt.Errorf("discovery: HTTP %d: %.200s", status, body)
	}
	if err := json.Unmarshal(body, &md); err != nil {
		return md, fmt.Errorf("discovery: %w", err)
	}
	return md, nil
}

// TokenError is a token request the provider refused (RFC 6749 section 5.2).
type TokenError struct {
	Status      int    // the HTTP status, e.g. 401 for invalid_client
	Code        string // the `error` field, e.g. "invalid_client", "invalid_target"
	Description string // the `error_description` field
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("token request refused: HTTP %d %s: %s", e.Status, e.Code, e.Description)
}

// Token requests an access token with the client_credentials grant, authenticating with
// client_secret_basic at the token endpoint named by the discovery document. resource (RFC
// 8707) and scope are sent when not empty; the provider defaults resource to the only one
// configured. The token is a JWT for a configured resource. A refusal is a *TokenError.
func (p *Provider) Token(ctx context.Context, clientID, secret, resource, scope string) (string, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if resource != "" {
		form.Set("resource", resource)
	}
	if scope != "" {
		form.Set("scope", scope)
	}
	return p.tokenRequest(ctx, clientID, secret, form)
}

// Exchange trades subjectToken (an access token of this provider) for one whose audience is
// audience, as the client (allowed TokenExchange) asks with the token exchange grant. A
// refusal is a *TokenError.
func (p *Provider) Exchange(ctx context.Context, clientID, secret, subjectToken, audience string) (string, error) {
	return p.tokenRequest(ctx, clientID, secret, url.Values{
		"grant_type":         {GrantTokenExchange},
		"subject_token":      {subjectToken},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"audience":           {audience},
	})
}

// tokenRequest posts form to the token endpoint as the client (client_secret_basic) and
// returns the Bearer access token of the answer.
func (p *Provider) tokenRequest(ctx context.Context, clientID, secret string, form url.Values) (string, error) {
	md, err := p.Discover(ctx)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, md.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// RFC 6749 section 2.3.1: the id and secret are form-encoded before Basic encoding.
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	status, body, err := p.do(req)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	if status != http.StatusOK {
		var oauthErr struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &oauthErr) != nil || oauthErr.Error == "" {
			return "", fmt.Errorf("token request: HTTP %d: %.200s", status, body)
		}
		return "", &TokenError{Status: status, Code: oauthErr.Error, Description: oauthErr.Description}
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal(body, &tok); err != nil {
		return "", fmt.Errorf("token response: %w", err)
	}
	if tok.AccessToken == "" || !strings.EqualFold(tok.TokenType, "Bearer") {
		return "", fmt.Errorf("token response without a Bearer access token: %.200s", body)
	}
	return tok.AccessToken, nil
}

// do sends req and returns the status and the (bounded) body.
func (p *Provider) do(req *http.Request) (int, []byte, error) {
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return 0, nil, err
	}
	if len(body) > maxResponse {
		return 0, nil, fmt.Errorf("response larger than %d bytes", maxResponse)
	}
	return resp.StatusCode, body, nil
}
