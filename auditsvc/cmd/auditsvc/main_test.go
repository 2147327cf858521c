package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain/svcmaintest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

func noenv(string) string { return "" }

// withToken is an environment holding the internal token.
func withToken(k string) string {
	if k == "GATEHOUSE_INTERNAL_TOKEN" {
		return "test-internal-token"
	}
	return ""
}

func TestRunHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, noenv, &out); err != nil {
		t.Fatalf("-h: %v, want nil (exit 0)", err)
	}
	for _, want := range []string{"-dir", "-verify", "-drain", "-insecure-no-internal-token-dev", "GATEHOUSE_AUDIT_"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown flag", []string{"-nope"}, "not defined"},
		{"stray argument", []string{"extra"}, "unexpected arguments"},
		{"verify a missing log", []string{"-verify", "-dir", "/nonexistent"}, "/nonexistent"},
		{"no internal token", []string{"-dir", t.TempDir(), "-listen", "127.0.0.1:0"}, "no internal token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := run(context.Background(), tt.args, noenv, &out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRunVerify(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	svc, err := auditsvc.New(auditsvc.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		rec := &auditv1.Record{Server: "s", Method: "tools/call", Outcome: auditv1.Outcome_OUTCOME_DENIED}
		if _, err := svc.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{Record: rec})); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-verify", "-dir", dir}, noenv, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "3 records in 1 segments, 0 checkpoints, chain intact") {
		t.Fatalf("output %q", out.String())
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	var out testsync.Buffer
	dir := t.TempDir()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-drain", "1s"}, func(k string) string {
			if k == "GATEHOUSE_AUDIT_DIR" {
				return dir
			}
			return withToken(k)
		}, &out)
	}()
	svcmaintest.WaitServing(t, &out, done, 10*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
