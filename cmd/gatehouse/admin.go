package main

import (
	"fmt"
	"net/http"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
)

// The gateway the operator CLI (token, policy apply) talks to, and its admin credential. The
// credential comes from the environment or a file only (svcmain.ReadSecret), never a flag.
const (
	gatewayURLEnv = "GATEHOUSE_URL"
	adminTokenEnv = "GATEHOUSE_ADMIN_TOKEN"
	defaultURL    = "http://127.0.0.1:8080"
)

// adminClient returns the base URL of the gateway (--url, else $GATEHOUSE_URL, else
// defaultURL; checked by gatewayURL) and an HTTP client that presents the admin credential,
// each request bounded by timeout. what names the command in errors.
func adminClient(what, rawURL string, getenv func(string) string, timeout time.Duration) (string, *http.Client, error) {
	if rawURL == "" {
		rawURL = getenv(gatewayURLEnv)
	}
	if rawURL == "" {
		rawURL = defaultURL
	}
	base, err := gatewayURL(rawURL)
	if err != nil {
		return "", nil, fmt.Errorf("%s: --url: %w", what, err)
	}
	admin, err := svcmain.ReadSecret(getenv, adminTokenEnv)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", what, err)
	}
	if admin == "" {
		return "", nil, fmt.Errorf("%s: no admin credential: set %s or %s_FILE (for now the gateway's internal token)", what, adminTokenEnv, adminTokenEnv)
	}
	return base, rpcserver.WithToken(&http.Client{Transport: http.DefaultTransport, Timeout: timeout}, admin), nil
}
