package cli

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/lists"
)

func TestParseLists(t *testing.T) {
	t.Parallel()
	testParse(t, parseLists, []parseCase[lists.Config]{
		{
			name: "defaults",
			check: func(t *testing.T, cfg lists.Config, out string) {
				if cfg.ExtraTools != 100 || cfg.Lists != 200 || cfg.Warmup != 20 || cfg.Repeats != 5 || cfg.Profile != 10*time.Second || cfg.Protocol != "2025-11-25" || cfg.Quick {
					t.Errorf("cfg = %+v", cfg)
				}
				if !slices.Equal(cfg.Paths, lists.AllPaths) || out != "docs/benchmarks-lists.md" || !filepath.IsAbs(cfg.Repo) {
					t.Errorf("paths %v out %q repo %q", cfg.Paths, out, cfg.Repo)
				}
			},
		},
		{
			name: "quick",
			args: []string{"-quick"},
			check: func(t *testing.T, cfg lists.Config, _ string) {
				if !cfg.Quick || cfg.Lists != 20 || cfg.Warmup != 2 || cfg.Repeats != 2 || cfg.Profile != 0 || cfg.ExtraTools != 100 {
					t.Errorf("cfg = %+v", cfg)
				}
			},
		},
		{
			name: "quick keeps explicit flags",
			args: []string{"-lists", "50", "-quick", "-profile", "2s"},
			check: func(t *testing.T, cfg lists.Config, _ string) {
				if !cfg.Quick || cfg.Lists != 50 || cfg.Repeats != 2 || cfg.Profile != 2*time.Second {
					t.Errorf("cfg = %+v", cfg)
				}
			},
		},
		{
			name: "paths, gateway flags, output",
			args: []string{"-paths", "direct3, gateway-all", "-gatehouse-args", "--list-timeout 2s", "-out", ""},
			env:  map[string]string{"GATEBENCH_GATEHOUSE_BIN": "/opt/gatehouse"},
			check: func(t *testing.T, cfg lists.Config, out string) {
				if !slices.Equal(cfg.Paths, []string{"direct3", "gateway-all"}) || !slices.Equal(cfg.GatehouseArgs, []string{"--list-timeout", "2s"}) || out != "" || cfg.GatehouseBin != "/opt/gatehouse" {
					t.Errorf("cfg = %+v, out %q", cfg, out)
				}
			},
		},
		{name: "unknown flag", args: []string{"-sessions", "3"}, wantErr: "sessions"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected arguments"},
	})
}
