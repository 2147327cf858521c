package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/svcmain/svcmaintest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

func TestRun(t *testing.T) {
	t.Parallel()
	noenv := func(string) string { return "" }
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown flag", []string{"-nope"}, "not defined"},
		{"stray argument", []string{"extra"}, "unexpected arguments"},
		{"bad policy dir", []string{"-policy-dir", "/nonexistent", "-listen", "127.0.0.1:0", "-insecure-no-internal-token-dev"}, "/nonexistent"},
		{"no internal token", []string{"-policy-dir", "../../../examples/policies", "-listen", "127.0.0.1:0"}, "no internal token"},
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

func TestRunHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, func(string) string { return "" }, &out); err != nil {
		t.Fatalf("-h: %v, want nil (exit 0)", err)
	}
	if !strings.Contains(out.String(), "-policy-dir") || !strings.Contains(out.String(), "GATEHOUSE_POLICY_") {
		t.Errorf("usage:\n%s", out.String())
	}
}

// TestRunServesUntilCancelled starts the binary's run with the shipped policies and an
// unreachable registry, and stops it.
func TestRunServesUntilCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	var out testsync.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-policy-dir", "../../../examples/policies", "-registry-addr", "127.0.0.1:1", "-drain", "1s"}, func(k string) string {
			if k == "GATEHOUSE_INTERNAL_TOKEN" {
				return "test-internal-token"
			}
			return ""
		}, &out)
	}()
	svcmaintest.WaitServing(t, &out, done, 10*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
