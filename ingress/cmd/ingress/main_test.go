package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/etcdclient"
)

func TestRunRefusals(t *testing.T) {
	withToken := func(k string) string {
		if k == "GATEHOUSE_INTERNAL_TOKEN" {
			return "test-internal-token"
		}
		return ""
	}
	tests := []struct {
		name    string
		args    []string
		getenv  func(string) string
		wantErr string
	}{
		{"no internal token", []string{"-listen", "127.0.0.1:0"}, func(string) string { return "" }, "no internal token"},
		{"plaintext etcd", []string{"-listen", "127.0.0.1:0", "-etcd-endpoints", "http://127.0.0.1:2379"}, withToken, "plaintext"},
		{"etcd without a client certificate", []string{"-listen", "127.0.0.1:0", "-etcd-endpoints", "https://127.0.0.1:2379"}, withToken, "are all required"},
		{"stray argument", []string{"extra"}, withToken, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tt.args, tt.getenv, &out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(tt.name, "etcd") && !errors.Is(err, etcdclient.ErrInsecure) {
				t.Errorf("err %v, want ErrInsecure", err)
			}
		})
	}
}

func TestRunHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, func(string) string { return "" }, &out); err != nil {
		t.Fatalf("-h: %v, want nil (exit 0)", err)
	}
	for _, want := range []string{"-auth-addr", "-etcd-ca-file", "GATEHOUSE_INGRESS_"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}
