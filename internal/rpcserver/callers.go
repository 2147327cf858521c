package rpcserver

import (
	"context"
	"crypto/subtle"
	"errors"

	"connectrpc.com/connect"
	"net/http"
	"strings"

	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
)

// Other teams' services call a few RPCs (policysvc's Check, say) with their own identity: a
// bearer credential (a service API token, an OpenID Connect token) that authsvc turns into a
// principal, whose requests the service then authorizes by Cedar. The internal token stays
// the gateway's own services' credential, for every RPC.

// Caller is who made an internal RPC: a gateway service (Principal nil: the internal token)
// or a principal that presented its own credential.
type Caller struct {
	Principal *authv1.Principal
}

type callerKey struct{}

// CallerFrom returns the caller Guard admitted; ok is false outside Guard (the caller is then
// the process itself, as in single-process mode's direct calls).
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// WithCaller returns ctx with c as its caller, as Guard makes it.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// Authenticate turns a bearer credential into a principal, or fails.
type Authenticate func(ctx context.Context, credential string) (*authv1.Principal, error)

// maxCallerCredential bounds the bearer credential Guard reads.
const maxCallerCredential = 8 << 10

// Guard admits a request with the internal token for every procedure, and one with a bearer
// credential that authn accepts for the procedures in open (gRPC/Connect paths,
// "/pkg.Service/Method"), with the caller in the request's context. Anything else is 401.
// An empty token admits every request as the gateway's own (development only).
func Guard(token string, authn Authenticate, open map[string]bool, next http.Handler) http.Handler {
	want := []byte(token)
	unauthenticated := func(w http.ResponseWriter, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"code":"unauthenticated","message":"` + msg + `"}`))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get(InternalTokenHeader)), want) == 1 {
			next.ServeHTTP(w, r.WithContext(WithCaller(r.Context(), Caller{})))
			return
		}
		if !open[r.URL.Path] || authn == nil {
			unauthenticated(w, "internal RPCs need the internal token")
			return
		}
		h := r.Header.Get("Authorization")
		scheme, credential, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || credential == "" || len(credential) > maxCallerCredential || len(r.Header.Values("Authorization")) > 1 {
			unauthenticated(w, "this RPC needs the internal token or a bearer credential of the caller")
			return
		}
		p, err := authn(r.Context(), strings.TrimSpace(credential))
		if err != nil || p == nil {
			unauthenticated(w, "the caller's credential was refused")
			return
		}
		next.ServeHTTP(w, r.WithContext(WithCaller(r.Context(), Caller{Principal: p})))
	})
}

// ErrNeedOperator refuses an admin RPC made with the internal token alone.
var ErrNeedOperator = errors.New("admin RPCs need an operator's own credential (Authorization: Bearer); the internal token alone is not enough")

// AdminCaller is the operator making an admin RPC: the principal of the caller's own
// credential, to be decided by Cedar. A request with the internal token alone is refused
// (ErrNeedOperator). Outside Guard (a direct call within the process, as single-process
// mode's start makes) it returns nil, nil: the process itself.
func AdminCaller(ctx context.Context) (*authv1.Principal, error) {
	c, ok := CallerFrom(ctx)
	if !ok {
		return nil, nil
	}
	if c.Principal == nil {
		return nil, ErrNeedOperator
	}
	return c.Principal, nil
}

// Authenticator is what AuthenticateWith needs of authsvc: its client, or the service itself.
type Authenticator interface {
	Authenticate(context.Context, *connect.Request[authv1.AuthenticateRequest]) (*connect.Response[authv1.AuthenticateResponse], error)
}

// AuthenticateWith is the Authenticate of Guard that asks authsvc (its client in split mode,
// the service itself in single-process mode) who a caller's credential is.
func AuthenticateWith(auth Authenticator) Authenticate {
	return func(ctx context.Context, credential string) (*authv1.Principal, error) {
		resp, err := auth.Authenticate(ctx, connect.NewRequest(&authv1.AuthenticateRequest{Credential: credential}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetPrincipal(), nil
	}
}
