package main

import (
	"net/http"
)

// operatorOnly stands in for the gateway's authentication of an operator in the CLI's tests:
// a request that presents token as a bearer credential reaches next as the process's own
// (Cedar's decision on admin requests is tested end to end, in tests/); anything else is 401.
func operatorOnly(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"code":"unauthenticated","message":"the caller's credential was refused"}`))
			return
		}
		next.ServeHTTP(w, r)
	})
}
