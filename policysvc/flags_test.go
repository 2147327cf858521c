package policysvc_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
	"github.com/gatehouse-mcp/gatehouse/policysvc"
)

// TestRegisterFlags checks the flags' defaults and the environment names the binary reads
// (svcmain applies GATEHOUSE_POLICY_<FLAG> to every flag).
func TestRegisterFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    policysvc.Config
		wantErr string // from ApplyEnv
	}{
		{
			name: "defaults",
			want: policysvc.Config{Listen: "127.0.0.1:7102", PolicyDir: "examples/policies", RegistryAddr: "127.0.0.1:7103"},
		},
		{
			name: "env",
			env:  map[string]string{"GATEHOUSE_POLICY_QUOTA_RATE": "2.5", "GATEHOUSE_POLICY_QUOTA_BURST": "10", "GATEHOUSE_POLICY_POLICY_DIR": "/etc/p", "GATEHOUSE_POLICY_KEY_PREFIX": "/p/"},
			want: policysvc.Config{Listen: "127.0.0.1:7102", PolicyDir: "/etc/p", RegistryAddr: "127.0.0.1:7103", KeyPrefix: "/p/", QuotaRate: 2.5, QuotaBurst: 10},
		},
		{
			name: "flags override env",
			env:  map[string]string{"GATEHOUSE_POLICY_QUOTA_RATE": "2.5"},
			args: []string{"-quota-rate", "7", "-listen", "127.0.0.1:0"},
			want: policysvc.Config{Listen: "127.0.0.1:0", PolicyDir: "examples/policies", RegistryAddr: "127.0.0.1:7103", QuotaRate: 7},
		},
		{
			name:    "malformed env",
			env:     map[string]string{"GATEHOUSE_POLICY_QUOTA_BURST": "lots"},
			wantErr: "GATEHOUSE_POLICY_QUOTA_BURST",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cfg policysvc.Config
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			cfg.RegisterFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := svcmain.ApplyEnv(fs, "GATEHOUSE_POLICY_", func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ApplyEnv: err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			type fields struct {
				listen, dir, registry, prefix string
				rate                          float64
				burst                         int
			}
			if tt.want.KeyPrefix == "" {
				tt.want.KeyPrefix = policysvc.DefaultKeyPrefix
			}
			got := fields{cfg.Listen, cfg.PolicyDir, cfg.RegistryAddr, cfg.KeyPrefix, cfg.QuotaRate, cfg.QuotaBurst}
			want := fields{tt.want.Listen, tt.want.PolicyDir, tt.want.RegistryAddr, tt.want.KeyPrefix, tt.want.QuotaRate, tt.want.QuotaBurst}
			if got != want {
				t.Errorf("config = %+v, want %+v", got, want)
			}
		})
	}
}
