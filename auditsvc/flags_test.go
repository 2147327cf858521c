package auditsvc_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
)

func TestRegisterFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		env         map[string]string
		args        []string
		listen, dir string
		maxBatch    int
	}{
		{name: "defaults", listen: "127.0.0.1:7105", dir: "./data/audit", maxBatch: 256},
		{name: "env", env: map[string]string{"GATEHOUSE_AUDIT_DIR": "/var/audit", "GATEHOUSE_AUDIT_MAX_BATCH": "32"}, listen: "127.0.0.1:7105", dir: "/var/audit", maxBatch: 32},
		{name: "flags override env", env: map[string]string{"GATEHOUSE_AUDIT_MAX_BATCH": "32"}, args: []string{"-max-batch", "8", "-listen", "127.0.0.1:0"}, listen: "127.0.0.1:0", dir: "./data/audit", maxBatch: 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cfg auditsvc.Config
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			cfg.RegisterFlags(fs, func(k string) string { return tt.env[k] })
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if cfg.Listen != tt.listen || cfg.Dir != tt.dir || cfg.MaxBatch != tt.maxBatch {
				t.Errorf("config = %+v, want listen %s dir %s max batch %d", cfg, tt.listen, tt.dir, tt.maxBatch)
			}
		})
	}
	t.Run("malformed env", func(t *testing.T) {
		t.Parallel()
		var cfg auditsvc.Config
		cfg.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError), func(k string) string {
			if k == "GATEHOUSE_AUDIT_MAX_BATCH" {
				return "many"
			}
			return ""
		})
		cfg.Dir = t.TempDir()
		if _, err := auditsvc.New(cfg, nil); err == nil || !strings.Contains(err.Error(), "GATEHOUSE_AUDIT_MAX_BATCH") {
			t.Fatalf("New: err = %v, want one naming GATEHOUSE_AUDIT_MAX_BATCH", err)
		}
	})
}
