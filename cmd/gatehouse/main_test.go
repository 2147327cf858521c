package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunRefusals: what `gatehouse` refuses before it starts anything.
func TestRunRefusals(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "token")
	if err := os.WriteFile(loose, []byte("0123456789abcdef0123"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"no command", nil, nil, "no command"},
		{"unknown command", []string{"down"}, nil, "unknown command"},
		{"dev token as a flag", []string{"up", "--dev-token", "x"}, nil, "not defined"},
		{"internal token as a flag", []string{"up", "--internal-token", "x"}, nil, "not defined"},
		{"dev token file readable by others", []string{"up"}, map[string]string{"GATEHOUSE_DEV_TOKEN_FILE": loose}, "must not be readable by group or others"},
		{"internal token file readable by others", []string{"up"}, map[string]string{"GATEHOUSE_INTERNAL_TOKEN_FILE": loose}, "GATEHOUSE_INTERNAL_TOKEN_FILE"},
		{"token twice", []string{"up"}, map[string]string{"GATEHOUSE_DEV_TOKEN": "x", "GATEHOUSE_DEV_TOKEN_FILE": loose}, "both set"},
		{"internal token too short", []string{"up"}, map[string]string{"GATEHOUSE_INTERNAL_TOKEN": "short"}, "fewer than 16"},
		{"bad env value", []string{"up"}, map[string]string{"GATEHOUSE_SESSION_TTL": "soon"}, "GATEHOUSE_SESSION_TTL"},
		{"stray argument", []string{"up", "extra"}, nil, "unexpected arguments"},
		{"dev without certs", []string{"dev"}, nil, "certs DIR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, func(k string) string { return tt.env[k] }, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"up", "-h"}, {"dev", "-h"}} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr); err != nil {
			t.Errorf("%v: %v, want nil", args, err)
		}
	}
	// up's usage lists the services' own flags with their own defaults.
	var stdout, stderr bytes.Buffer
	_ = run(context.Background(), []string{"up", "-h"}, func(string) string { return "" }, &stdout, &stderr)
	for _, want := range []string{"-stdio-grace", "(default 2s)", "-audit-max-batch", "-quota-rate", "GATEHOUSE_DEV_TOKEN"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("up -h lacks %q:\n%s", want, stderr.String())
		}
	}
}
