package config_test

import (
	"strings"
	"testing"
	"time"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestParseBreaker(t *testing.T) {
	t.Parallel()
	const head = "servers:\n  - name: a\n    transport: stdio\n    command: [x]\n"
	zero := uint32(0)
	five := uint32(5)
	tests := []struct {
		name, yaml string
		want       *registryv1.Breaker
	}{
		{"absent", "", nil},
		{"every field", "    breaker: {failures: 5, window: 10s, cooldown: 300ms, probes: 2}\n",
			&registryv1.Breaker{Failures: &five, Window: durationpb.New(10 * time.Second), Cooldown: durationpb.New(300 * time.Millisecond), Probes: 2}},
		{"off", "    breaker: {failures: 0}\n", &registryv1.Breaker{Failures: &zero}},
		{"cooldown only", "    breaker:\n      cooldown: 1m\n", &registryv1.Breaker{Cooldown: durationpb.New(time.Minute)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			servers, err := config.ParseConfig([]byte(head + tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := servers[0].GetBreaker(); !proto.Equal(got, tt.want) {
				t.Fatalf("breaker = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseBreakerErrors(t *testing.T) {
	t.Parallel()
	const head = "servers:\n  - name: a\n    transport: stdio\n    command: [x]\n    breaker: "
	tests := []struct{ name, yaml, want string }{
		{"unknown key", "{failure: 3}", "field failure not found"},
		{"negative failures", "{failures: -1}", "parse config"},
		{"too many failures", "{failures: 1001}", `server "a": breaker.failures: 1001: want at most 1000`},
		{"too many probes", "{probes: 101}", `breaker.probes: 101: want at most 100`},
		{"window not a duration", "{window: 30}", `breaker.window: "30" is not a duration`},
		{"window zero", "{window: 0s}", `breaker.window: 0s: want more than 0`},
		{"cooldown negative", "{cooldown: -1s}", `breaker.cooldown: -1s: want more than 0`},
		{"cooldown over an hour", "{cooldown: 61m}", `breaker.cooldown: 1h1m0s: want more than 0 and at most 1h0m0s`},
		{"not a mapping", "5", "parse config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.ParseConfig([]byte(head + tt.yaml + "\n"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
