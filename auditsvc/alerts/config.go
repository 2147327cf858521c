package alerts

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// maxFileBytes bounds the config file read for its alerts: section (the registry's bound on
// the same file is the same order).
const maxFileBytes = 4 << 20

// Defaults and bounds of the section. Every number an operator writes is bounded, so that a
// typo cannot make the engine keep unbounded state or wait forever.
const (
	defaultMaxKeys = 1000
	maxMaxKeys     = 100_000

	defaultQueue = 256
	maxQueue     = 10_000

	defaultTimeout = 5 * time.Second
	minTimeout     = 100 * time.Millisecond
	maxTimeout     = time.Minute

	defaultRetries = 3
	maxRetries     = 10

	defaultBackoff = time.Second
	minBackoff     = 10 * time.Millisecond
	maxBackoff     = time.Minute

	minWindow     = time.Second
	maxWindow     = 24 * time.Hour
	minCooldown   = time.Second
	maxCooldown   = 7 * 24 * time.Hour
	maxThreshold  = 1_000_000_000
	maxFactor     = 1000
	maxBaselineOf = 1000

	maxURLBytes = 2048
)

// Config is the `alerts:` section of the gatehouse YAML file: where alerts go, and which
// rules are on. A rule absent from rules is off; one present with an empty body ({}) is on
// with its defaults.
type Config struct {
	Webhook *Webhook `yaml:"webhook"`
	Rules   Rules    `yaml:"rules"`
	// MaxKeys bounds the keys (tenants, servers, server/tool pairs) each rule counts apart;
	// past it, new keys count together as "other". Default 1000.
	MaxKeys int `yaml:"max_keys"`
}

// Webhook is the HTTP endpoint every fired alert is POSTed to, as JSON (Alert). Optional:
// without it, alerts go to the log and the metric only.
type Webhook struct {
	// URL is http or https. A token it carries is as secret as the config file.
	URL string `yaml:"url"`
	// Timeout bounds one attempt (connect, send, response). Default 5s.
	Timeout time.Duration `yaml:"timeout"`
	// Retries are the attempts after the first, for a transport error or a non-2xx
	// response, Backoff apart (doubling). Default 3; 0: none.
	Retries *int          `yaml:"retries"`
	Backoff time.Duration `yaml:"backoff"`
	// Queue bounds the alerts waiting for the webhook; an alert that finds it full is
	// dropped (counted and logged). Default 256.
	Queue int `yaml:"queue"`
}

// Rules are the rules an operator turned on. Names match deploy/prometheus's alerts (see
// Rule).
type Rules struct {
	PolicyDenialSpike   *CountRule    `yaml:"policy_denial_spike"`
	BreakerOpen         *EventRule    `yaml:"breaker_open"`
	TenantAboveBaseline *BaselineRule `yaml:"tenant_above_baseline"`
	AuditAppendLag      *LagRule      `yaml:"audit_append_lag"`
	AuditAppendFailing  *CountRule    `yaml:"audit_append_failing"`
	ToolQuarantined     *EventRule    `yaml:"tool_quarantined"`
}

// CountRule fires when Threshold events (policy denials of one tenant, refused appends) fall
// within a sliding Window.
type CountRule struct {
	Threshold int           `yaml:"threshold"`
	Window    time.Duration `yaml:"window"`
	Cooldown  time.Duration `yaml:"cooldown"`
}

// EventRule fires at each event (a breaker opening, a tool quarantined), once per key and
// Cooldown.
type EventRule struct {
	Cooldown time.Duration `yaml:"cooldown"`
}

// BaselineRule fires when a tenant's calls in the current Window are more than Factor times
// its own moving average over the Windows before (an exponential average over about
// Windows windows), and at least MinCalls. A tenant seen for fewer than Windows windows has
// no baseline yet and does not fire.
type BaselineRule struct {
	Window   time.Duration `yaml:"window"`
	Windows  int           `yaml:"windows"`
	Factor   float64       `yaml:"factor"`
	MinCalls int           `yaml:"min_calls"`
	Cooldown time.Duration `yaml:"cooldown"`
}

// LagRule fires when MinCount durable appends within a sliding Window each took longer than
// Threshold: the call path waits for them.
type LagRule struct {
	Threshold time.Duration `yaml:"threshold"`
	MinCount  int           `yaml:"min_count"`
	Window    time.Duration `yaml:"window"`
	Cooldown  time.Duration `yaml:"cooldown"`
}

// ReadFile reads the alerts: section of a gatehouse YAML file; nil when it has none.
func ReadFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("alert config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("alert config %s: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("alert config %s: %w", path, err)
	}
	return c, nil
}

// Parse reads the `alerts:` section of a gatehouse YAML document, strictly (unknown keys
// refused), validates it and fills in the defaults. The other top-level sections are other
// services' (the registry reads the file as strictly). nil when there is no alerts section.
func Parse(data []byte) (*Config, error) {
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%d bytes, more than the limit of %d", len(data), maxFileBytes)
	}
	var top struct {
		Alerts yaml.Node `yaml:"alerts"`
	}
	if err := yaml.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if top.Alerts.Kind == 0 {
		return nil, nil
	}
	// Decoded again, strictly: yaml.Node.Decode has no KnownFields.
	section, err := yaml.Marshal(&top.Alerts)
	if err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(section))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	return &c, nil
}

// Validate checks every field against its bounds and fills in the defaults of those left
// zero.
func (c *Config) Validate() error {
	if err := intIn("max_keys", &c.MaxKeys, defaultMaxKeys, 1, maxMaxKeys); err != nil {
		return err
	}
	if w := c.Webhook; w != nil {
		if err := w.validate(); err != nil {
			return fmt.Errorf("webhook: %w", err)
		}
	}
	r := &c.Rules
	if r.PolicyDenialSpike == nil && r.BreakerOpen == nil && r.TenantAboveBaseline == nil &&
		r.AuditAppendLag == nil && r.AuditAppendFailing == nil && r.ToolQuarantined == nil {
		return errors.New("rules: none is on; list at least one (policy_denial_spike, breaker_open, tenant_above_baseline, audit_append_lag, audit_append_failing, tool_quarantined)")
	}
	if x := r.PolicyDenialSpike; x != nil {
		if err := x.validate(30, 5*time.Minute, 15*time.Minute); err != nil {
			return fmt.Errorf("rules.policy_denial_spike: %w", err)
		}
	}
	if x := r.AuditAppendFailing; x != nil {
		if err := x.validate(1, 5*time.Minute, 15*time.Minute); err != nil {
			return fmt.Errorf("rules.audit_append_failing: %w", err)
		}
	}
	for name, x := range map[string]*EventRule{"breaker_open": r.BreakerOpen, "tool_quarantined": r.ToolQuarantined} {
		if x == nil {
			continue
		}
		if err := durationIn("cooldown", &x.Cooldown, 15*time.Minute, minCooldown, maxCooldown); err != nil {
			return fmt.Errorf("rules.%s: %w", name, err)
		}
	}
	if x := r.TenantAboveBaseline; x != nil {
		if err := x.validate(); err != nil {
			return fmt.Errorf("rules.tenant_above_baseline: %w", err)
		}
	}
	if x := r.AuditAppendLag; x != nil {
		if err := x.validate(); err != nil {
			return fmt.Errorf("rules.audit_append_lag: %w", err)
		}
	}
	return nil
}

func (w *Webhook) validate() error {
	if len(w.URL) > maxURLBytes {
		return fmt.Errorf("url: %d bytes, more than %d", len(w.URL), maxURLBytes)
	}
	u, err := url.Parse(w.URL)
	if err != nil {
		return fmt.Errorf("url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url %q: the scheme must be http or https", redactURL(w.URL))
	}
	if u.Host == "" {
		return fmt.Errorf("url %q: no host", redactURL(w.URL))
	}
	if err := durationIn("timeout", &w.Timeout, defaultTimeout, minTimeout, maxTimeout); err != nil {
		return err
	}
	if err := durationIn("backoff", &w.Backoff, defaultBackoff, minBackoff, maxBackoff); err != nil {
		return err
	}
	if w.Retries == nil {
		n := defaultRetries
		w.Retries = &n
	}
	if *w.Retries < 0 || *w.Retries > maxRetries {
		return fmt.Errorf("retries: %d is not between 0 and %d", *w.Retries, maxRetries)
	}
	return intIn("queue", &w.Queue, defaultQueue, 1, maxQueue)
}

func (x *CountRule) validate(threshold int, window, cooldown time.Duration) error {
	if err := intIn("threshold", &x.Threshold, threshold, 1, maxThreshold); err != nil {
		return err
	}
	if err := durationIn("window", &x.Window, window, minWindow, maxWindow); err != nil {
		return err
	}
	return durationIn("cooldown", &x.Cooldown, cooldown, minCooldown, maxCooldown)
}

func (x *BaselineRule) validate() error {
	if err := durationIn("window", &x.Window, 5*time.Minute, minWindow, maxWindow); err != nil {
		return err
	}
	if err := intIn("windows", &x.Windows, 12, 2, maxBaselineOf); err != nil {
		return err
	}
	if x.Factor == 0 {
		x.Factor = 5
	}
	if !(x.Factor > 1 && x.Factor <= maxFactor) { // also refuses NaN
		return fmt.Errorf("factor: %v is not above 1 and at most %d", x.Factor, maxFactor)
	}
	if err := intIn("min_calls", &x.MinCalls, 100, 1, maxThreshold); err != nil {
		return err
	}
	return durationIn("cooldown", &x.Cooldown, time.Hour, minCooldown, maxCooldown)
}

func (x *LagRule) validate() error {
	if err := durationIn("threshold", &x.Threshold, 250*time.Millisecond, time.Millisecond, maxTimeout); err != nil {
		return err
	}
	if err := intIn("min_count", &x.MinCount, 10, 1, maxThreshold); err != nil {
		return err
	}
	if err := durationIn("window", &x.Window, 5*time.Minute, minWindow, maxWindow); err != nil {
		return err
	}
	return durationIn("cooldown", &x.Cooldown, 15*time.Minute, minCooldown, maxCooldown)
}

// intIn sets *v to def when zero, then checks it is within [lo, hi].
func intIn(name string, v *int, def, lo, hi int) error {
	if *v == 0 {
		*v = def
	}
	if *v < lo || *v > hi {
		return fmt.Errorf("%s: %d is not between %d and %d", name, *v, lo, hi)
	}
	return nil
}

// durationIn sets *v to def when zero, then checks it is within [lo, hi].
func durationIn(name string, v *time.Duration, def, lo, hi time.Duration) error {
	if *v == 0 {
		*v = def
	}
	if *v < lo || *v > hi {
		return fmt.Errorf("%s: %v is not between %v and %v", name, *v, lo, hi)
	}
	return nil
}

// redactURL is a URL as errors and logs show it: without its user info and query, where a
// token would be.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable url)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
