package main

import (
	"fmt"
	"net/http"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
)

// The gateway the operator CLI (token, policy apply) talks to, and the operator's credential
// (an API token or an OpenID Connect token of a principal the policies let administer). It
// comes from the environment or a file only (svcmain.ReadSecret), never a flag.
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
		return "", nil, fmt.Errorf("%s: no admin credential: set %s or %s_FILE to an operator's token (gatehouse up: its dev token)", what, adminTokenEnv, adminTokenEnv)
	}
	// Sent as a bearer token: the gateway authenticates it and Cedar decides each admin
	// request (the internal token alone opens no admin RPC).
	return base, rpcserver.WithBearer(&http.Client{Timeout: timeout}, admin), nil
}
