package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// The binary against the real registry (follow its catalogue, serve the bridge, reap the
// children on SIGTERM) is tested end to end in tests/split_test.go, against the registrysvc
// binary on a real etcd: this module may not import registrysvc.

func TestRunNeedsRegistry(t *testing.T) {
	err := run(context.Background(), []string{"-insecure-no-internal-token-dev"}, func(string) string { return "" }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "registry-addr") {
		t.Fatalf("run = %v", err)
	}
}
