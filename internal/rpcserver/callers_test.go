package rpcserver_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

func TestGuard(t *testing.T) {
	t.Parallel()
	authn := func(_ context.Context, credential string) (*authv1.Principal, error) {
		if credential == "svc-token" {
			return &authv1.Principal{Id: "svc"}, nil
		}
		return nil, errors.New("unknown token")
	}
	var seen rpcserver.Caller
	var served bool
	h := rpcserver.Guard("internal-secret", authn, map[string]bool{"/pkg.S/Open": true}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, served = rpcserver.CallerFrom(r.Context())
	}))
	for _, tt := range []struct {
		name, path string
		header     map[string][]string
		status     int
		principal  string
	}{
		{"the internal token, any RPC", "/pkg.S/Closed", map[string][]string{rpcserver.InternalTokenHeader: {"internal-secret"}}, 200, ""},
		{"a caller's credential on an open RPC", "/pkg.S/Open", map[string][]string{"Authorization": {"Bearer svc-token"}}, 200, "svc"},
		{"a caller's credential on another RPC", "/pkg.S/Closed", map[string][]string{"Authorization": {"Bearer svc-token"}}, 401, ""},
		{"a refused credential", "/pkg.S/Open", map[string][]string{"Authorization": {"Bearer nope"}}, 401, ""},
		{"two credentials", "/pkg.S/Open", map[string][]string{"Authorization": {"Bearer svc-token", "Bearer svc-token"}}, 401, ""},
		{"a wrong internal token and no credential", "/pkg.S/Open", map[string][]string{rpcserver.InternalTokenHeader: {"guess"}}, 401, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			served, seen = false, rpcserver.Caller{}
			r := httptest.NewRequest(http.MethodPost, tt.path, nil)
			for k, vs := range tt.header {
				for _, v := range vs {
					r.Header.Add(k, v)
				}
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status || (tt.status == 200) != served || seen.Principal.GetId() != tt.principal {
				t.Fatalf("status %d served %v caller %v, want %d and principal %q", w.Code, served, seen.Principal, tt.status, tt.principal)
			}
		})
	}
}
