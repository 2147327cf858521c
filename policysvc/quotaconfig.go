package policysvc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Bounds on the quotas section: every number is checked, and so is every override's key.
const (
	// MaxQuotaRate is the highest rate of a bucket, calls a second.
	MaxQuotaRate = 1e6
	// MaxQuotaBurst is the largest burst of a bucket.
	MaxQuotaBurst = 1 << 20
	// MaxConcurrency is the highest concurrency limit.
	MaxConcurrency = 1 << 16
	// MaxQuotaOverrides bounds the overrides of each scope.
	MaxQuotaOverrides = 4096
	// maxQuotaFileBytes bounds the file read for its quotas section (the gatehouse YAML).
	maxQuotaFileBytes = 1 << 20
	// DefaultPermitTTL is how long a concurrency permit lives when its release is lost.
	DefaultPermitTTL = 10 * time.Minute
	minPermitTTL     = time.Second
	maxPermitTTL     = 24 * time.Hour
)

// QuotaLimit is one token bucket: Rate calls a second, up to Burst (below 1: max(1,
// ceil(Rate))). A zero Rate is no limit.
type QuotaLimit struct {
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// QuotaConfig is the `quotas:` section of the gatehouse YAML: a default per scope, and
// overrides by tenant, principal id, server and "server/tool". A scope left out limits
// nothing. Concurrency limits the calls in flight per (tenant, server).
type QuotaConfig struct {
	Tenant      *QuotaLimit     `yaml:"tenant"`
	Principal   *QuotaLimit     `yaml:"principal"`
	Server      *QuotaLimit     `yaml:"server"`
	Tool        *QuotaLimit     `yaml:"tool"`
	Anonymous   *QuotaLimit     `yaml:"anonymous"`
	Concurrency int             `yaml:"concurrency"`
	PermitTTL   string          `yaml:"permit_ttl"`
	Overrides   *QuotaOverrides `yaml:"overrides"`
}

// QuotaOverrides replace a scope's default for one key. Anonymous hosts are not named, so
// their buckets have no overrides; Concurrency is keyed "tenant/server".
type QuotaOverrides struct {
	Tenant      map[string]QuotaLimit `yaml:"tenant"`
	Principal   map[string]QuotaLimit `yaml:"principal"`
	Server      map[string]QuotaLimit `yaml:"server"`
	Tool        map[string]QuotaLimit `yaml:"tool"`
	Concurrency map[string]int        `yaml:"concurrency"`
}

// ReadQuotaFile reads the quotas section of a gatehouse YAML file; nil when it has none.
func ReadQuotaFile(path string) (*QuotaConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("quota config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxQuotaFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("quota config %s: %w", path, err)
	}
	c, err := ParseQuotas(data)
	if err != nil {
		return nil, fmt.Errorf("quota config %s: %w", path, err)
	}
	return c, nil
}

// ParseQuotas reads the `quotas:` section of a gatehouse YAML document, strictly (unknown
// keys refused) and validated. The other top-level sections are the registry's, which reads
// them as strictly. nil when the document has no quotas section.
func ParseQuotas(data []byte) (*QuotaConfig, error) {
	if len(data) > maxQuotaFileBytes {
		return nil, fmt.Errorf("%d bytes, more than the limit of %d", len(data), maxQuotaFileBytes)
	}
	var top struct {
		Quotas yaml.Node `yaml:"quotas"`
	}
	if err := yaml.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if top.Quotas.Kind == 0 {
		return nil, nil
	}
	// Decoded again, strictly: yaml.Node.Decode has no KnownFields.
	section, err := yaml.Marshal(&top.Quotas)
	if err != nil {
		return nil, fmt.Errorf("quotas: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(section))
	dec.KnownFields(true)
	var c QuotaConfig
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("quotas: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("quotas: %w", err)
	}
	return &c, nil
}

// Validate checks every number and every override key.
func (c *QuotaConfig) Validate() error {
	for _, l := range []struct {
		name string
		l    *QuotaLimit
	}{{"tenant", c.Tenant}, {"principal", c.Principal}, {"server", c.Server}, {"tool", c.Tool}, {"anonymous", c.Anonymous}} {
		if l.l != nil {
			if err := l.l.validate(); err != nil {
				return fmt.Errorf("%s: %w", l.name, err)
			}
		}
	}
	if err := validConcurrency(c.Concurrency); err != nil {
		return fmt.Errorf("concurrency: %w", err)
	}
	if c.PermitTTL != "" {
		d, err := time.ParseDuration(c.PermitTTL)
		if err != nil || d < minPermitTTL || d > maxPermitTTL {
			return fmt.Errorf("permit_ttl: %q is not a duration between %s and %s", c.PermitTTL, minPermitTTL, maxPermitTTL)
		}
	}
	o := c.Overrides
	if o == nil {
		return nil
	}
	for _, m := range []struct {
		name string
		m    map[string]QuotaLimit
	}{{"tenant", o.Tenant}, {"principal", o.Principal}, {"server", o.Server}, {"tool", o.Tool}} {
		if len(m.m) > MaxQuotaOverrides {
			return fmt.Errorf("overrides.%s: %d entries, more than the limit of %d", m.name, len(m.m), MaxQuotaOverrides)
		}
		for k, l := range m.m {
			if err := validKey(k, m.name == "tool"); err != nil {
				return fmt.Errorf("overrides.%s: %w", m.name, err)
			}
			if err := l.validate(); err != nil {
				return fmt.Errorf("overrides.%s[%q]: %w", m.name, k, err)
			}
		}
	}
	if len(o.Concurrency) > MaxQuotaOverrides {
		return fmt.Errorf("overrides.concurrency: %d entries, more than the limit of %d", len(o.Concurrency), MaxQuotaOverrides)
	}
	for k, n := range o.Concurrency {
		if err := validKey(k, true); err != nil {
			return fmt.Errorf("overrides.concurrency: %w", err)
		}
		if err := validConcurrency(n); err != nil {
			return fmt.Errorf("overrides.concurrency[%q]: %w", k, err)
		}
	}
	return nil
}

func (l QuotaLimit) validate() error {
	switch {
	case math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) || l.Rate < 0 || l.Rate > MaxQuotaRate:
		return fmt.Errorf("rate %v is not a number of calls a second between 0 and %g", l.Rate, float64(MaxQuotaRate))
	case l.Burst < 0 || l.Burst > MaxQuotaBurst:
		return fmt.Errorf("burst %d is not between 0 and %d", l.Burst, MaxQuotaBurst)
	case l.Rate == 0 && l.Burst != 0:
		return fmt.Errorf("burst %d without a rate: a zero rate is no limit", l.Burst)
	}
	return nil
}

func validConcurrency(n int) error {
	if n < 0 || n > MaxConcurrency {
		return fmt.Errorf("%d is not between 0 (no limit) and %d", n, MaxConcurrency)
	}
	return nil
}

// validKey checks an override's key: not empty, bounded, and "a/b" where pair (server/tool,
// tenant/server).
func validKey(k string, pair bool) error {
	switch {
	case k == "" || len(k) > maxServerBytes+maxNameBytes:
		return fmt.Errorf("key %.40q is empty or longer than %d bytes", k, maxServerBytes+maxNameBytes)
	case pair:
		a, b, ok := strings.Cut(k, "/")
		if !ok || a == "" || b == "" {
			return fmt.Errorf("key %q is not of the form a/b", k)
		}
	}
	return nil
}

// resolvedQuotas is a QuotaConfig made ready for the buckets.
type resolvedQuotas struct {
	defaults  [nScopes]limit
	overrides [nScopes]map[string]limit
	conc      int
	concOver  map[string]int
	permitTTL time.Duration
}

func (r *resolvedQuotas) limits() bool {
	if r.conc > 0 || len(r.concOver) > 0 {
		return true
	}
	for i := range r.defaults {
		if r.defaults[i].rate > 0 || len(r.overrides[i]) > 0 {
			return true
		}
	}
	return false
}

// resolveQuotas combines the file's section (c, nil without one) with the flags'
// tenant default (--quota-rate, --quota-burst). The flags are the tenant default when the
// file sets none; a file that does is refused alongside them, so that the tenant's limit is
// set in one place.
func resolveQuotas(c *QuotaConfig, flagRate float64, flagBurst int) (*resolvedQuotas, error) {
	flags := QuotaLimit{Rate: flagRate, Burst: flagBurst}
	if flagRate != 0 || flagBurst != 0 {
		if err := flags.validate(); err != nil {
			return nil, fmt.Errorf("--quota-rate/--quota-burst: %w", err)
		}
	}
	if c == nil {
		c = &QuotaConfig{}
	} else if err := c.Validate(); err != nil {
		return nil, err
	}
	if flagRate != 0 && c.Tenant != nil {
		return nil, errors.New("--quota-rate and the quota file's quotas.tenant both set the tenant quota: set it in one place")
	}
	tenant := c.Tenant
	if tenant == nil && flagRate != 0 {
		tenant = &flags
	}
	r := &resolvedQuotas{conc: c.Concurrency, permitTTL: DefaultPermitTTL}
	if c.PermitTTL != "" {
		r.permitTTL, _ = time.ParseDuration(c.PermitTTL) // validated
	}
	for sc, l := range [nScopes]*QuotaLimit{tenant, c.Principal, c.Server, c.Tool, c.Anonymous} {
		if l != nil && l.Rate > 0 {
			r.defaults[sc] = limit{rate: l.Rate, burst: burstOf(l.Rate, l.Burst)}
		}
	}
	if o := c.Overrides; o != nil {
		for sc, m := range [nScopes]map[string]QuotaLimit{o.Tenant, o.Principal, o.Server, o.Tool, nil} {
			if len(m) == 0 {
				continue
			}
			r.overrides[sc] = make(map[string]limit, len(m))
			for k, l := range m {
				r.overrides[sc][k] = limit{rate: l.Rate, burst: burstOf(l.Rate, l.Burst)}
			}
		}
		r.concOver = o.Concurrency
	}
	return r, nil
}
