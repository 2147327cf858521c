package tokenexchange_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc/internal/tokenexchange"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

// The token endpoint is the upstream's, outside the gateway: everything it answers is
// judged, and nothing of the subject token or the client secret is ever part of an error.

func server(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func request(endpoint string) tokenexchange.Request {
	return tokenexchange.Request{Endpoint: endpoint, ClientID: "gatehouse", ClientSecret: "s3cret-client", SubjectToken: "subject-token-xyz", Audience: "urn:up"}
}

func jsonAnswer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

func TestExchangeRefusals(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		handler http.HandlerFunc
		want    error
		msg     string
	}{
		{"oauth error", jsonAnswer(400, `{"error":"invalid_grant","error_description":"the subject token expired"}`), tokenexchange.ErrRefused, "invalid_grant"},
		{"oauth error with control characters", jsonAnswer(403, "{\"error\":\"access_denied\",\"error_description\":\"a\\nb\"}"), tokenexchange.ErrRefused, "a b"},
		{"server error", jsonAnswer(500, `{"error":"server_error"}`), tokenexchange.ErrUnavailable, "HTTP 500"},
		{"html", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>"))
		}, tokenexchange.ErrUnavailable, "content type"},
		{"not json", jsonAnswer(200, `access_token=x`), tokenexchange.ErrUnavailable, "not a token response"},
		{"no token", jsonAnswer(200, `{"token_type":"Bearer","expires_in":60}`), tokenexchange.ErrUnavailable, "no usable access_token"},
		{"token with a newline", jsonAnswer(200, `{"access_token":"a\nb","token_type":"Bearer"}`), tokenexchange.ErrUnavailable, "no usable access_token"},
		{"token too long", jsonAnswer(200, `{"access_token":"`+strings.Repeat("a", tokenexchange.MaxTokenBytes+1)+`","token_type":"Bearer"}`), tokenexchange.ErrUnavailable, "no usable access_token"},
		{"not a bearer token", jsonAnswer(200, `{"access_token":"a","token_type":"N_A"}`), tokenexchange.ErrUnavailable, "token_type"},
		{"not an access token", jsonAnswer(200, `{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:id_token"}`), tokenexchange.ErrUnavailable, "issued_token_type"},
		{"negative lifetime", jsonAnswer(200, `{"access_token":"a","token_type":"Bearer","expires_in":-5}`), tokenexchange.ErrUnavailable, "expires_in"},
		{"huge answer", jsonAnswer(200, `{"access_token":"a","token_type":"Bearer","pad":"`+strings.Repeat("x", 70<<10)+`"}`), tokenexchange.ErrUnavailable, "larger than"},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://evil.example/token", http.StatusTemporaryRedirect)
		}, tokenexchange.ErrUnavailable, "HTTP 307"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := tokenexchange.New(tokenexchange.Options{})
			_, err := c.Exchange(context.Background(), request(server(t, tt.handler)))
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
			if strings.Contains(err.Error(), "subject-token-xyz") || strings.Contains(err.Error(), "s3cret-client") {
				t.Fatalf("the error holds a secret: %v", err)
			}
		})
	}
	c := tokenexchange.New(tokenexchange.Options{})
	if _, err := c.Exchange(context.Background(), tokenexchange.Request{Endpoint: "http://127.0.0.1:1/token"}); !errors.Is(err, tokenexchange.ErrRefused) {
		t.Fatalf("no subject token: %v", err)
	}
	if _, err := c.Exchange(context.Background(), request("http://127.0.0.1:1/token")); !errors.Is(err, tokenexchange.ErrUnavailable) {
		t.Fatalf("nothing listening: %v", err)
	}
}

// TestExchangeCache: concurrent exchanges of one subject token share one request; the token
// is reused until shortly before it expires; without expires_in it is not cached.
func TestExchangeCache(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	release := make(chan struct{})
	lifetime := atomic.Int64{}
	lifetime.Store(300)
	url := server(t, func(w http.ResponseWriter, _ *http.Request) {
		n := calls.Add(1)
		<-release
		w.Header().Set("Content-Type", "application/json")
		body := fmt.Sprintf(`{"access_token":"tok-%d","token_type":"Bearer"`, n)
		if l := lifetime.Load(); l > 0 {
			body += fmt.Sprintf(`,"expires_in":%d`, l)
		}
		_, _ = w.Write([]byte(body + "}"))
	})
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	c := tokenexchange.New(tokenexchange.Options{Now: func() time.Time { return time.Unix(0, now.Load()) }})

	var wg sync.WaitGroup
	got := make([]string, 20)
	for i := range got {
		wg.Go(func() {
			tok, err := c.Exchange(context.Background(), request(url))
			if err != nil {
				t.Errorf("Exchange: %v", err)
			}
			got[i] = tok.Value
		})
	}
	// Once the first exchange is under way, the rest join it or find its token cached.
	testsync.WaitFor(t, 10*time.Second, "the first exchange", func() bool { return calls.Load() > 0 })
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("20 concurrent exchanges of one token made %d requests, want 1", n)
	}
	for _, tok := range got {
		if tok != "tok-1" {
			t.Fatalf("got %q, want tok-1", tok)
		}
	}

	// 300 s of life: reused until 30 s before its end.
	now.Add(int64(269 * time.Second))
	if tok, _ := c.Exchange(context.Background(), request(url)); tok.Value != "tok-1" || calls.Load() != 1 {
		t.Fatalf("before renewal: %q after %d requests", tok.Value, calls.Load())
	}
	now.Add(int64(time.Second))
	if tok, _ := c.Exchange(context.Background(), request(url)); tok.Value != "tok-2" {
		t.Fatalf("at renewal: %q, want a new token", tok.Value)
	}
	// Another subject token, or another audience, is its own exchange.
	r := request(url)
	r.SubjectToken = "another"
	if tok, _ := c.Exchange(context.Background(), r); tok.Value != "tok-3" {
		t.Fatalf("another subject: %q", tok.Value)
	}
	r = request(url)
	r.Audience = "urn:other"
	if tok, _ := c.Exchange(context.Background(), r); tok.Value != "tok-4" {
		t.Fatalf("another audience: %q", tok.Value)
	}
	// Without a lifetime nothing is cached.
	lifetime.Store(0)
	r.Audience = "urn:third"
	for _, want := range []string{"tok-5", "tok-6"} {
		if tok, _ := c.Exchange(context.Background(), r); tok.Value != want || !tok.Expires.IsZero() {
			t.Fatalf("without expires_in: %+v, want %s", tok, want)
		}
	}
}
