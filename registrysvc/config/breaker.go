package config

import (
	"fmt"
	"time"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Bounds of a server's circuit breaker (the bridge's flags share them).
const (
	MaxBreakerFailures = 1000
	MaxBreakerProbes   = 100
	MaxBreakerDuration = time.Hour
)

// breakerYAML is a server's `breaker:` entry; absent fields take the bridge's defaults.
// `failures: 0` turns the breaker off for the server.
type breakerYAML struct {
	Failures *uint32 `yaml:"failures"`
	Window   string  `yaml:"window"`
	Cooldown string  `yaml:"cooldown"`
	Probes   uint32  `yaml:"probes"`
}

// breaker turns the YAML form into the registry's message; Validate judges the bounds.
func (b *breakerYAML) breaker(server string) (*registryv1.Breaker, error) {
	out := &registryv1.Breaker{Failures: b.Failures, Probes: b.Probes}
	for _, f := range []struct {
		field, value string
		dst          **durationpb.Duration
	}{{"breaker.window", b.Window, &out.Window}, {"breaker.cooldown", b.Cooldown, &out.Cooldown}} {
		if f.value == "" {
			continue
		}
		d, err := time.ParseDuration(f.value)
		if err != nil {
			return nil, &ValidationError{Server: server, Field: f.field, Problem: fmt.Sprintf("%.40q is not a duration such as 30s or 2m", f.value)}
		}
		*f.dst = durationpb.New(d)
	}
	return out, nil
}

// validateBreaker checks a server's breaker: failures at most MaxBreakerFailures, probes at
// most MaxBreakerProbes, window and cooldown, when set, more than 0 and at most an hour.
func validateBreaker(b *registryv1.Breaker, bad func(string, string, ...any) error) error {
	if b == nil {
		return nil
	}
	if b.GetFailures() > MaxBreakerFailures {
		return bad("breaker.failures", "%d: want at most %d (0 turns the breaker off)", b.GetFailures(), MaxBreakerFailures)
	}
	if b.GetProbes() > MaxBreakerProbes {
		return bad("breaker.probes", "%d: want at most %d", b.GetProbes(), MaxBreakerProbes)
	}
	for _, f := range []struct {
		field string
		d     *durationpb.Duration
	}{{"breaker.window", b.GetWindow()}, {"breaker.cooldown", b.GetCooldown()}} {
		if f.d == nil {
			continue
		}
		if err := f.d.CheckValid(); err != nil {
			return bad(f.field, "%v", err)
		}
		if d := f.d.AsDuration(); d <= 0 || d > MaxBreakerDuration {
			return bad(f.field, "%v: want more than 0 and at most %v", d, MaxBreakerDuration)
		}
	}
	return nil
}
