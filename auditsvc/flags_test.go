package auditsvc_test

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
)

// TestRegisterFlags checks the flags' defaults and the environment names the binary reads
// (svcmain applies GATEHOUSE_AUDIT_<FLAG> to every flag).
func TestRegisterFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		env           map[string]string
		args          []string
		listen, dir   string
		maxBatch      int
		maxQueue      int
		maxQueueBytes int
		commitDelay   time.Duration
	}{
		{name: "defaults", listen: "127.0.0.1:7105", dir: "./data/audit", maxBatch: 256},
		{name: "env", env: map[string]string{"GATEHOUSE_AUDIT_DIR": "/var/audit", "GATEHOUSE_AUDIT_MAX_BATCH": "32"}, listen: "127.0.0.1:7105", dir: "/var/audit", maxBatch: 32},
		{name: "flags override env", env: map[string]string{"GATEHOUSE_AUDIT_MAX_BATCH": "32"}, args: []string{"-max-batch", "8", "-listen", "127.0.0.1:0"}, listen: "127.0.0.1:0", dir: "./data/audit", maxBatch: 8},
		{name: "queue and delay from env", env: map[string]string{"GATEHOUSE_AUDIT_MAX_QUEUE": "64", "GATEHOUSE_AUDIT_MAX_QUEUE_BYTES": "1048576", "GATEHOUSE_AUDIT_COMMIT_DELAY": "5ms"},
			listen: "127.0.0.1:7105", dir: "./data/audit", maxBatch: 256, maxQueue: 64, maxQueueBytes: 1 << 20, commitDelay: 5 * time.Millisecond},
		{name: "queue and delay from flags", args: []string{"-max-queue", "32", "-max-queue-bytes", "65536", "-commit-delay", "-1ms"},
			listen: "127.0.0.1:7105", dir: "./data/audit", maxBatch: 256, maxQueue: 32, maxQueueBytes: 65536, commitDelay: -time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cfg auditsvc.Config
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			cfg.RegisterFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if err := svcmain.ApplyEnv(fs, "GATEHOUSE_AUDIT_", func(k string) string { return tt.env[k] }); err != nil {
				t.Fatal(err)
			}
			if cfg.Listen != tt.listen || cfg.Dir != tt.dir || cfg.MaxBatch != tt.maxBatch ||
				cfg.MaxQueue != tt.maxQueue || cfg.MaxQueueBytes != tt.maxQueueBytes || cfg.CommitDelay != tt.commitDelay {
				t.Errorf("config = %+v, want %+v", cfg, tt)
			}
		})
	}
	for _, name := range []string{"GATEHOUSE_AUDIT_MAX_BATCH", "GATEHOUSE_AUDIT_MAX_QUEUE", "GATEHOUSE_AUDIT_MAX_QUEUE_BYTES", "GATEHOUSE_AUDIT_COMMIT_DELAY"} {
		t.Run("malformed "+name, func(t *testing.T) {
			t.Parallel()
			var cfg auditsvc.Config
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			cfg.RegisterFlags(fs)
			err := svcmain.ApplyEnv(fs, "GATEHOUSE_AUDIT_", func(k string) string {
				if k == name {
					return "many"
				}
				return ""
			})
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("ApplyEnv: err = %v, want one naming %s", err, name)
			}
		})
	}
}
