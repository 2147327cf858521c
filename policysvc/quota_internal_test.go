package policysvc

import (
	"strconv"
	"testing"
	"time"
)

func TestAddressKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"192.0.2.7":            "192.0.2.7",
		"2001:db8:1:2:aaaa::1": "2001:db8:1:2::/64",
		"2001:db8:1:2:bbbb::9": "2001:db8:1:2::/64",
		"::ffff:192.0.2.7":     "::ffff:192.0.2.7",
		"not an address":       "not an address",
		"":                     "",
	} {
		if got := addressKey(in); got != want {
			t.Errorf("addressKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFullScopeSweptOncePerSecond: a scope full of keys nobody refilled refuses new keys
// without sweeping the map on every request.
func TestFullScopeSweptOncePerSecond(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	q := &quotas{}
	l := limit{rate: 0.001, burst: 1}
	q.buckets[scopeTool] = make(map[string]*bucket, maxBuckets)
	for i := range maxBuckets {
		q.buckets[scopeTool][strconv.Itoa(i)] = &bucket{limit: l, tokens: 0, last: now}
	}
	if b := q.bucket(want{scope: scopeTool, key: "new-1", limit: l}, now); b != nil {
		t.Fatal("a full scope made a bucket")
	}
	swept := q.swept[scopeTool]
	if b := q.bucket(want{scope: scopeTool, key: "new-2", limit: l}, now.Add(time.Millisecond)); b != nil || q.swept[scopeTool] != swept {
		t.Fatal("a full scope was swept twice within a second")
	}
}
