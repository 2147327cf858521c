package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/authsvc"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
)

const testAdmin = "admin-token-0123456789abcdef"

// tokenGateway serves a real authsvc on a real etcd behind a stand-in for the operator's
// authentication (operatorOnly); Cedar's decisions on admin requests are tested end to end.
func tokenGateway(t *testing.T) string {
	t.Helper()
	etcd, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	auth, err := authsvc.New(authsvc.Config{}, etcd.Client, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(operatorOnly(testAdmin, rpcserver.NewMux(auth.Handlers()...)))
	t.Cleanup(srv.Close)
	return srv.URL
}

// cli runs `gatehouse args...` with env as its whole environment.
func cli(env map[string]string, args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	err = run(context.Background(), args, func(k string) string { return env[k] }, &out, &errb)
	return out.String(), errb.String(), err
}

var issued = regexp.MustCompile(`(?m)^token_id: ([0-9a-f]+)\ntoken:    (gh_\S+)\n$`)

func TestTokenCLI(t *testing.T) {
	url := tokenGateway(t)
	env := map[string]string{"GATEHOUSE_URL": url, "GATEHOUSE_ADMIN_TOKEN": testAdmin}

	out, errOut, err := cli(env, "token", "issue", "--principal", "alice", "--tenant", "acme", "--groups", "ops, dev", "--ttl", "24h", "--kind", "service")
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	m := issued.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("issue printed %q, want the token id and the token", out)
	}
	aliceID, aliceToken := m[1], m[2]
	if !strings.Contains(errOut, "shown only this once") {
		t.Fatalf("issue's note %q", errOut)
	}
	// --url beats the environment; the admin credential may come from a file.
	secret := filepath.Join(t.TempDir(), "admin")
	if err := os.WriteFile(secret, []byte(testAdmin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err = cli(map[string]string{"GATEHOUSE_URL": "http://127.0.0.1:1", "GATEHOUSE_ADMIN_TOKEN_FILE": secret}, "token", "issue", "--url", url, "--principal", "bob", "--tenant", "beta")
	if err != nil {
		t.Fatalf("issue with --url and a credential file: %v", err)
	}
	bobID := issued.FindStringSubmatch(out)[1]

	out, _, err = cli(env, "token", "list")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TOKEN ID") {
		t.Fatalf("list:\n%s", out)
	}
	if !regexp.MustCompile(aliceID+`\s+alice\s+acme\s+service\s+dev,ops\s+\S+Z\s+\S+Z`).MatchString(out) ||
		!regexp.MustCompile(bobID+`\s+bob\s+beta\s+user\s+-\s+\S+Z\s+never`).MatchString(out) {
		t.Fatalf("list:\n%s", out)
	}
	if strings.Contains(out, aliceToken) || strings.Contains(out, aliceToken[3:]) {
		t.Fatalf("list shows a token:\n%s", out)
	}
	out, _, err = cli(env, "token", "list", "--tenant", "beta")
	if err != nil || strings.Contains(out, aliceID) || !strings.Contains(out, bobID) {
		t.Fatalf("list --tenant beta: %v\n%s", err, out)
	}

	out, _, err = cli(env, "token", "revoke", aliceID)
	if err != nil || out != "revoked "+aliceID+"\n" {
		t.Fatalf("revoke: %q, %v", out, err)
	}
	if out, _, _ := cli(env, "token", "list"); strings.Contains(out, aliceID) {
		t.Fatalf("a revoked token is listed:\n%s", out)
	}
	if _, _, err := cli(env, "token", "revoke", aliceID); err == nil || !strings.Contains(err.Error(), "no token with id") {
		t.Fatalf("revoke twice: %v", err)
	}
}

// TestTokenCLIRefusals: every mistake is one clear line, refused before or by the gateway.
func TestTokenCLIRefusals(t *testing.T) {
	url := tokenGateway(t)
	env := map[string]string{"GATEHOUSE_URL": url, "GATEHOUSE_ADMIN_TOKEN": testAdmin}
	with := func(k, v string) map[string]string {
		e := map[string]string{}
		for a, b := range env {
			e[a] = b
		}
		if v == "" {
			delete(e, k)
		} else {
			e[k] = v
		}
		return e
	}
	issue := []string{"token", "issue", "--principal", "alice", "--tenant", "acme"}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no command", env, []string{"token"}, "no command"},
		{"unknown command", env, []string{"token", "mint"}, `unknown command "mint"`},
		{"no admin credential", with("GATEHOUSE_ADMIN_TOKEN", ""), issue, "no admin credential: set GATEHOUSE_ADMIN_TOKEN"},
		{"wrong admin credential", with("GATEHOUSE_ADMIN_TOKEN", "not-the-admin-token-at-all"), issue, "refused the admin credential"},
		{"admin credential as a flag", env, append(issue, "--admin-token", "x"), "flag provided but not defined"},
		{"gateway down", with("GATEHOUSE_URL", "http://127.0.0.1:1"), issue, "cannot reach authsvc"},
		{"not a URL", with("GATEHOUSE_URL", "127.0.0.1:8080"), issue, "want an http:// or https:// URL"},
		{"credentials in the URL", with("GATEHOUSE_URL", "http://u:p@127.0.0.1:8080"), issue, "credentials do not belong in the URL"},
		{"no principal", env, []string{"token", "issue", "--tenant", "acme"}, "--principal is required"},
		{"no tenant", env, []string{"token", "issue", "--principal", "alice"}, "--tenant is required"},
		{"bad kind", env, append(issue, "--kind", "robot"), `--kind "robot"`},
		{"empty group", env, append(issue, "--groups", "a,,b"), "an empty group"},
		{"zero ttl", env, append(issue, "--ttl", "0s"), "leave --ttl out"},
		{"fractional ttl", env, append(issue, "--ttl", "1500ms"), "whole seconds"},
		{"bad ttl", env, append(issue, "--ttl", "soon"), "invalid value"},
		{"principal refused by authsvc", env, []string{"token", "issue", "--principal", "a/b", "--tenant", "acme"}, "principal_id"},
		{"stray argument", env, append(issue, "extra"), "unexpected arguments: extra"},
		{"revoke without an id", env, []string{"token", "revoke"}, "want 1 argument"},
		{"revoke a malformed id", env, []string{"token", "revoke", "../x"}, "token_id"},
		{"revoke an unknown id", env, []string{"token", "revoke", "0123abcd"}, `no token with id "0123abcd"`},
		{"list a bad tenant", env, []string{"token", "list", "--tenant", "a b"}, "tenant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := cli(tt.env, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("a multi-line error: %q", err)
			}
			if strings.Contains(err.Error(), testAdmin) || strings.Contains(err.Error(), "not-the-admin-token-at-all") || out != "" {
				t.Fatalf("error %q, output %q", err, out)
			}
		})
	}
}

func TestTokenHelp(t *testing.T) {
	for _, args := range [][]string{{"token", "-h"}, {"token", "issue", "-h"}, {"token", "list", "--help"}, {"token", "revoke", "-h"}} {
		out, _, err := cli(nil, args...)
		if err != nil {
			t.Errorf("%v: %v, want nil", args, err)
		}
		if !strings.Contains(out, "GATEHOUSE_ADMIN_TOKEN") || !strings.Contains(out, "credential") {
			t.Errorf("%v: help does not say where the admin credential comes from:\n%s", args, out)
		}
	}
}
